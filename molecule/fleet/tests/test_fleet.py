"""The fleet scenario's outcome, as a spec: three nodes converged by playbooks/site.yml.

Commands run in the node containers with `docker exec` (testinfra's docker backend for the
spec-style checks); Celery clients run on the nodes with the app's own env file, so every
task below crosses the real TLS + ACL + Sentinel broker.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import testinfra
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NODES = ["cf-fleet-node1", "cf-fleet-node2", "cf-fleet-node3"]
ADDRESS = {f"cf-fleet-node{i}": f"10.231.74.1{i}" for i in (1, 2, 3)}
# node1 runs every kind of unit (worker, beat, Flower); node3 is the other beat host.
BEAT_NODE = FLOWER_NODE = "cf-fleet-node1"
BEAT_NODES = ["cf-fleet-node1", "cf-fleet-node3"]
FLOWER_URL = f"https://{ADDRESS[FLOWER_NODE]}:5555"
FLOWER_AUTH = "admin:mol-Flower-5d7e9f1a3b5c7d92"
WORKER_UNIT = "celery-worker@default.service"
ENV_FILE = "/etc/celery-fleet/celery.env"
WITH_ENV = f"/opt/celery-fleet/bin/celery-with-env {ENV_FILE} --"
REPO = Path(__file__).resolve().parents[3]

# Python run on a node with the app importable and the deployment's settings.
CLIENT = """
import json, sys, time
from demo_app.app import app
from demo_app.tasks import sleep_then, where
from celery import group
from celery.result import AsyncResult
"""


def sh(
    node: str, command: str, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", "exec", node, "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{node}: {command!r} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def client(node: str, code: str, timeout: float = 180) -> Any:
    """Run CLIENT + code on node; the code prints one JSON line last."""
    result = subprocess.run(
        ["docker", "exec", "-i", node, "bash", "-c", f"{WITH_ENV} python3 -"],
        input=CLIENT + code,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{node}: client failed\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def find_active(node: str, task_id: str, timeout: float = 60) -> tuple[str, int]:
    """(worker node name, pool process pid) of a task once a worker runs it."""
    found = client(
        node,
        f"""
deadline = time.monotonic() + {timeout}
while time.monotonic() < deadline:
    for worker, tasks in (app.control.inspect(timeout=2).active() or {{}}).items():
        for t in tasks:
            if t["id"] == "{task_id}":
                print(json.dumps([worker, t["worker_pid"]])); sys.exit(0)
    time.sleep(0.5)
print(json.dumps(None))
""",
    )
    assert found, f"task {task_id} never became active on any worker"
    return found[0], int(found[1])


def host(node: str) -> testinfra.host.Host:
    return testinfra.get_host(f"docker://{node}")


def wait_workers(expected: int = 3, timeout: float = 120) -> None:
    got = client(
        NODES[0],
        f"""
deadline = time.monotonic() + {timeout}
names = []
while time.monotonic() < deadline:
    names = sorted(app.control.inspect(timeout=2).ping() or {{}})
    if len(names) >= {expected}:
        break
    time.sleep(2)
print(json.dumps(names))
""",
    )
    assert len(got) >= expected, f"only {got} answer a ping"


# --- units and files: the spec of what a node runs ---------------------------------------


@pytest.mark.parametrize("node", NODES)
def test_worker_unit_runs_in_the_foreground_and_stops_warm(node: str) -> None:
    service = host(node).service(WORKER_UNIT)
    assert service.is_running
    assert service.is_enabled
    props = service.systemd_properties
    assert props["Type"] == "exec"
    assert props["KillMode"] == "mixed"
    assert props["KillSignal"] == "15"
    assert props["Restart"] == "on-failure"
    # Above the pool's hard time limit (90 s): a running task can finish on stop.
    assert props["TimeoutStopUSec"] == "2min"  # time_limit 90 s + 30 s grace
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["PrivateTmp"] == "yes"
    assert props["User"] == "celery"
    # %%h in the unit reaches Celery as %h: the node name carries the host's name.
    assert "default@%h" in props["ExecStart"]
    assert "--pidfile" not in props["ExecStart"]
    assert "multi" not in props["ExecStart"].split()


@pytest.mark.parametrize(
    "unit", [WORKER_UNIT, "celery-beat.service", "flower.service"], ids=["worker", "beat", "flower"]
)
def test_units_are_sandboxed_to_an_exposure_of_at_most_2(unit: str) -> None:
    """`systemd-analyze security` on the running unit. PrivateUsers= is off in this scenario
    (systemd cannot set up a user namespace in these containers: 217/USER); it would take
    another 0.2 off. Everything else in systemd/sandbox.conf.j2 is on."""
    out = sh(BEAT_NODE, f"systemd-analyze security --no-pager {unit}").stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out[-2000:]
    assert float(match.group(1)) <= 2.0, out


@pytest.mark.parametrize("node", NODES)
def test_env_file_and_key_are_private(node: str) -> None:
    env = host(node).file(ENV_FILE)
    # Readable by the service group, writable by root only: the service user cannot change
    # what root-started helpers read.
    assert env.mode == 0o640
    assert env.user == "root"
    assert env.group == "celery"
    flower_env = host(node).file("/etc/flower/celery.env")
    if flower_env.exists:
        assert flower_env.mode == 0o640
        assert (flower_env.user, flower_env.group) == ("root", "flower")
    key = host(node).file("/etc/celery-fleet/tls/client.key")
    assert key.mode == 0o600
    assert key.user == "celery"


def test_each_worker_host_has_its_own_client_identity() -> None:
    """Role celery issues each host its own clientAuth certificate and key (CN celery-HOST):
    a key taken from one host is that host's alone. The workers on every node run with it
    (the fleet tests below), so Redis accepts each."""
    public_keys = set()
    for node in NODES:
        pem = host(node).file("/etc/celery-fleet/tls/client.pem").content_string
        cert = x509.load_pem_x509_certificate(pem.encode())
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert [n.value for n in names] == [f"celery-{node}"], node
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH], node
        public_keys.add(
            cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    assert len(public_keys) == len(NODES)


def beat_sends(node: str, since: float, until: float | None = None) -> list[float]:
    """When ``node``'s beat sent the demo app's periodic task (journal, Unix seconds)."""
    window = f"--since @{int(since)}" + (f" --until @{int(until) + 1}" if until else "")
    journal = sh(
        node, f"journalctl -u celery-beat.service {window} -o short-unix --no-pager"
    ).stdout
    return [
        float(line.split(" ", 1)[0])
        for line in journal.splitlines()
        if "Sending due task heartbeat (demo_app.tasks.heartbeat)" in line
        and since <= float(line.split(" ", 1)[0]) <= (until or float("inf"))
    ]


def lock_holder() -> str | None:
    """The host whose beat holds the beat lock (its value: host:pid:random), read from
    node2 (never a beat host) through the app's own settings: on the primary, via Sentinel."""
    holder = client(
        "cf-fleet-node2",
        """
from celery_fleet import beatlock
with app.connection_for_write() as conn:
    print(json.dumps(beatlock.holder(conn.default_channel.client.get(beatlock.LOCK_KEY))))
""",
    )
    return str(holder) if holder else None


def test_beat_runs_on_every_beat_host_and_exactly_one_holds_the_lock_and_sends() -> None:
    """celery_beat_lock in this scenario: beat runs on both hosts of celery_beat, one holds
    celery-fleet:beat-lock and sends, the other stands by and sends nothing."""
    running = [n for n in NODES if host(n).service("celery-beat.service").is_running]
    assert running == BEAT_NODES
    for node in BEAT_NODES:
        props = host(node).service("celery-beat.service").systemd_properties
        assert props["StateDirectory"] == "celery-beat"
        # The persistent schedule (shelve adds its own suffix, e.g. .db).
        assert host(node).run("ls /var/lib/celery-beat/celerybeat-schedule*").rc == 0
        assert host(node).file(ENV_FILE).contains("^CELERY_FLEET_BEAT_LOCK=.*true")
    active = lock_holder()
    assert active in BEAT_NODES, f"the beat lock is held by {active!r}"
    # Three periods (5 s): the holder sends, the standby sends nothing and says it stands by.
    since = int(sh(NODES[0], "date +%s").stdout)
    time.sleep(16)
    assert lock_holder() == active, "the lock changed hands on a quiet fleet"
    for node in BEAT_NODES:
        sends = beat_sends(node, since, since + 15)
        if node == active:
            assert 2 <= len(sends) <= 4, f"{node} holds the lock and sent {len(sends)} in 15 s"
        else:
            assert sends == [], f"{node} stands by but sent at {sends}"
            journal = sh(node, "journalctl -u celery-beat.service -o cat --no-pager").stdout
            assert "beat lock: standby" in journal, journal[-2000:]


# --- tasks across the fleet ----------------------------------------------------------------


def test_tasks_sent_from_one_node_run_on_the_others_and_results_come_back() -> None:
    wait_workers()
    ran_on = client(
        "cf-fleet-node2",
        """
hosts = group(where.s() for _ in range(24)).apply_async().get(timeout=60)
print(json.dumps(hosts))
""",
    )
    assert len(ran_on) == 24
    assert set(ran_on) - {"cf-fleet-node2"}, f"every task ran on the sender: {ran_on}"
    assert len(set(ran_on)) >= 2


def test_kill_9_of_a_worker_child_mid_task_runs_the_task_again() -> None:
    task_id = client(NODES[0], "print(json.dumps(sleep_then.delay(20, 4242).id))")
    worker, pid = find_active(NODES[0], task_id)
    node = worker.split("@", 1)[1]
    sh(node, f"kill -9 {pid}")
    # acks late + reject on worker lost: the message goes back to the queue and runs again.
    wait = f'print(json.dumps(AsyncResult("{task_id}").get(timeout=120)))'
    value = client(NODES[0], wait, timeout=150)
    assert value == 4242
    # The kill is in the journal, and the message was delivered (received) a second time.
    journal = f"journalctl -u {WORKER_UNIT} --no-pager -o cat"
    log = sh(node, f"{journal} | grep -E 'pid:{pid} exited|WorkerLostError'").stdout
    assert "signal 9" in log or "WorkerLostError" in log, log
    received = sum(
        int(sh(n, f"{journal} | grep -c '{task_id}] received' || true").stdout) for n in NODES
    )
    assert received >= 2, f"task {task_id} was received {received} time(s)"


def test_systemctl_stop_lets_the_running_task_finish() -> None:
    wait_workers()
    task_id = client(NODES[0], "print(json.dumps(sleep_then.delay(20, 777).id))")
    worker, _ = find_active(NODES[0], task_id)
    node = worker.split("@", 1)[1]
    started = time.monotonic()
    sh(node, f"systemctl stop {WORKER_UNIT}", timeout=150)
    stopped_after = time.monotonic() - started
    try:
        code = f'r = AsyncResult("{task_id}"); print(json.dumps([r.state, r.result]))'
        state = client(NODES[0], code)
        assert state == ["SUCCESS", 777], f"after a warm stop: {state}"
        assert stopped_after > 3, f"stop returned in {stopped_after:.1f} s: task cut short"
        journal = f"journalctl -u {WORKER_UNIT} --no-pager -o cat"
        log = sh(node, f"{journal} | grep -F '{task_id}'").stdout
        assert "succeeded" in log
    finally:
        sh(node, f"systemctl start {WORKER_UNIT}")
    wait_workers()


def test_periodic_task_fires_once_per_period() -> None:
    # DEMO_HEARTBEAT_SECONDS=5 in the scenario: 30 s hold 6 periods.
    since = int(sh(NODES[0], "date +%s").stdout)
    time.sleep(31)
    until = since + 30
    count = 0
    for node in NODES:
        out = sh(
            node,
            f"journalctl -u {WORKER_UNIT} --since @{since} --until @{until} --no-pager -o cat"
            " | grep -c 'demo_app.tasks.heartbeat.*succeeded' || true",
        ).stdout
        count += int(out.strip() or 0)
    # Margin for a loaded CI machine; no beat gives 0, two beats give ~12.
    assert 4 <= count <= 8, f"{count} heartbeats in 30 s with a 5 s period (one beat: 6)"


# --- Flower --------------------------------------------------------------------------------


def _flower(path: str, auth: str | None, node: str = "cf-fleet-node2") -> int:
    headers = f"'Authorization': 'Basic {base64.b64encode(auth.encode()).decode()}'" if auth else ""
    code = f"""
import ssl, urllib.request, urllib.error
ctx = ssl.create_default_context(cafile="/etc/celery-fleet/tls/ca.pem")
req = urllib.request.Request("{FLOWER_URL}{path}", headers={{{headers}}})
try:
    print(urllib.request.urlopen(req, context=ctx, timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""
    return int(sh(node, f"python3 - <<'EOF'\n{code}\nEOF").stdout.strip())


def test_flower_answers_only_with_credentials() -> None:
    assert _flower("/", None) == 401
    assert _flower("/api/workers", None) == 401
    assert _flower("/api/workers", "admin:wrong-password-123456") == 401
    assert _flower("/api/workers", FLOWER_AUTH) == 200
    # Unauthenticated by design in Flower: reachable from the fleet's hosts (allowed sources).
    assert _flower("/metrics", None) == 200
    assert _flower("/healthcheck", None) == 200


def test_flower_port_is_closed_to_sources_outside_the_allowed_list() -> None:
    # This controller (the docker bridge's gateway) is not in flower_allowed_sources:
    # the firewall answers with a TCP reset.
    with pytest.raises(OSError, match=r"[Rr]efused"):
        socket.create_connection((ADDRESS[FLOWER_NODE], 5555), timeout=5).close()
    # ... while Flower listens, and the fleet reaches it (previous test).
    assert host(FLOWER_NODE).socket(f"tcp://{ADDRESS[FLOWER_NODE]}:5555").is_listening


def test_flower_sees_the_workers_through_its_own_acl_user() -> None:
    code = f"""
import base64, json, ssl, time, urllib.request
ctx = ssl.create_default_context(cafile="/etc/celery-fleet/tls/ca.pem")
seen = set()
deadline = time.monotonic() + 60
while time.monotonic() < deadline and len(seen) < {len(NODES)}:
    req = urllib.request.Request("{FLOWER_URL}/api/workers?refresh=1",
        headers={{"Authorization": "Basic {base64.b64encode(FLOWER_AUTH.encode()).decode()}"}})
    seen |= set(json.load(urllib.request.urlopen(req, context=ctx, timeout=30)))
    time.sleep(2)
print(json.dumps(sorted(seen)))
"""
    workers = json.loads(sh("cf-fleet-node2", f"python3 - <<'EOF'\n{code}\nEOF").stdout)
    assert {f"default@{n}" for n in NODES} <= set(workers)


FLOWER_REDIS = ("flower", "mol-FlowerAcl-8d2f4a6c1e3b5d79")


def as_flower(command: str, cert: str = "/etc/celery-fleet/tls/client") -> str:
    """One redis-cli command on the Flower node as Flower's ACL user; its answer."""
    user, password = FLOWER_REDIS
    ca = "/etc/celery-fleet/tls/ca.pem"
    result = sh(
        FLOWER_NODE,
        f"REDISCLI_AUTH={password} timeout 20 redis-cli --tls --cacert {ca} --cert {cert}.pem "
        f"--key {cert}.key -h {ADDRESS[FLOWER_NODE]} -p 6379 --user {user} {command}",
        check=False,
    )
    return result.stdout + result.stderr


def test_flowers_https_certificate_cannot_log_in_to_redis() -> None:
    """Flower's HTTPS certificate is serverAuth only: Redis refuses it as a client
    certificate, so a stolen Flower key cannot talk to the broker (nor pose as a replica)."""
    assert "PONG" in as_flower("PING")  # the control: a client certificate works
    # The files are there and readable: the refusal below is the TLS handshake's.
    sh(FLOWER_NODE, "test -r /etc/flower/tls/server.pem && test -r /etc/flower/tls/server.key")
    refused = as_flower("PING", cert="/etc/flower/tls/server")
    assert "PONG" not in refused, refused
    assert not re.search(r"NOPERM|WRONGPASS", refused), refused
    assert re.search(r"SSL|TLS|I/O error|Connection reset|certificate", refused), refused


@pytest.mark.parametrize(
    "command",
    [
        "KEYS '*'",
        "CLIENT KILL ID 999999",
        "CLIENT PAUSE 10",
        "DEL _kombu.binding.default",
        "SREM _kombu.binding.default x",
        "PUBLISH __sentinel__:hello forged",
        "SUBSCRIBE __sentinel__:hello",
        "CONFIG GET '*'",
        "FLUSHALL",
    ],
)
def test_the_flower_user_cannot_freeze_the_broker_or_drop_routes(command: str) -> None:
    assert "NOPERM" in as_flower(command)


def test_the_flower_user_still_reads_queue_lengths() -> None:
    assert as_flower("LLEN default").strip().isdigit()


def test_flower_recovers_from_a_corrupt_state_db() -> None:
    node = FLOWER_NODE
    sh(node, "systemctl stop flower.service")
    files = sh(node, "ls /var/lib/flower/").stdout.split()
    assert any(f.startswith("flower.db") for f in files), files
    sh(node, "for f in /var/lib/flower/flower.db*; do head -c 4096 /dev/urandom > $f; done")
    sh(node, "systemctl start flower.service")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _flower("/healthcheck", None) == 200:
                break
        except (AssertionError, ValueError):
            pass
        time.sleep(2)
    else:
        pytest.fail("Flower did not come back after its state db was corrupted")
    service = host(node).service("flower.service")
    assert service.is_running
    assert service.systemd_properties["NRestarts"] == "0"
    assert "corrupt" in sh(node, "ls /var/lib/flower/").stdout


# --- the doctor and make verify ------------------------------------------------------------


def _doctor(node: str = BEAT_NODE) -> subprocess.CompletedProcess[str]:
    sh(node, f"umask 077; echo '{FLOWER_AUTH}' > /root/flower.auth")
    workers = ",".join(f"default@{n}" for n in NODES)
    return sh(
        node,
        f"/opt/celery-fleet/venv/bin/celery-fleet doctor --env-file {ENV_FILE}"
        f" --expect-workers {workers}"
        f" --flower-url {FLOWER_URL} --flower-auth-file /root/flower.auth",
        check=False,
    )


# Waits for the workers (120 s), then a whole verify playbook: past pytest's default 300 s on
# a loaded cold machine.
@pytest.mark.timeout(900)
def test_doctor_is_healthy_and_make_verify_passes() -> None:
    wait_workers()
    result = _doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    inventory = str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)
    verify = subprocess.run(
        [REPO / ".venv/bin/ansible-playbook", "-i", inventory, REPO / "playbooks/verify.yml"],
        capture_output=True,
        text=True,
        timeout=780,
        check=False,
        cwd=REPO,
    )
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]


def test_doctor_reports_a_stopped_worker() -> None:
    sh("cf-fleet-node3", f"systemctl stop {WORKER_UNIT}")
    try:
        result = _doctor()
        assert result.returncode == 1, result.stdout + result.stderr
        assert re.search(r"default@cf-fleet-node3", result.stdout), result.stdout
    finally:
        sh("cf-fleet-node3", f"systemctl start {WORKER_UNIT}")


@pytest.mark.parametrize("node", NODES)
def test_the_doctor_timer_writes_its_metrics_for_node_exporter(node: str) -> None:
    """Role celery's celery-fleet-doctor.timer (on by default): one run, started by hand, writes
    the verdicts and the certificates' expiry in Prometheus' text format, as the celery user."""
    metrics = "/var/lib/prometheus/node-exporter/celery-fleet-doctor.prom"
    assert "celery-fleet-doctor.timer" in sh(node, "systemctl list-timers --all --no-pager").stdout
    before = time.time()
    sh(node, "systemctl start celery-fleet-doctor.service")  # oneshot: returns when done
    text = sh(node, f"cat {metrics}").stdout
    assert 'celery_fleet_doctor_check_ok{check="doctor"} 1' in text, text
    stamp = re.search(r"^celery_fleet_doctor_last_run_timestamp_seconds (\S+)$", text, re.M)
    assert stamp, text
    assert float(stamp.group(1)) >= before - 5, text
    client = re.escape('{path="/etc/celery-fleet/tls/client.pem"}')
    expiry = re.search(rf"^celery_fleet_certificate_expiry_seconds{client} (\S+)$", text, re.M)
    assert expiry, text
    assert float(expiry.group(1)) > time.time(), text
    assert sh(node, f"stat -c %U:%a {metrics}").stdout.strip() == "celery:644"
    assert "mol-" not in text  # no password of the scenario


# --- preflight: beat on exactly one host ---------------------------------------------------


@pytest.mark.parametrize("beat_hosts", [[], ["a", "b"]], ids=["no-beat", "two-beats"])
def test_preflight_refuses_anything_but_one_beat_host(
    tmp_path: Path, beat_hosts: list[str]
) -> None:
    beats = "{" + ", ".join(f"{h}: {{}}" for h in beat_hosts) + "}"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n"
        f"  vars: {{ansible_connection: local, ansible_python_interpreter: {sys.executable}}}\n"
        "  children:\n"
        "    celery_workers: {hosts: {a: {}, b: {}}}\n"
        f"    celery_beat: {{hosts: {beats}}}\n"
    )
    run = subprocess.run(
        [REPO / ".venv/bin/ansible-playbook", "-i", inventory, REPO / "playbooks/celery.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
    )
    assert run.returncode != 0
    assert f"has {len(beat_hosts)} host(s)" in run.stdout, run.stdout[-2000:]
    assert "Put exactly one host in 'celery_beat'" in run.stdout
    # Nothing ran after the preflight.
    assert "install |" not in run.stdout
