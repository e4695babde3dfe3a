"""The local stack end to end, through the targets a user types.

`make up` under a throw-away compose project (cf-e2e-*), bundle (tmp) and free /24, so it
runs next to a user's `make up` and other tests. Then: the containers are hardened and only
Flower is published, no secret shows in `docker compose config` or `docker inspect`, the
smoke tasks come back, beat's heartbeat runs, Flower needs its password, `celery-fleet
doctor` finds nothing, `make up MONITORING=1` adds Prometheus, Alertmanager and the Redis
exporter and Prometheus sees every target up, stopping the Redis primary loses no task, and
`make down` leaves no container, network or volume. The tests run in file order and share one stack.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import os
import random
import re
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

LOAD_TASKS = 200


def run(cmd: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, **kw
    )


def free_prefix() -> str:
    """First three octets of a /24 that no docker network overlaps."""
    ids = run(["docker", "network", "ls", "-q"]).stdout.split()
    fmt = "{{range .IPAM.Config}}{{.Subnet}} {{end}}"
    used = [
        ipaddress.ip_network(s)
        for s in run(["docker", "network", "inspect", "-f", fmt, *ids]).stdout.split()
        if "." in s
    ]
    thirds = list(range(100, 250))
    random.shuffle(thirds)
    for third in thirds:
        net = ipaddress.ip_network(f"10.213.{third}.0/24")
        if not any(net.overlaps(u) for u in used):
            return f"10.213.{third}"
    raise AssertionError("no free 10.213.x.0/24 for the test network")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    project: str
    bundle: Path
    prefix: str
    flower_port: int
    down: bool = False
    up_output: str = ""
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.settings = {
            "CF_PROJECT": self.project,
            "CF_BUNDLE_DIR": str(self.bundle),
            "CF_NET_PREFIX": self.prefix,
            "CF_FLOWER_PORT": str(self.flower_port),
            "CF_FLOWER_BIND": "127.0.0.1",
            "DEMO_HEARTBEAT_SECONDS": "3",
        }

    def make(self, *targets: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        # Command-line variables win over compose/.env, so a developer's settings stay out.
        args = [f"{k}={v}" for k, v in self.settings.items()]
        return run(["make", "--no-print-directory", *targets, *args], timeout=timeout)

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = ["docker", "compose", "--project-directory", "compose", "-f", "compose/compose.yaml"]
        return run([*cmd, "-p", self.project, *args], timeout=timeout, env=self.env())

    def compose_popen(self, *args: str) -> subprocess.Popen[str]:
        cmd = ["docker", "compose", "--project-directory", "compose", "-f", "compose/compose.yaml"]
        return subprocess.Popen(
            [*cmd, "-p", self.project, *args],
            cwd=ROOT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings}

    def containers(self, *extra: str) -> list[dict[str, Any]]:
        ids = run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"]
        ).stdout.split()
        if not ids:
            return []
        return list(json.loads(run(["docker", "inspect", *ids]).stdout))

    def service(self, container: dict[str, Any]) -> str:
        return str(container["Config"]["Labels"]["com.docker.compose.service"])

    def primary(self) -> str:
        """The service the Sentinels name primary (asked inside sentinel-2)."""
        out = self.compose("exec", "-T", "sentinel-2", "redis-start", "primary")
        assert out.returncode == 0, out.stderr
        address = out.stdout.split()[0]
        return {f"{self.prefix}.11": "redis-1", f"{self.prefix}.12": "redis-2"}[address]

    def restarts(self) -> dict[str, int]:
        """Docker's restart count of each worker container."""
        return {
            c["Name"]: int(c["RestartCount"])
            for c in self.containers()
            if self.service(c) == "worker"
            and c["Config"]["Labels"].get("com.docker.compose.oneoff") != "True"
        }

    def workers_diagnosis(self) -> str:
        """For a failing test's report: each worker's health log, its log without the task
        traffic, and where its processes are (py-spy, when installed, from the host)."""
        quiet = ("] received", "] succeeded in")
        parts = []
        for c in self.containers():
            if self.service(c) != "worker" or c["State"]["Status"] != "running":
                continue
            health = c["State"].get("Health", {})
            checks = [
                f"{h.get('Start', '')[11:19]} rc={h.get('ExitCode')} {h.get('Output', '')[-300:]}"
                for h in health.get("Log", [])
            ]
            logs = run(["docker", "logs", "--tail", "400", c["Id"]]).stdout
            kept = [ln for ln in logs.splitlines() if not any(q in ln for q in quiet)]
            parts.append(
                f"=== {c['Name']} health={health.get('Status')}\n"
                + "\n".join(checks)
                + "\n"
                + "\n".join(kept[-40:])
            )
            spy = Path(sys.executable).with_name("py-spy")
            pid = int(c["State"]["Pid"])
            if spy.exists() and pid:
                tree = run(["ps", "-o", "pid=", "--ppid", str(pid)]).stdout.split()
                for p in [str(pid), *tree]:
                    dump = run([str(spy), "dump", "--pid", p], timeout=30)
                    parts.append(f"--- py-spy {p}\n{dump.stdout[-3000:]}{dump.stderr[-300:]}")
        return "\n".join(parts)

    def passwords(self) -> list[str]:
        found = [p.read_text().split()[0] for p in (self.bundle / "secrets").iterdir()]
        assert len(found) >= 6, found
        return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if run(["docker", "info"]).returncode != 0:
        pytest.fail("the Docker engine does not answer; run `bash .ci/bootstrap.sh`")
    s = Stack(
        project=f"cf-e2e-{secrets.token_hex(3)}",
        bundle=tmp_path_factory.mktemp("bundle"),
        prefix=free_prefix(),
        flower_port=free_port(),
    )
    try:
        started = time.monotonic()
        up = s.make("up", timeout=900)
        s.up_output = up.stdout + up.stderr
        print(f"make up: {time.monotonic() - started:.0f} s")
        if up.returncode != 0:
            print(s.compose("ps", "-a").stdout, s.compose("logs", "--tail", "40").stdout)
            pytest.fail(f"make up failed:\n{s.up_output[-4000:]}")
        yield s
    finally:
        if not s.down:
            s.make("down", timeout=180)


def test_up_says_where_things_are_and_how_to_log_in(stack: Stack) -> None:
    assert f"https://127.0.0.1:{stack.flower_port}/" in stack.up_output
    assert f"{stack.bundle}/flower-credentials" in stack.up_output
    states = {
        stack.service(c): (c["State"]["Status"], c["State"].get("Health", {}).get("Status"))
        for c in stack.containers()
    }
    assert states.pop("bundle") == ("exited", None)
    assert set(states) == {"redis-1", "redis-2", "sentinel-1", "sentinel-2", "sentinel-3",
                           "worker", "flower", "beat"}  # fmt: skip
    assert all(state == ("running", "healthy") for state in states.values()), states
    workers = [c for c in stack.containers() if stack.service(c) == "worker"]
    assert len(workers) == 2


def test_containers_are_hardened(stack: Stack) -> None:
    for c in stack.containers():
        host, name = c["HostConfig"], stack.service(c)
        assert host["ReadonlyRootfs"] is True, name
        assert host["CapDrop"] == ["ALL"], name
        assert "no-new-privileges:true" in host["SecurityOpt"], name
        if name == "bundle":
            # The one-shot copier: root, but only to hand files to the service users.
            assert sorted(host["CapAdd"]) == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"]
            assert host["NetworkMode"] == "none"
            continue
        assert not host["CapAdd"], name
        assert c["Config"]["User"] not in ("", "0", "root", "0:0"), name
        assert host["RestartPolicy"]["Name"] == "unless-stopped", name
        if name == "worker":
            assert host["NanoCpus"] == 1_000_000_000
            assert host["Memory"] == 512 * 1024 * 1024
    for c in stack.containers():
        host, name = c["HostConfig"], stack.service(c)
        # Every service, the one-shot copier too: bounded processes, memory and CPU.
        assert 0 < (host.get("PidsLimit") or 0) <= 256, name
        assert host["Memory"] > 0, name
        assert host["NanoCpus"] > 0, name
        if name != "bundle":
            assert c["Config"].get("Healthcheck", {}).get("Test"), f"{name} has no healthcheck"


def test_only_flower_is_published_and_on_loopback(stack: Stack) -> None:
    published = {
        stack.service(c): bindings
        for c in stack.containers()
        for bindings in (c["HostConfig"]["PortBindings"] or {}).values()
        if bindings
    }
    assert list(published) == ["flower"], published
    assert published["flower"] == [{"HostIp": "127.0.0.1", "HostPort": str(stack.flower_port)}]


def test_no_secret_in_compose_config_or_docker_inspect(stack: Stack) -> None:
    config = stack.compose("config")
    assert config.returncode == 0, config.stderr
    inspected = json.dumps(stack.containers())
    for password in stack.passwords():
        assert password not in config.stdout
        assert password not in inspected


def test_bundle_files_are_private(stack: Stack) -> None:
    for path in stack.bundle.rglob("*"):
        if path.is_file() and path.suffix not in (".pem", ".csr"):
            assert path.stat().st_mode & 0o077 == 0, path


# What a compromised worker must not read: the data nodes' and Sentinels' keys, ACL file and
# config (the Sentinel administrator's password is in sentinel.conf), nor Flower's files.
OTHER_SERVICES_SECRETS = [
    "redis-1/server.key",
    "redis-1/users.acl",
    "redis-1/redis.conf",
    "redis-1/node.env",
    "sentinel-1/server.key",
    "sentinel-1/sentinel.conf",
    "sentinel-1/node.env",
    "flower/flower.env",
    "flower/https.key",
]


def test_the_worker_cannot_read_other_services_secrets(stack: Stack) -> None:
    for name in OTHER_SERVICES_SECRETS:
        path = f"/etc/celery-fleet/{name}"
        read = stack.compose("exec", "-T", "worker", "cat", path)
        assert read.returncode != 0, f"the worker read {path}"
        assert "Permission denied" in read.stderr, read.stderr
    # Its own env file it can read (the test would pass on a worker that can read nothing).
    own = stack.compose("exec", "-T", "worker", "test", "-r", "/etc/celery-fleet/celery/celery.env")
    assert own.returncode == 0, own.stderr


def test_smoke_tasks_come_back(stack: Stack) -> None:
    smoke = stack.make("smoke", timeout=180)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "ok   add(2, 3) = 5" in smoke.stdout
    assert "ok   group xsum x 4 = [45, 190, 435, 780]" in smoke.stdout
    assert "FAIL" not in smoke.stdout
    assert "Flower:" in smoke.stdout


def test_beat_heartbeat_runs_on_a_worker(stack: Stack) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = stack.compose("logs", "worker").stdout
        if "demo_app.tasks.heartbeat[" in logs and "succeeded" in logs:
            return
        time.sleep(3)
    pytest.fail("no heartbeat task from beat succeeded on a worker within 60 s")


def test_flower_requires_its_password(stack: Stack) -> None:
    url = f"https://127.0.0.1:{stack.flower_port}"
    # HTTPS only, verified against the stack's CA: plain HTTP gets no page.
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(f"http://127.0.0.1:{stack.flower_port}/", timeout=10).read()
    context = ssl.create_default_context(cafile=str(stack.bundle / "pki" / "ca" / "ca.pem"))
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{url}/api/workers", timeout=10, context=context)  # noqa: S310
    assert denied.value.code == 401
    credentials = (stack.bundle / "flower-credentials").read_text().strip()
    request = urllib.request.Request(  # noqa: S310
        f"{url}/api/workers?refresh=1",
        headers={"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()},
    )
    deadline = time.monotonic() + 60
    workers: dict[str, Any] = {}
    while time.monotonic() < deadline and len(workers) < 2:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:  # noqa: S310
            workers = json.load(answer)
        time.sleep(2)
    assert len(workers) == 2, workers


def test_doctor_finds_nothing(stack: Stack) -> None:
    # celery-fleet doctor, from a worker container, with the app's own env file.
    doctor = stack.compose(
        "exec", "-T", "worker", "app-start", "celery-fleet", "doctor",
        "--env-file", "/etc/celery-fleet/celery/celery.env", "--json",
    )  # fmt: skip
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


DOCS_MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"
MONITORING_JOBS = {
    "prometheus": 1,
    "alertmanager": 1,
    "flower": 1,
    "redis": 2,
    "sentinel": 3,
    "redis_exporter": 1,
    "node": 1,
}
# Every target UP took 10 s after `make up MONITORING=1` returned here (2 cores, other
# jobs running; scrape interval 15 s); the timeout leaves room for a slower machine.
TARGETS_UP_TIMEOUT = 120
# Healthchecks run every few seconds and mark a container healthy after one success.
SETTLE_TIMEOUT = 180


def prometheus_api(port: int, path: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def worker_containers(stack: Stack) -> list[dict[str, Any]]:
    return [
        c
        for c in stack.containers()
        if stack.service(c) == "worker"
        and c["State"]["Status"] == "running"
        and c["Config"]["Labels"].get("com.docker.compose.oneoff") != "True"
    ]


def test_scaling_the_workers_up_and_down_under_load_loses_no_task(stack: Stack) -> None:
    """`make scale WORKERS=3`, then 1, then back to 2 while a producer sends tasks that take
    0.5 s each: the removed workers stop warm (their running tasks finish, what they had
    fetched goes back to the queue: a killed one would hold its tasks until the visibility
    timeout, far past the producer's), nothing else is recreated, and every task comes back."""
    refused = stack.make("scale", "WORKERS=0")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "set WORKERS" in refused.stderr
    others = {c["Id"] for c in stack.containers() if stack.service(c) != "worker"}
    load = stack.compose_popen(
        "run", "--rm", "--no-deps", "-T", "worker", "app-start", "smoke", "--load",
        str(LOAD_TASKS), "--task-seconds", "0.5", "--interval", "0.05", "--timeout", "240",
        "--json",
    )  # fmt: skip
    try:
        time.sleep(5)  # tasks are flowing
        for count in (3, 1):
            started = time.monotonic()
            scaled = stack.make("scale", f"WORKERS={count}", timeout=400)
            assert scaled.returncode == 0, scaled.stdout + scaled.stderr
            print(f"make scale WORKERS={count}: {time.monotonic() - started:.0f} s")
            assert len(worker_containers(stack)) == count
        out, err = load.communicate(timeout=300)
    finally:
        load.kill()
        back = stack.make("scale", "WORKERS=2", timeout=400)
    assert back.returncode == 0, back.stdout + back.stderr
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    assert report.get("ok"), f"{report}\n{err[-3000:]}\n{stack.workers_diagnosis()}"
    assert report["completed"] == LOAD_TASKS, report
    assert len(worker_containers(stack)) == 2
    assert others <= {c["Id"] for c in stack.containers()}, "scaling recreated other services"


def test_failover_stopping_the_primary_loses_no_task(stack: Stack) -> None:
    before = stack.primary()
    restarts = stack.restarts()
    # The producer runs in its own one-off container (same image, network and config as a
    # worker), so a worker that restarts cannot take the producer and its report with it.
    load = stack.compose_popen(
        "run", "--rm", "--no-deps", "-T", "worker", "app-start", "smoke",
        "--load", str(LOAD_TASKS), "--interval", "0.05", "--timeout", "150", "--json",
    )  # fmt: skip
    time.sleep(5)  # the one-off container is up and tasks are flowing
    # `docker stop`, not `docker compose stop`: compose would stop the dependents too.
    (container,) = [c["Id"] for c in stack.containers() if stack.service(c) == before]
    stopped = run(["docker", "stop", container], timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    try:
        out, err = load.communicate(timeout=300)
    finally:
        load.kill()
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    logs = stack.compose("logs", "--no-color", "worker").stdout.splitlines()
    quiet = ("] received", "] succeeded in")  # the task traffic; keep the rest
    diagnosis = (
        f"{report}\nproducer stderr: {err[-2000:]}\nworker restarts: {restarts} -> "
        f"{stack.restarts()}\n"
        + "\n".join(
            ln for ln in logs if not ln.endswith(quiet) and not any(q in ln for q in quiet)
        )[-8000:]
    )
    if not report.get("ok"):
        diagnosis += "\n" + stack.workers_diagnosis()
    assert report.get("ok"), diagnosis
    assert report["completed"] == LOAD_TASKS, diagnosis
    # No worker had to be restarted by Docker to get there.
    assert stack.restarts() == restarts, diagnosis
    after = stack.primary()
    assert after != before
    again = stack.compose("exec", "-T", "worker", "app-start", "smoke", "--json", timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["ok"]


def test_monitoring_profile_sees_every_target_up(stack: Stack) -> None:
    """`make up MONITORING=1` on the running stack adds Prometheus, Alertmanager, the Redis
    exporter, node exporter and the doctor (role monitoring's templates, role celery's doctor
    timer as a loop); every target comes up, both data nodes answer the exporter over TLS as
    the monitor user, the doctor's verdicts reach Prometheus, the rule groups are loaded. It runs
    after the failover test (the extra containers would load the machine during it), so
    `make up` also starts the old primary again, which must rejoin as a replica."""
    port = free_port()
    stack.settings["CF_PROMETHEUS_PORT"] = str(port)
    # The failover left containers marked unhealthy until their next healthcheck passes
    # (a worker's ping failed while the primary was gone); `make up` waits for healthy and
    # fails on unhealthy, so let them settle first (CI saw it fail on a worker).
    settle = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < settle:
        health = [
            c["State"].get("Health", {}).get("Status")
            for c in stack.containers()
            if c["State"]["Status"] == "running"  # the stopped old primary keeps its last
        ]
        if "unhealthy" not in health and "starting" not in health:
            break
        time.sleep(3)
    started = time.monotonic()
    up = stack.make("up", "MONITORING=1", timeout=900)
    print(f"make up MONITORING=1: {time.monotonic() - started:.0f} s")
    assert up.returncode == 0, (up.stdout + up.stderr)[-3000:] + stack.workers_diagnosis()
    services = {stack.service(c): c for c in stack.containers()}
    for name in ("prometheus", "alertmanager", "redis-exporter", "node-exporter", "doctor"):
        c = services[name]
        assert c["State"]["Health"]["Status"] == "healthy", name
        host = c["HostConfig"]
        assert host["ReadonlyRootfs"] is True, name
        assert host["CapDrop"] == ["ALL"], name
        assert c["Config"]["User"] not in ("", "0", "root", "0:0"), name
        assert 0 < (host.get("PidsLimit") or 0) <= 256, name
        assert host["Memory"] > 0, name
        published = [b for b in (host["PortBindings"] or {}).values() if b]
        loopback = [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
        assert published == ([loopback] if name == "prometheus" else []), (name, published)
    inspected = json.dumps(stack.containers()) + stack.compose("config").stdout
    for password in stack.passwords():
        assert password not in inspected

    started = time.monotonic()
    deadline = started + TARGETS_UP_TIMEOUT
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, AssertionError):
            targets = prometheus_api(port, "targets?state=active")["activeTargets"]
            jobs: dict[str, int] = {}
            for t in targets:
                jobs[t["labels"]["job"]] = jobs.get(t["labels"]["job"], 0) + 1
            if jobs == MONITORING_JOBS and all(t["health"] == "up" for t in targets):
                break
        time.sleep(2)
    else:
        summary = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
        pytest.fail(f"not every target up within {TARGETS_UP_TIMEOUT} s: {summary}")
    print(f"every Prometheus target up: {time.monotonic() - started:.0f} s")

    # Up is the exporter's HTTP answer; redis_up is its login to each node (TLS, monitor
    # user). The old primary was just started again: wait for it too.
    query = urllib.parse.quote('redis_up{job="redis"}')
    expected = [(f"{stack.prefix}.11:6379", "1"), (f"{stack.prefix}.12:6379", "1")]
    seen: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, AssertionError, KeyError):
            redis_up = prometheus_api(port, f"query?query={query}")["result"]
            seen = sorted((r["metric"]["instance"], r["value"][1]) for r in redis_up)
            if seen == expected:
                break
        time.sleep(2)
    assert seen == expected, seen
    # The Sentinels, as the read-only monitoring user: logged in (redis_up) and reading
    # SENTINEL MASTERS (the master's ok-Sentinels count).
    query = urllib.parse.quote('redis_sentinel_master_ok_sentinels{job="sentinel"}')
    sentinels = [f"{stack.prefix}.{n}:26379" for n in (21, 22, 23)]
    ok: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, AssertionError, KeyError):
            result = prometheus_api(port, f"query?query={query}")["result"]
            ok = sorted((r["metric"]["instance"], r["value"][1]) for r in result)
            if ok == [(s, "3") for s in sentinels]:
                break
        time.sleep(2)
    assert ok == [(s, "3") for s in sentinels], ok
    groups = {g["name"] for g in prometheus_api(port, "rules")["groups"]}
    assert groups == {"celery", "redis", "tls", "doctor"}, groups
    alertmanagers = prometheus_api(port, "alertmanagers")["activeAlertmanagers"]
    assert [a["url"] for a in alertmanagers] == ["http://127.0.0.1:9093/api/v2/alerts"]
    ready = stack.compose(
        "exec", "-T", "alertmanager", "monitoring-start", "healthcheck-alertmanager"
    )
    assert ready.returncode == 0, ready.stdout + ready.stderr

    # The doctor service's first run (at its start): its verdict on itself, when it ran, and
    # the expiry of the workers' certificates, through node exporter (mutual TLS).
    doctor: dict[str, str] = {}
    expiry: dict[str, float] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, AssertionError, KeyError):
            result = prometheus_api(port, "query?query=" + urllib.parse.quote('{job="node"}'))
            doctor = {
                r["metric"].get("check", r["metric"]["__name__"]): r["value"][1]
                for r in result["result"]
                if r["metric"]["__name__"].startswith("celery_fleet_doctor_")
            }
            expiry = {
                r["metric"]["path"]: float(r["value"][1])
                for r in result["result"]
                if r["metric"]["__name__"] == "celery_fleet_certificate_expiry_seconds"
            }
            if doctor.get("doctor") == "1" and expiry:
                break
        time.sleep(2)
    assert doctor.get("doctor") == "1", doctor
    assert "celery_fleet_doctor_last_run_timestamp_seconds" in doctor, doctor
    assert "/etc/celery-fleet/celery/client.pem" in expiry, expiry
    assert min(expiry.values()) > time.time() + 21 * 86400, expiry


@pytest.mark.parametrize("port", [9093, 9121, 9100])
def test_the_monitoring_daemons_listen_on_loopback_only(stack: Stack, port: int) -> None:
    """Alertmanager, the Redis exporter and node exporter share Prometheus' network
    namespace and listen on its loopback: from a worker, no address of the stack's network
    answers on their ports (each container's own address included, so a daemon with an
    address of its own that listened on it would answer), while Prometheus' 9090 does (so
    the probe works)."""
    addresses: dict[str, str] = {}
    for c in stack.containers():
        for name, net in c["NetworkSettings"]["Networks"].items():
            if name.endswith("_backend") and net.get("IPAddress"):
                addresses[stack.service(c)] = net["IPAddress"]
    assert "prometheus" in addresses, addresses
    probe = (
        "import json, socket, sys\n"
        "def answers(address, port):\n"
        "    try:\n"
        "        socket.create_connection((address, port), timeout=5).close()\n"
        "    except OSError:\n"
        "        return False\n"
        "    return True\n"
        f"addresses = {addresses!r}\n"
        f"print(json.dumps({{'prometheus:9090': answers(addresses['prometheus'], 9090),\n"
        f"    'open': sorted(s for s, a in addresses.items() if answers(a, {port}))}}))\n"
    )
    answer = stack.compose("exec", "-T", "worker", "python3", "-c", probe)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    seen = json.loads(answer.stdout.strip().splitlines()[-1])
    assert seen == {"prometheus:9090": True, "open": []}, (port, seen)


def test_the_expression_browser_links_in_the_docs_work(stack: Stack) -> None:
    """docs/monitoring.md links Prometheus' expression browser for the common questions:
    each expression runs on the stack's Prometheus, and each metric it names is scraped."""
    port = int(stack.settings["CF_PROMETHEUS_PORT"])
    section = DOCS_MONITORING.read_text().split("## Looking at it", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\((http://127\.0\.0\.1:9090/graph\?[^)\s]+)\)", section)
    expressions = [
        urllib.parse.parse_qs(urllib.parse.urlsplit(u).query)["g0.expr"][0] for u in links
    ]
    assert len(expressions) >= 10, links
    # The exporter exports a stream's length once the stream exists (no dead letter here).
    names = set(prometheus_api(port, "label/__name__/values")) | {"redis_stream_length"}
    for expression in expressions:
        prometheus_api(port, "query?query=" + urllib.parse.quote(expression))  # "success"
        used = set(re.findall(r"\b((?:flower|redis|celery_fleet)_[a-z_]+)\b", expression))
        assert used <= names, (expression, sorted(used - names))


# scrape (15 s) + evaluation (15 s) + the rule's `for: 1m` + evaluation, then Alertmanager's
# group_wait: ~2 min by the role's defaults (docs/monitoring.md); twice that.
QUORUM_ALERT_TIMEOUT = 300


def test_two_stopped_sentinels_fire_sentinel_quorum_lost(stack: Stack) -> None:
    """Runs after the monitoring profile is up: stopping two of the three Sentinels leaves
    the third with 1 ok Sentinel of the quorum 2; SentinelQuorumLost must fire for it in
    Prometheus and reach Alertmanager. Both are started again afterwards."""
    port = int(stack.settings["CF_PROMETHEUS_PORT"])
    survivor = f"{stack.prefix}.21:26379"
    stopped = stack.compose("stop", "sentinel-2", "sentinel-3")
    assert stopped.returncode == 0, stopped.stderr
    started = time.monotonic()
    try:
        firing: list[dict[str, Any]] = []
        while time.monotonic() < started + QUORUM_ALERT_TIMEOUT:
            with contextlib.suppress(OSError, AssertionError, KeyError):
                firing = [
                    a
                    for a in prometheus_api(port, "alerts")["alerts"]
                    if a["labels"]["alertname"] == "SentinelQuorumLost" and a["state"] == "firing"
                ]
                if any(a["labels"]["instance"] == survivor for a in firing):
                    break
            time.sleep(3)
        assert any(a["labels"]["instance"] == survivor for a in firing), firing
        print(f"SentinelQuorumLost firing after {time.monotonic() - started:.0f} s")
        # Alertmanager has it too (amtool from Debian's prometheus-alertmanager, in the
        # container: Alertmanager is not published).
        query = [
            "exec", "-T", "alertmanager", "amtool", "alert", "query",
            "--alertmanager.url=http://127.0.0.1:9093", "alertname=SentinelQuorumLost",
        ]  # fmt: skip
        seen = ""
        while time.monotonic() < started + QUORUM_ALERT_TIMEOUT:
            seen = stack.compose(*query).stdout
            if "SentinelQuorumLost" in seen:
                break
            time.sleep(3)
        assert "SentinelQuorumLost" in seen, seen
    finally:
        back = stack.compose("start", "sentinel-2", "sentinel-3")
    assert back.returncode == 0, back.stderr


def test_down_leaves_nothing_behind(stack: Stack) -> None:
    down = stack.make("down", timeout=180)
    stack.down = True
    assert down.returncode == 0, down.stderr
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in ("container", "network", "volume"):
        extra = ["-a"] if kind == "container" else []
        left = run(["docker", kind, "ls", *extra, "-q", "--filter", label]).stdout.split()
        assert left == [], f"{kind}s left behind: {left}"
