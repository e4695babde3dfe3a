"""The primary cut off from the network (docker network disconnect) while a real Celery
worker and a producer on the controller stream tasks through the Sentinels.

Runs after test_ha.py (file order), on whatever node is primary by then, with the inventory's
settings (test_ha.py's last converge applies them). It converges nothing and puts the node
back on the network, so test_restore.py finds the same settings. A partition is not a kill:
the clients' TCP connections to the old primary hang instead of being reset, so this also
measures how long the worker and the producer stall. Runs are counted in a file
written by the task itself (``fleet.record`` of tests/integration/fleet_app.py), outside
Redis, so "lost" means "published without error, never ran".

The bound (docs/roles/redis.md, "Network partition of the primary"): with
min-replicas-to-write N the isolated primary accepts writes only until its replicas' last
acknowledgement is older than min-replicas-max-lag seconds; what it accepts in that window
is discarded when it rejoins. Clients that still reach it lose at most rate x (max-lag + 1 s);
clients cut off with it (everyone here) lose only what was in flight at the instant of the
cut: one message per producer and per consumer connection.
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fleet
import pytest
import redis
from celery import Celery
from test_ha import node_of, primaries_seen

from celery_fleet.settings import load
from harness.worker import Worker

NODES = fleet.hosts_in("redis")
MASTER = fleet.group_vars().get("redis_master_name", "fleet")
NETWORK = "cf-mol-ha"
INTEGRATION = fleet.PROJECT_DIR / "tests" / "integration"
RATE = 20.0  # tasks per second
STALL_LIMIT = 120.0  # s without progress: a hang (measured recovery: 50-66 s)
# The role's default TLS paths on the nodes (roles/redis/defaults/main.yml).
TLS_DIR = "/etc/redis/tls"


def celery_env() -> dict[str, str]:
    """The CELERY_* a deployment of the app would get (docs/settings.md): Sentinel URLs for
    broker and backend, TLS with the fleet CA and the app's client certificate."""
    gv = fleet.group_vars()
    user = gv.get("redis_app_user", "celery")
    auth = f"{user}:{quote(gv['redis_app_password'], safe='')}@"
    port = gv.get("redis_sentinel_port", 26379)

    def url(db: int) -> str:
        return ";".join(f"sentinel://{auth}{fleet.address(n)}:{port}/{db}" for n in NODES)

    certfile, keyfile = fleet.client_cert("celery")
    return {
        "CELERY_BROKER_URL": url(0),
        "CELERY_RESULT_BACKEND": url(1),
        "CELERY_SENTINEL_MASTER_NAME": MASTER,
        # The client user (discovery only), as the roles deploy it: Kombu's Sentinel
        # transport must find the primary through a failover with nothing more.
        "CELERY_SENTINEL_USERNAME": gv.get("redis_sentinel_client_user", "discover"),
        "CELERY_SENTINEL_PASSWORD": gv["redis_sentinel_client_password"],
        "CELERY_BROKER_SSL_CA_CERTS": fleet.ca_file(),
        "CELERY_BROKER_SSL_CERTFILE": certfile,
        "CELERY_BROKER_SSL_KEYFILE": keyfile,
    }


def loopback_write(node: str, key: str) -> str:
    """SET key on the node's own Redis over TLS on 127.0.0.1 (the role binds loopback too):
    the one client that still reaches a disconnected node. The password goes by environment
    (docker exec -e NAME copies it from ours), never on a command line."""
    gv = fleet.group_vars()
    env = dict(os.environ, REDISCLI_AUTH=gv["redis_admin_password"])
    result = subprocess.run(
        [
            "docker",
            "exec",
            "-e",
            "REDISCLI_AUTH",
            node,
            "timeout",
            "3",
            "redis-cli",
            "--tls",
            "--cacert",
            f"{TLS_DIR}/ca.pem",
            "--cert",
            f"{TLS_DIR}/server.pem",
            "--key",
            f"{TLS_DIR}/server.key",
            "--user",
            gv.get("redis_admin_user", "admin"),
            "-h",
            "127.0.0.1",
            "-p",
            str(gv.get("redis_port", 6379)),
            "SET",
            key,
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return (result.stdout + result.stderr).strip()


@dataclass
class Producer:
    """Publishes fleet.record(tN) at a fixed rate from a thread, as a web process would."""

    app: Celery
    runlog: Path
    sent: dict[str, float] = field(default_factory=dict)  # token -> time the publish returned
    failed: dict[str, str] = field(default_factory=dict)  # token -> error the client got
    longest: float = 0.0  # longest single publish (the stall the producer saw)
    longest_at: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def run(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            token = f"t{i}"
            started = time.monotonic()
            try:
                self.app.send_task("fleet.record", args=(token, str(self.runlog)))
                self.sent[token] = time.monotonic()
            except Exception as exc:  # counted and reported: the client knows it failed
                self.failed[token] = f"{type(exc).__name__}: {exc}"[:200]
            took = time.monotonic() - started
            if took > self.longest:
                self.longest, self.longest_at = took, started
            i += 1
            next_at = max(next_at + 1 / RATE, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="producer", daemon=True)
        self.thread.start()

    def finish(self, timeout: float) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the producer is stuck in a publish > {timeout}s"


def runs(path: Path) -> collections.Counter[str]:
    return collections.Counter(path.read_text().split()) if path.exists() else collections.Counter()


@dataclass
class Progress:
    """Samples how many runs the worker has recorded: the longest gap is its stall."""

    runlog: Path
    samples: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), sum(runs(self.runlog).values())))
            time.sleep(0.25)

    def longest_stall(self) -> tuple[float, float]:
        """(seconds without a new run, when it began)."""
        best, began, last_change = 0.0, 0.0, None
        previous = -1
        for at, count in self.samples:
            if count != previous:
                last_change, previous = at, count
            elif last_change is not None and at - last_change > best:
                best, began = at - last_change, last_change
        return best, began


@pytest.mark.timeout(600)
def test_partitioned_primary_stops_writes_and_loses_at_most_the_bound(
    tmp_path: Path, record_property: Any
) -> None:
    seen = primaries_seen(NODES)
    assert len(set(seen.values())) == 1, seen
    assert None not in seen.values(), seen
    old = node_of(str(seen[NODES[0]]))
    others = [n for n in NODES if n != old]
    admin = fleet.admin(old)
    to_write = int(admin.config_get("min-replicas-to-write")["min-replicas-to-write"])
    max_lag = int(admin.config_get("min-replicas-max-lag")["min-replicas-max-lag"])
    assert to_write == 1, "the ha scenario sets redis_min_replicas_to_write: 1"
    assert admin.info("replication")["connected_slaves"] == 2

    streak = [0]

    def accepts_writes() -> bool:
        # After the earlier tests' failover and re-converge a replica may still be syncing
        # or lagging: with min-replicas-to-write the primary refuses writes (NOREPLICAS) until
        # one is good again, and a worker starting then exits (seen twice, under load). So
        # the primary must accept writes for 5 checks in a row, not once.
        try:
            admin.set("cf:partition:ready", "1", ex=60)
        except redis.ResponseError as exc:
            if "NOREPLICAS" in str(exc):
                streak[0] = 0
                return False
            raise
        streak[0] += 1
        return streak[0] >= 5

    fleet.wait_for(accepts_writes, 120, f"{old} to accept writes (a good replica)")
    env = celery_env()
    worker = Worker(
        app="fleet_app", env=env, folder=tmp_path / "worker", pythonpath=[INTEGRATION]
    ).start()
    try:
        partition_under_load(old, others, max_lag, env, worker, tmp_path, record_property)
    except BaseException:
        print(f"--- worker {worker.name}\n{worker.log_tail(80)}")
        raise
    finally:
        if NETWORK not in fleet.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", old):
            # Failed half way: put the node back so that the scenario stays usable.
            fleet.docker("network", "connect", "--ip", fleet.address(old), NETWORK, old)
        try:
            worker.stop(timeout=20)
        except Exception:
            worker.kill()


def partition_under_load(
    old: str,
    others: list[str],
    max_lag: int,
    env: dict[str, str],
    worker: Worker,
    tmp_path: Path,
    record_property: Any,
) -> None:
    runlog = tmp_path / "runs.log"
    client = Celery("partition_client", set_as_current=False)
    client.conf.update(load(env))
    producer = Producer(client, runlog)
    progress = Progress(runlog)
    sampler = threading.Thread(target=progress.run, name="progress", daemon=True)
    cut = promoted = refused_at = None
    accepted_probes: list[str] = []
    try:
        sampler.start()
        producer.start()
        fleet.wait_for(lambda: sum(runs(runlog).values()) >= 40, 60, "the stream to flow")

        cut = time.monotonic()
        fleet.docker("network", "disconnect", NETWORK, old)

        # (1) The isolated primary refuses writes once its replicas' lag exceeds max-lag.
        # Every write it accepted before that is a write the partition loses.
        i = 0
        while refused_at is None and time.monotonic() - cut < max_lag + 15:
            key = f"mol:ha:partition-probe:{i}"
            answer = loopback_write(old, key)
            if "NOREPLICAS" in answer:
                refused_at = time.monotonic()
            elif answer == "OK":
                accepted_probes.append(key)
            i += 1
            time.sleep(0.5)
        assert refused_at is not None, f"{old} still accepts writes {max_lag + 15}s after the cut"
        refusal = refused_at - cut
        record_property("seconds until the cut-off primary refused writes", round(refusal, 1))
        record_property("loopback writes it accepted after the cut", len(accepted_probes))
        assert refusal <= max_lag + 5, (refusal, max_lag)

        # (2) The two Sentinels left form a majority and promote a replica.
        agreed = fleet.wait_for(
            lambda: (
                lambda s: (
                    s if len(set(s.values())) == 1 and s[others[0]] not in (None, old) else None
                )
            )(primaries_seen(others)),
            60,
            "the two Sentinels left to agree on a new primary",
        )
        new = node_of(str(agreed[others[0]]))
        assert new in others
        promoted = time.monotonic()
        record_property("seconds from the cut to the promotion (seen)", round(promoted - cut, 1))

        # (3) Tasks published after the promotion run (on the new primary).
        fleet.wait_for(
            lambda: (
                lambda after: (
                    len(after) >= RATE * 5 and sum(1 for t in after if runs(runlog)[t]) >= RATE * 5
                )
            )([t for t, at in list(producer.sent.items()) if at > promoted]),
            STALL_LIMIT + 60,
            "100 tasks published after the promotion to run",
        )
    finally:
        producer.finish(timeout=120)

    # (4) Count: sent, failed (the client was told), lost (sent, never ran), ran twice.
    published = list(producer.sent)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(runs(runlog)[t] == 0 for t in published):
        time.sleep(1)
    counted = runs(runlog)
    progress.stop.set()
    sampler.join(5)
    lost = [t for t in published if counted[t] == 0]
    twice = [t for t in published if counted[t] > 1]
    stall, stall_began = progress.longest_stall()
    record_property("tasks published", len(published))
    record_property("publishes that raised", len(producer.failed))
    record_property("tasks lost (published, never ran)", len(lost))
    record_property("tasks run more than once", len(twice))
    record_property("worker: longest stall (s)", round(stall, 1))
    record_property("worker: stall began after the cut (s)", round(stall_began - cut, 1))
    record_property("producer: longest publish (s)", round(producer.longest, 1))
    record_property("producer: it began after the cut (s)", round(producer.longest_at - cut, 1))
    # A hung connection is noticed by timeouts, not by a reset. Kombu drops the silent BRPOP
    # connection (brpop_timeout 1 s + health_check_interval, checked every interval); the
    # worker's other pooled broker/backend connections to the old primary each need a
    # socket_timeout to fail. The estimate below is only the BRPOP + one socket_timeout part;
    # what is asserted is the hang criterion, STALL_LIMIT.
    transport = load(env)["broker_transport_options"]
    expected = (
        1
        + 2 * transport["health_check_interval"]
        + transport["socket_timeout"]
        + transport["socket_connect_timeout"]
    )
    print(
        f"partition: published={len(published)} failed={len(producer.failed)} "
        f"lost={len(lost)} twice={len(twice)} refusal={refusal:.1f}s "
        f"accepted_after_cut={len(accepted_probes)} worker_stall={stall:.1f}s "
        f"(from +{stall_began - cut:.1f}s) producer_stall={producer.longest:.1f}s "
        f"(from +{producer.longest_at - cut:.1f}s) estimate={expected}s failed_samples="
        f"{list(producer.failed.items())[:3]}"
    )
    # Everyone was cut off with the old primary: only messages in flight at the cut can be
    # lost, one per producer connection and one per consumer (BRPOP) connection.
    bound = 1 + 1
    assert len(lost) <= bound, f"{len(lost)} lost > bound {bound}: {lost[:10]}"
    record_property("worker: BRPOP + one socket_timeout estimate (s)", expected)
    assert stall <= STALL_LIMIT, f"the worker made no progress for {stall:.0f}s (a hang)"
    assert producer.longest <= STALL_LIMIT, f"a publish hung for {producer.longest:.0f}s"

    # (5) Reconnected, the old primary is turned into a replica of the new one and drops
    # what it accepted alone.
    fleet.docker("network", "connect", "--ip", fleet.address(old), NETWORK, old)
    fleet.wait_for(
        lambda: fleet.replicates_from(old, new),
        90,
        f"the old primary {old} to rejoin as a replica of {new}",
    )
    fleet.wait_for(
        lambda: set(primaries_seen(NODES).values()) == {fleet.address(new)},
        60,
        "all three Sentinels to agree on the new primary",
    )
    for key in accepted_probes:
        assert fleet.admin(new).exists(key) == 0, f"{key} was accepted alone, yet survived"
        assert fleet.admin(old).exists(key) == 0, f"{key} survived the resync on {old}"
    assert worker.proc is not None
    assert worker.proc.poll() is None, worker.log_tail()
    client.close()
