"""Scaling the workers in and out under a steady producer (docs/operations.md, "Scaling the
workers"): `make retire-workers` drains a worker host and removes its units and secrets,
`make add-workers` converges it (and the monitoring host) back; every task published before,
during and after runs, Flower forgets the retired worker, no worker logs an authentication
or TLS error, and the doctor is healthy with the host gone and with it back.

Runs after test_rolling.py (its producer script is reused) and before test_secrets.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import fleet
import pytest
from test_fleet import (
    ENV_FILE,
    FLOWER_AUTH,
    FLOWER_URL,
    NODES,
    REPO,
    WORKER_UNIT,
    client,
    sh,
    wait_workers,
)
from test_rolling import AUTH_OR_TLS_ERROR, start_producer, stop_producer

# A plain worker host: node1 runs beat and Flower, node3 the monitoring.
RETIRED = "cf-fleet-node2"
STAYING = [n for n in NODES if n != RETIRED]
FLOWER_AUTH_FILE = "/root/flower.auth"
DOCTOR_METRICS = "/var/lib/prometheus/node-exporter"


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """A make target of the project, against molecule's inventory and connection."""
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": os.environ.get("ANSIBLE_CONFIG", str(ephemeral / "ansible.cfg")),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }
    start = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", *args, f"INVENTORY={ephemeral / 'inventory'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=fleet.CONVERGE_TIMEOUT,
        check=False,
    )
    print(f"make {' '.join(args)}: {time.monotonic() - start:.0f} s")
    return result


def pinged() -> list[str]:
    """The workers that answer a ping (asked from node1)."""
    return list(
        client(NODES[0], "print(json.dumps(sorted(app.control.inspect(timeout=3).ping() or {})))")
    )


def flower_workers_online() -> dict[str, float]:
    """flower_worker_online from Flower's /metrics (read on node1, Flower's host)."""
    code = f"""
import base64, ssl, urllib.request
auth = base64.b64encode(open("{FLOWER_AUTH_FILE}").read().strip().encode()).decode()
req = urllib.request.Request("{FLOWER_URL}/metrics", headers={{"Authorization": "Basic " + auth}})
ctx = ssl.create_default_context(cafile="/etc/celery-fleet/tls/ca.pem")
print(urllib.request.urlopen(req, context=ctx, timeout=10).read().decode())
"""
    out = sh(NODES[0], f"python3 - <<'EOF'\n{code}\nEOF").stdout
    online = {}
    for line in out.splitlines():
        if line.startswith("flower_worker_online{"):
            labels, value = line.rsplit(" ", 1)
            online[labels.split('worker="', 1)[1].split('"', 1)[0]] = float(value)
    return online


def doctor(workers: list[str]) -> subprocess.CompletedProcess[str]:
    names = ",".join(f"default@{n}" for n in workers)
    return sh(
        NODES[0],
        f"/opt/celery-fleet/venv/bin/celery-fleet doctor --env-file {ENV_FILE}"
        f" --expect-workers {names} --flower-url {FLOWER_URL}"
        f" --flower-auth-file {FLOWER_AUTH_FILE}",
        check=False,
    )


def test_retiring_needs_named_worker_hosts() -> None:
    unnamed = make("retire-workers")
    assert unnamed.returncode == 2, unnamed.stdout + unnamed.stderr
    assert "set HOSTS=" in unnamed.stderr
    foreign = make("retire-workers", "HOSTS=cf-fleet-nowhere")
    assert foreign.returncode != 0, foreign.stdout
    assert "each of group celery_workers" in foreign.stdout, foreign.stdout[-3000:]


def test_the_beat_host_is_not_retired() -> None:
    refused = make("retire-workers", f"HOSTS={NODES[0]}")
    assert refused.returncode != 0, refused.stdout[-3000:]
    assert "it runs beat" in refused.stdout, refused.stdout[-3000:]
    # Refused before anything changed: its worker still runs.
    assert sh(NODES[0], f"systemctl is-active {WORKER_UNIT}").stdout.strip() == "active"


def assert_retired(node: str) -> None:
    """No worker or doctor unit and no broker credential or client key left on ``node`` (nor
    its client certificate and key on the controller);
    Flower (restarted) forgot its worker; the doctor is healthy without it."""
    units = sh(node, "ls /etc/systemd/system | grep -E '^celery-(worker@|fleet-doctor)' || true")
    assert units.stdout.strip() == "", units.stdout
    for path in (ENV_FILE, "/etc/celery-fleet/tls", f"{DOCTOR_METRICS}/celery-fleet-doctor.prom"):
        assert sh(node, f"test ! -e {path}", check=False).returncode == 0, f"{node}: {path} left"
    # Its own client identity is gone from the controller too; the others' stay.
    assert not any(Path(p).exists() for p in fleet.client_cert(f"celery-{node}"))
    for other in STAYING:
        assert all(Path(p).exists() for p in fleet.client_cert(f"celery-{other}")), other
    # Its gauges start empty on the restart; the workers that stay announce themselves again
    # within a heartbeat (2 s by default; 60 s allowed).
    online = fleet.wait_for(
        lambda: (lambda o: o if all(o.get(f"default@{n}") == 1 for n in STAYING) else None)(
            flower_workers_online()
        ),
        60,
        "Flower to see the remaining workers online again",
    )
    assert f"default@{node}" not in online, online
    healthy_without(node)


def healthy_without(node: str) -> None:
    """The doctor expecting the other workers is healthy (its ping may miss a worker busy
    under the producer on a loaded machine: a few tries, 90 s)."""
    last: list[subprocess.CompletedProcess[str]] = []

    def check() -> bool:
        last[:] = [doctor([n for n in NODES if n != node])]
        return last[0].returncode == 0

    try:
        fleet.wait_for(check, 90, f"the doctor to be healthy without {node}", interval=5)
    except AssertionError:
        pytest.fail(f"doctor without {node}:\n{last[0].stdout}\n{last[0].stderr}")


# Two playbooks under a producer (each below fleet.CONVERGE_TIMEOUT) plus draining.
@pytest.mark.timeout(2 * fleet.CONVERGE_TEST_TIMEOUT + 300)
def test_a_worker_host_retires_and_comes_back_under_load_and_no_task_is_lost() -> None:
    wait_workers()
    since = int(sh(NODES[0], "date +%s").stdout) - 1
    sh(NODES[0], f"umask 077; echo '{FLOWER_AUTH}' > {FLOWER_AUTH_FILE}")
    producer = start_producer()
    try:
        time.sleep(5)  # tasks published before
        retired = make("retire-workers", f"HOSTS={RETIRED}")
        assert retired.returncode == 0, retired.stdout[-4000:] + retired.stderr[-2000:]
        # Ping with a 3 s deadline: a worker busy under the producer may miss one, so until
        # both that stay answer (60 s); the retired one must not be among them.
        staying = {f"default@{n}" for n in STAYING}
        gone = fleet.wait_for(
            lambda: (lambda p: p if staying <= set(p) else None)(pinged()),
            60,
            "the workers that stay to answer a ping",
        )
        assert f"default@{RETIRED}" not in gone, gone
        assert_retired(RETIRED)  # tasks keep coming meanwhile
    finally:
        # Back in any case: the tests after this one expect three workers.
        added = make("add-workers", f"HOSTS={RETIRED}")
        time.sleep(5)  # tasks published with the host back
        result = stop_producer(producer)
    assert added.returncode == 0, added.stdout[-4000:] + added.stderr[-2000:]
    print(f"scale in and out: {result['sent']} tasks published, {len(result['lost'])} lost")
    assert result["sent"] > 100, result
    assert result["lost"] == [], result["lost"][:20]

    # The retired host drained: systemd stopped its worker, no kill was needed.
    journal = sh(RETIRED, f"journalctl -u {WORKER_UNIT} --since @{since} --no-pager").stdout
    assert "Stopping " in journal, journal[-3000:]
    assert "SIGKILL" not in journal, journal[-3000:]
    for node in NODES:
        log = sh(node, f"journalctl -u {WORKER_UNIT} --since @{since} --no-pager").stdout
        assert not AUTH_OR_TLS_ERROR.search(log), (node, AUTH_OR_TLS_ERROR.findall(log))
    wait_workers()
    healthy_without("")  # all three expected
