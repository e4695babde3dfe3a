"""Role monitoring on the fleet (playbooks/monitoring.yml, node3): Prometheus scrapes Flower,
the three TLS-only Redis nodes and Sentinels, the doctor's metrics through node exporter
on every celery host (mutual TLS) and the data dir's filesystem on every data node, and
Alertmanager delivers real alerts to a test webhook receiver (molecule/fleet/prepare.yml),
asserted on what the receiver wrote.

Runs after test_fleet.py (file order): its worker stops and load are over, and the one
failover here (last test) leaves the fleet healthy for test_rolling.py's converge. Every
wait is derived from the scenario's timings (molecule.yml) with the budget that
docs/monitoring.md documents (scrape + evaluation + for + evaluation + Alertmanager's
grouping), times MARGIN; each test prints the delay it measured.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import fleet

MON = fleet.hosts_in("monitoring")[0]
SENDER = "cf-fleet-node1"
STOPPED = "cf-fleet-node2"
RECEIVED = "/var/lib/fleet-test-alerts/alerts.jsonl"
WORKER_UNIT = "celery-worker@default.service"
WITH_ENV = "/opt/celery-fleet/bin/celery-with-env /etc/celery-fleet/celery.env --"
UNCONSUMED = "fleet-test-unconsumed"
MARGIN = 2


def seconds(duration: str) -> float:
    """A Prometheus duration such as 5s, 10m, 1m30s."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", duration)
    assert parts, duration
    return sum(int(n) * units[u] for n, u in parts)


GV = fleet.group_vars()
SCRAPE = seconds(GV["monitoring_scrape_interval"])
EVALUATION = seconds(GV["monitoring_evaluation_interval"])
# A new group waits group_wait; a group that already notified sends new alerts at its next
# group_interval tick: the later of the two bounds the delivery.
GROUPING = max(
    seconds(GV["monitoring_alert_group_wait"]), seconds(GV["monitoring_alert_group_interval"])
)


def budget(for_: str | None, samples: int = 1) -> float:
    """Worst case from the event to the webhook (docs/monitoring.md, "Time to an alert"):
    `samples` scrapes to see it, an evaluation to start pending, `for`, an evaluation to fire,
    then Alertmanager's grouping."""
    return samples * SCRAPE + 2 * EVALUATION + (seconds(for_) if for_ else 0) + GROUPING


def sh(node: str, command: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["docker", "exec", node, "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{node}: {command!r}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def on_node(node: str, code: str, timeout: float = 120) -> Any:
    """Python with the app and the deployment's settings on a node; prints one JSON line."""
    result = subprocess.run(
        ["docker", "exec", "-i", node, "bash", "-c", f"{WITH_ENV} python3 -"],
        input=code,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{node}: client failed\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def prometheus(path: str) -> Any:
    """GET Prometheus' HTTP API on its loopback address, from the monitoring node."""
    url = f"http://{GV.get('monitoring_prometheus_listen', '127.0.0.1:9090')}{path}"
    code = (
        f"import urllib.request\nprint(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    )
    body = json.loads(sh(MON, f"python3 - <<'EOF'\n{code}\nEOF"))
    assert body["status"] == "success", body
    return body["data"]


def query(promql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = prometheus(f"/api/v1/query?query={quote(promql)}")["result"]
    return result


def received() -> list[dict[str, Any]]:
    """Every notification the receiver got, in order (one Alertmanager JSON body a line)."""
    return [json.loads(line) for line in sh(MON, f"cat {RECEIVED}").splitlines() if line]


def instant(stamp: str) -> float:
    """Alertmanager's RFC 3339 time (nanoseconds, Z) as a Unix time."""
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


def wait_alert(name: str, labels: dict[str, str], since: float, timeout: float) -> dict[str, Any]:
    """The first firing alert `name` with `labels`, started after `since` (Unix time), that
    the receiver got within `timeout` from now; with its delay from `since`."""

    def find() -> dict[str, Any] | None:
        for notification in received():
            for alert in notification["alerts"]:
                if (
                    notification["receiver"] == "fleet"
                    and alert["status"] == "firing"
                    and alert["labels"]["alertname"] == name
                    and all(alert["labels"].get(k) == v for k, v in labels.items())
                    and instant(alert["startsAt"]) >= since - 1
                ):
                    return {**alert, "delay": time.time() - since}
        return None

    found: dict[str, Any] = fleet.wait_for(
        find, timeout, f"{name} {labels} at the webhook receiver", interval=2
    )
    print(f"{name}: delivered {found['delay']:.0f} s after the event (timeout {timeout:.0f} s)")
    return found


# --- what Prometheus sees ------------------------------------------------------------------


def test_prometheus_scrapes_flower_and_every_redis_node_through_the_exporter() -> None:
    def targets() -> dict[str, list[dict[str, Any]]]:
        by_job: dict[str, list[dict[str, Any]]] = {}
        for target in prometheus("/api/v1/targets?state=active")["activeTargets"]:
            by_job.setdefault(target["labels"]["job"], []).append(target)
        return by_job

    def all_up() -> dict[str, list[dict[str, Any]]] | None:
        by_job = targets()
        ups = [t["health"] == "up" for ts in by_job.values() for t in ts]
        return by_job if ups and all(ups) else None

    by_job = fleet.wait_for(all_up, 3 * SCRAPE * MARGIN, "every target up", interval=2)
    flower = fleet.hosts_in("flower")
    redis_nodes = fleet.hosts_in("redis")
    assert sorted(by_job) == [
        "alertmanager",
        "flower",
        "node",
        "prometheus",
        "redis",
        "redis_exporter",
        "sentinel",
    ]
    assert [t["labels"]["instance"] for t in by_job["flower"]] == [
        f"{fleet.address(n)}:5555" for n in flower
    ]
    assert sorted(t["labels"]["instance"] for t in by_job["redis"]) == sorted(
        f"{fleet.address(n)}:6379" for n in redis_nodes
    )
    # The exporter's TLS login as the monitor user works on every node (redis_up), and it
    # reads the fleet's queue and beat's key; Flower reports the three workers online.
    up = query('redis_up{job="redis"}')
    assert sorted((r["metric"]["instance"], r["value"][1]) for r in up) == sorted(
        (f"{fleet.address(n)}:6379", "1") for n in redis_nodes
    )
    masters = query('redis_instance_info{job="redis", role="master"}')
    assert len(masters) == 1, masters
    # One liveness key per beat: both hosts of celery_beat run one (celery_beat_lock).
    beats = query('max(redis_keys_count{job="redis", db="db0"})')
    assert [b["value"][1] for b in beats] == [str(len(fleet.hosts_in("celery_beat")))], beats
    # test_fleet.py's last fault test has just restarted a worker: Flower sets its gauge
    # back to 1 on that worker's worker-online event (the start takes up to ~60 s loaded).
    workers = {f"default@{n}" for n in fleet.hosts_in("celery_workers")}
    fleet.wait_for(
        lambda: {r["metric"]["worker"] for r in query("flower_worker_online == 1")} >= workers,
        120,
        f"Flower to report {sorted(workers)} online",
        interval=2,
    )
    rules = prometheus("/api/v1/rules")["groups"]
    assert {g["name"] for g in rules} == {"celery", "redis", "tls", "doctor"}
    alertmanagers = prometheus("/api/v1/alertmanagers")["activeAlertmanagers"]
    assert len(alertmanagers) == 1, alertmanagers


def test_prometheus_scrapes_every_sentinel_as_the_read_only_monitor_user() -> None:
    """Job sentinel (on by default): the exporter logs in to each Sentinel with the data
    nodes' monitor user and password (role redis_sentinel's monitoring user). The exporter
    ignores a refused SENTINEL SENTINELS (ok_sentinels would be 1) and reports a refused
    CKQUORUM as status 0: 3 and 1 show it may read both; no Sentinel logged a refusal."""
    sentinels = fleet.hosts_in("sentinel")
    instances = sorted(f"{fleet.address(n)}:26379" for n in sentinels)

    def targets_up() -> list[str] | None:
        found = [
            t
            for t in prometheus("/api/v1/targets?state=active")["activeTargets"]
            if t["labels"]["job"] == "sentinel"
        ]
        up = sorted(t["labels"]["instance"] for t in found if t["health"] == "up")
        return up if up == instances and len(found) == len(instances) else None

    fleet.wait_for(targets_up, 3 * SCRAPE * MARGIN, f"sentinel targets {instances} up", interval=2)

    def ok_sentinels() -> list[tuple[str, str]] | None:
        result = query('redis_sentinel_master_ok_sentinels{job="sentinel"}')
        seen = sorted((r["metric"]["instance"], r["value"][1]) for r in result)
        return seen if seen == [(i, str(len(sentinels))) for i in instances] else None

    fleet.wait_for(ok_sentinels, 3 * SCRAPE * MARGIN, "3 ok Sentinels from each", interval=2)
    quorum = query('redis_sentinel_master_ckquorum_status{job="sentinel"}')
    assert sorted((r["metric"]["instance"], r["value"][1]) for r in quorum) == [
        (i, "1") for i in instances
    ], quorum
    user = GV.get("redis_monitor_user", "monitor")
    for node in sentinels:
        refused = [e for e in fleet.sentinel(node).acl_log() if e.get("username") == user]
        assert refused == [], (node, refused)


def test_prometheus_reads_the_doctors_metrics_over_mutual_tls() -> None:
    """Job node (on by default): node exporter on every celery host, HTTPS with the fleet
    CA, serving the doctor's metrics file; a client without a certificate gets nothing."""
    hosts = sorted(set(fleet.hosts_in("celery_workers") + fleet.hosts_in("celery_beat")))
    instances = sorted(f"{fleet.address(n)}:9100" for n in hosts)

    def doctor_seen() -> list[str] | None:
        result = query('celery_fleet_doctor_check_ok{job="node", check="doctor"} == 1')
        seen = sorted(r["metric"]["instance"] for r in result)
        return seen if seen == instances else None

    # The doctor's timer runs every celery_doctor_interval; test_fleet.py ran it by hand.
    fleet.wait_for(doctor_seen, 3 * SCRAPE * MARGIN, f"the doctor's metrics of {instances}", 2)
    targets = [
        t
        for t in prometheus("/api/v1/targets?state=active")["activeTargets"]
        if t["labels"]["job"] == "node"
    ]
    assert sorted(t["labels"]["instance"] for t in targets) == instances
    # Every host here runs the doctor (each is a celery host): DoctorNotRunning watches them.
    assert all(t["labels"].get("doctor") == "expected" for t in targets), targets
    assert all(t["health"] == "up" and t["scrapeUrl"].startswith("https://") for t in targets)
    runs = query('celery_fleet_doctor_last_run_timestamp_seconds{job="node"}')
    assert sorted(r["metric"]["instance"] for r in runs) == instances, runs
    # Without a client certificate (or over plain HTTP) node exporter answers nothing.
    probe = f"""
import ssl, urllib.request
ctx = ssl.create_default_context(cafile="/etc/prometheus/tls/ca.pem")
for url, context in (("https://{instances[0]}/metrics", ctx),
                     ("http://{instances[0]}/metrics", None)):
    try:
        urllib.request.urlopen(url, timeout=10, context=context).read()
        print("answered", url)
    except Exception as error:
        print("refused", url, type(error).__name__)
"""
    out = sh(MON, f"python3 - <<'EOF'\n{probe}\nEOF")
    assert "answered" not in out, out
    assert out.count("refused") == 2, out


def test_each_data_node_reports_the_filesystem_of_its_data_dir_alone() -> None:
    """Job node on the data nodes: node exporter's filesystem collector reports one mount,
    the one that holds Redis' data dir (findmnt on that node; a container's root is overlay,
    which Debian's defaults would leave out), with the free share df reports there; and
    Prometheus evaluates RedisDiskSpaceLow's expression over exactly those series."""
    nodes = fleet.hosts_in("redis")
    data_dir = GV.get("redis_data_dir", "/var/lib/redis")
    mounts = {
        f"{fleet.address(n)}:9100": sh(n, f"findmnt -n -f -o TARGET --target {data_dir}").strip()
        for n in nodes
    }

    def reported() -> dict[str, str] | None:
        result = query('node_filesystem_size_bytes{job="node"}')
        seen = {r["metric"]["instance"]: r["metric"]["mountpoint"] for r in result}
        return seen if seen == mounts and len(result) == len(mounts) else None

    fleet.wait_for(reported, 3 * SCRAPE * MARGIN, f"the data dirs' filesystems {mounts}", 2)
    ratios = query(
        'node_filesystem_avail_bytes{job="node"} / node_filesystem_size_bytes{job="node"}'
    )
    for node in nodes:
        instance = f"{fleet.address(node)}:9100"
        measured = next(float(r["value"][1]) for r in ratios if r["metric"]["instance"] == instance)
        avail, size = map(int, sh(node, f"df -B1 --output=avail,size {data_dir} | tail -1").split())
        # The filesystem is shared with the other containers: a little may change between reads.
        assert abs(measured - avail / size) < 0.01, (node, measured, avail / size)
    rule = next(
        r
        for g in prometheus("/api/v1/rules?type=alert")["groups"]
        for r in g["rules"]
        if r["name"] == "RedisDiskSpaceLow"
    )
    assert rule["health"] == "ok", rule
    expression = re.fullmatch(r"(.+)<\s*([0-9.]+)", rule["query"])
    assert expression, rule["query"]
    assert float(expression[2]) == float(GV.get("monitoring_redis_disk_free_ratio", 0.15))
    # The same expression, with a threshold every filesystem is under: one series per data node.
    everything = query(f"{expression[1]} <= 1")
    assert sorted(r["metric"]["instance"] for r in everything) == sorted(mounts), everything


def test_the_monitoring_secrets_are_private_and_off_the_command_lines() -> None:
    password = GV["redis_monitor_password"]
    for path, mode in [
        ("/etc/prometheus/alertmanager.yml", "640"),
        ("/etc/prometheus/redis-exporter.env", "640"),
        ("/etc/prometheus/tls/client.key", "640"),
    ]:
        assert sh(MON, f"stat -c '%a %U %G' {path}").split() == [mode, "root", "prometheus"]
    assert password not in sh(MON, "ps -eo args")
    assert password not in sh(MON, "systemctl show prometheus-redis-exporter")
    # Prometheus serves its config; the exporter's login is not in it.
    assert password not in json.dumps(prometheus("/api/v1/status/config"))


# --- alerts, end to end: event -> Prometheus -> Alertmanager -> the webhook ------------------


def test_a_stopped_worker_reaches_the_receiver_as_celery_worker_down() -> None:
    timeout = budget(GV["monitoring_worker_down_for"]) * MARGIN
    sh(STOPPED, f"systemctl stop {WORKER_UNIT}", timeout=150)
    # A clean stop sends worker-offline on the way out: Flower's gauge is 0 from here.
    since = time.time()
    try:
        alert = wait_alert(
            "CeleryWorkerDown",
            {"worker": f"default@{STOPPED}", "component": "celery", "severity": "page"},
            since,
            timeout,
        )
    finally:
        sh(STOPPED, f"systemctl start {WORKER_UNIT}")
    assert alert["annotations"]["runbook_url"].endswith("#celeryworkerdown")


def test_a_queue_nobody_consumes_reaches_the_receiver_as_celery_queue_backlog() -> None:
    threshold = int(GV["monitoring_queue_backlog_threshold"])
    timeout = budget(GV["monitoring_queue_backlog_for"]) * MARGIN
    sent = on_node(
        SENDER,
        f"""
import json
from demo_app.tasks import add
for i in range({threshold + 10}):
    add.apply_async((i, i), queue="{UNCONSUMED}")
print(json.dumps({threshold + 10}))
""",
    )
    since = time.time()
    try:
        alert = wait_alert(
            "CeleryQueueBacklog",
            {"key": UNCONSUMED, "component": "celery", "severity": "page"},
            since,
            timeout,
        )
        assert f"holds {sent} tasks" in alert["annotations"]["summary"], alert
    finally:
        on_node(
            SENDER,
            f"""
import json
from demo_app.app import app
with app.connection_for_write() as conn:
    print(json.dumps(conn.default_channel.queue_purge("{UNCONSUMED}")))
""",
        )


def test_failing_tasks_reach_the_receiver_as_celery_task_failure_rate() -> None:
    # rate() needs two scrapes of the new task-failed series: one more scrape than the rest.
    timeout = budget(GV["monitoring_task_failure_for"], samples=2) * MARGIN
    unit = "fleet-test-failing-tasks"
    # add("x", 1) raises TypeError: one failing task a second until the alert is in, in a
    # transient unit bounded in time (RuntimeMaxSec) and stopped below.
    code = (
        "import time\nfrom demo_app.tasks import add\n"
        "while True:\n    add.delay('x', 1)\n    time.sleep(1)\n"
    )
    sh(SENDER, f"cat > /root/{unit}.py <<'EOF'\n{code}EOF")
    sh(
        SENDER,
        f"systemd-run --unit={unit} --property=RuntimeMaxSec={int(timeout) + 60}"
        f" {WITH_ENV} python3 /root/{unit}.py",
    )
    since = time.time()
    try:
        alert = wait_alert(
            "CeleryTaskFailureRate",
            {"task": "demo_app.tasks.add", "component": "celery", "severity": "ticket"},
            since,
            timeout,
        )
    finally:
        sh(SENDER, f"systemctl stop {unit} || true; systemctl reset-failed {unit} || true")
    assert "100%" in alert["annotations"]["summary"], alert


def test_a_killed_primary_reaches_the_receiver_as_redis_failover_happened() -> None:
    """SIGKILL redis-server on the primary: the role holds it down (RestartSec) until the
    Sentinels promote a replica; the promoted node fires RedisFailoverHappened. The killed
    node rejoins as a replica before the next file's converge."""
    nodes = fleet.hosts_in("redis")
    master = GV["redis_master_name"]

    def primary() -> str | None:
        addr = fleet.sentinel(MON).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master)
        return next(n for n in nodes if fleet.address(n) == addr[0].decode()) if addr else None

    old = primary()
    assert old
    killed = time.time()
    sh(old, "systemctl kill --signal=SIGKILL redis-server")
    new = fleet.wait_for(
        lambda: p if (p := primary()) not in (None, old) else None,
        60,
        "the Sentinels to promote a replica",
    )
    print(f"promoted {new} {time.time() - killed:.0f} s after the kill")
    # The promoted node may report role:master to the exporter before this Sentinel tells
    # us: the alert's start is only bound by the kill; the wait starts at the promotion.
    alert = wait_alert(
        "RedisFailoverHappened",
        {"instance": f"{fleet.address(new)}:6379", "component": "redis", "severity": "ticket"},
        killed,
        budget(None) * MARGIN,
    )
    assert alert["annotations"]["runbook_url"].endswith("#redisfailoverhappened")
    fleet.wait_for(
        lambda: fleet.replicates_from(old, new),
        90,
        f"the killed primary {old} to restart and rejoin as a replica of {new}",
    )
    fleet.wait_for_quorum(nodes, master, "the failover")


def test_the_receiver_got_only_well_formed_notifications() -> None:
    notifications = received()
    assert notifications
    for n in notifications:
        assert (n["receiver"], n["version"]) == ("fleet", "4"), n
        assert n["status"] in ("firing", "resolved"), n
