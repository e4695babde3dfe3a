"""Reliable fetch (celery_fleet.transport) on real Redis with real workers.

The loss window: the server has executed the worker's pop, but the worker never records
the message as unacknowledged (its reply is lost with the connection, or the worker dies
first). The worker is frozen (SIGSTOP) while its fetch is outstanding, a task is
published, and the test waits until the server has popped it; then the worker's
connections are killed on the server (CLIENT KILL) and the worker itself (SIGKILL). With
Kombu's transport the message is then nowhere in Redis and never runs; with reliable fetch
it waits in the dead worker's in-flight list and another worker runs it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu.exceptions import OperationalError

from celery_fleet import transport
from celery_fleet.transport import ReplicationNotConfirmed
from harness import envs
from harness.redis_procs import APP_USER, Node, RedisFleet
from harness.worker import MakeClient, StartWorker, Worker

INFLIGHT_TIMEOUT = 3
TRANSPORTS = {
    "kombu": {},
    "reliable": {"CELERY_FLEET_RELIABLE_FETCH": "true"},
}


def fleet_env(fleet: RedisFleet, primary: Node, fetch: str) -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": envs.url(fleet, primary, 0),
        "CELERY_RESULT_BACKEND": envs.url(fleet, primary, 1),
        **envs.tls(fleet),
        # Short timeouts, so that the suite waits seconds for a redelivery, not minutes.
        "CELERY_VISIBILITY_TIMEOUT": "8",
        "CELERY_TASK_SOFT_TIME_LIMIT": "4",
        "CELERY_TASK_TIME_LIMIT": "6",
        "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(
            {
                "unacked_restore_interval": 1,
                "unacked_restore_throttle": 1,
                "inflight_timeout": INFLIGHT_TIMEOUT,
            }
        ),
        **TRANSPORTS[fetch],
    }


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def freeze_after_fetch(
    fleet: RedisFleet, primary: Node, worker: Worker, send: Callable[[str], object], token: str
) -> str:
    """SIGSTOP the worker, publish ``token`` and wait until the server has popped it for
    the frozen worker. The worker may be frozen between two fetch commands (nothing
    outstanding): then it is resumed, runs the task, and the test tries again."""
    admin = fleet.client(primary)
    assert worker.proc is not None
    for attempt in range(5):
        name = f"{token}-{attempt}"
        os.kill(worker.proc.pid, signal.SIGSTOP)
        time.sleep(0.2)
        send(name)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if admin.llen("default") == 0:
                return name
            time.sleep(0.05)
        os.kill(worker.proc.pid, signal.SIGCONT)
        time.sleep(1.5)
    raise AssertionError("the worker never had a fetch outstanding when frozen")


def kill_app_connections(fleet: RedisFleet, primary: Node) -> int:
    return int(fleet.client(primary).execute_command("CLIENT", "KILL", "USER", APP_USER))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fetch", ["kombu", "reliable"])
def test_message_popped_for_a_worker_that_dies_is_not_lost(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    fetch: str,
) -> None:
    primary = redis_fleet.server("p1")
    env = fleet_env(redis_fleet, primary, fetch)
    runlog = tmp_path / "runs.log"
    first = start_worker(env, pool="prefork", concurrency=1)
    client = celery_client(env)

    def send(token: str) -> object:
        return client.send_task("fleet.record", args=(token, str(runlog)))

    token = freeze_after_fetch(redis_fleet, primary, first, send, "w1")
    killed = kill_app_connections(redis_fleet, primary)
    first.kill()  # SIGKILL: the host died before it read the reply
    admin = redis_fleet.client(primary)
    start_worker(env, pool="prefork", concurrency=1)
    deadline = time.monotonic() + INFLIGHT_TIMEOUT + 8 + 10  # sweep + visibility + slack
    while token not in runs(runlog) and time.monotonic() < deadline:
        time.sleep(0.2)
    ran = runs(runlog).count(token)
    record_property(f"{fetch}: connections killed", killed)
    record_property(f"{fetch}: runs of the popped task", ran)
    if fetch == "kombu":
        # The window this transport closes: popped by the server, recorded nowhere.
        assert ran == 0, "Kombu's transport ran it: the window was not hit"
        assert admin.llen("default") == 0
        assert admin.hlen("unacked") == 0
    else:
        assert ran == 1, f"ran {ran} times: {runs(runlog)}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fetch", ["kombu", "reliable"])
def test_connection_killed_right_after_a_fetch_delivers_once(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
    fetch: str,
) -> None:
    """The worker survives: its connections are killed on the server right after the pop
    (CLIENT KILL), then it resumes. The task runs, at least once and at most twice: the
    worker sees the dead connection at once (celery_fleet.fanout), and Kombu's restore on
    channel close puts the message back while the first run is under way (acks_late is
    at-least-once). Before the fanout guard the resumed worker sat about 20 s in a
    Pub/Sub read with no timeout, which hid that second run. (Threads pool: with prefork,
    the resumed parent logged the task as received and never ran it, with either
    transport, before that guard; not re-checked.)"""
    primary = redis_fleet.server("p1")
    env = fleet_env(redis_fleet, primary, fetch)
    runlog = tmp_path / "runs.log"
    worker = start_worker(env, pool="threads", concurrency=1)
    client = celery_client(env)

    def send(token: str) -> object:
        return client.send_task("fleet.record", args=(token, str(runlog)))

    token = freeze_after_fetch(redis_fleet, primary, worker, send, "w2")
    kill_app_connections(redis_fleet, primary)
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + INFLIGHT_TIMEOUT + 8 + 10
    while token not in runs(runlog) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # a second run would show here
    assert 1 <= runs(runlog).count(token) <= 2, runs(runlog)
    assert worker.proc.poll() is None, worker.log_tail()


@pytest.mark.timeout(180)
def test_reliable_fetch_keeps_celery_features(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """Several queues, priorities, countdown, remote control (fanout + a no-ack reply
    queue), and a warm shutdown that leaves nothing in flight."""
    primary = redis_fleet.server("p1")
    env = {
        **fleet_env(redis_fleet, primary, "reliable"),
        "CELERY_TASK_QUEUES": "default,critical",
    }
    runlog = tmp_path / "runs.log"
    client = celery_client(env)
    admin = redis_fleet.client(primary)

    # Priorities: queued before any worker runs, they come out in Kombu's order (the
    # lowest priority step first), as with Kombu's BRPOP.
    for i in range(3):
        client.send_task("fleet.record", args=(f"p9-{i}", str(runlog)), priority=9)
    for i in range(3):
        client.send_task("fleet.record", args=(f"p0-{i}", str(runlog)), priority=0)
    assert admin.llen("default") == 3
    worker = start_worker(env, pool="prefork", concurrency=1, queues=("default", "critical"))
    redis_fleet.wait_for(lambda: len(runs(runlog)) == 6, "the six queued tasks")
    assert runs(runlog) == [f"p0-{i}" for i in range(3)] + [f"p9-{i}" for i in range(3)]

    # An idle worker blocks on one queue at a time: a task for the other one waits at most
    # about brpop_timeout (1 s). Measured here, end to end through the result backend.
    latencies = []
    for i in range(6):
        queue = ("default", "critical")[i % 2]
        time.sleep(0.7)
        sent = time.monotonic()
        assert client.send_task("fleet.echo", args=(i,), queue=queue).get(timeout=10) == i
        latencies.append(round(time.monotonic() - sent, 2))
    record_property("idle worker, two queues: latency per task (s)", latencies)
    assert max(latencies) < 2.5, latencies

    # Countdown: held by the worker (unacked) until due, then run once.
    sent = time.monotonic()
    result = client.send_task("fleet.record", args=("eta", str(runlog)), countdown=2)
    assert result.get(timeout=20) == "eta"
    assert time.monotonic() - sent >= 1.9
    assert runs(runlog).count("eta") == 1

    # Remote control: Pub/Sub broadcast to the worker, replies on a no-ack queue that this
    # process consumes through the same transport.
    replies = client.control.inspect(timeout=3).ping() or {}
    assert worker.nodename in replies, replies

    # No reply (no-ack) or task message waits in the unacked hash.
    assert admin.zcard("_celery_fleet.inflight") >= 1
    redis_fleet.wait_for(lambda: admin.hlen("unacked") == 0, "no unacked message")

    # Warm shutdown with messages queued: nothing is left in flight, nothing is lost.
    for i in range(20):
        client.send_task("fleet.record", args=(f"late{i}", str(runlog)))
    worker.stop()
    inflight = [k for k in admin.keys("_celery_fleet.inflight:*")]
    assert all(admin.llen(k) == 0 for k in inflight)
    left = admin.llen("default") + admin.hlen("unacked")
    ran = sum(1 for t in runs(runlog) if t.startswith("late"))
    record_property("warm shutdown: ran / still queued or unacked", (ran, left))
    assert ran + admin.llen("default") >= 20


@pytest.mark.timeout(120)
def test_global_keyprefix_keeps_every_key_under_it(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
) -> None:
    """Queues, in-flight lists, their registry and the unacked hash all carry the prefix.
    (Kombu prefixes Pub/Sub channels too, which an ACL limited to Celery's channel names
    refuses: remote control and events are off here.)"""
    primary = redis_fleet.server("p1")
    options = {"global_keyprefix": "fleet:", "inflight_timeout": INFLIGHT_TIMEOUT}
    env = {
        **fleet_env(redis_fleet, primary, "reliable"),
        "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(options),
        "CELERY_WORKER_ENABLE_REMOTE_CONTROL": "false",
        "CELERY_WORKER_SEND_TASK_EVENTS": "false",
        "CELERY_TASK_SEND_SENT_EVENT": "false",
    }
    runlog = tmp_path / "runs.log"
    client = celery_client(env)
    admin = redis_fleet.client(primary)
    start_worker(
        env,
        pool="threads",
        concurrency=2,
        extra_args=("--without-mingle", "--without-gossip", "--without-heartbeat"),
    )
    results = [client.send_task("fleet.record", args=(f"k{i}", str(runlog))) for i in range(5)]
    assert [r.get(timeout=20) for r in results] == [f"k{i}" for i in range(5)]
    redis_fleet.wait_for(lambda: admin.hlen("fleet:unacked") == 0, "no unacked message")
    keys = [k.decode() for k in admin.keys("*")]
    assert all(k.startswith("fleet:") for k in keys), keys
    assert admin.zcard("fleet:_celery_fleet.inflight") >= 1


@pytest.mark.timeout(120)
def test_pool_child_killed_mid_task_runs_again_with_reliable_fetch(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
) -> None:
    """acks_late + reject_on_worker_lost: the unacked record CLAIM wrote is what Kombu's
    QoS requeues when the pool child dies."""
    primary = redis_fleet.server("p1")
    env = fleet_env(redis_fleet, primary, "reliable")
    runlog = tmp_path / "runs.log"
    worker = start_worker(env, pool="prefork", concurrency=1)
    client = celery_client(env)
    result = client.send_task("fleet.slow_record", args=("child", str(runlog), 2.0))
    redis_fleet.wait_for(lambda: "start:child" in runs(runlog), "the task to start")
    assert worker.proc is not None
    children = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children").read_text()
    os.kill(int(children.split()[0]), signal.SIGKILL)  # the OOM killer
    assert result.get(timeout=60) == "child"
    assert runs(runlog).count("start:child") == 2
    assert runs(runlog).count("end:child") == 1


@pytest.mark.timeout(120)
def test_confirmed_publish_fails_loudly_without_a_replica(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
) -> None:
    """CELERY_BROKER_WAIT_REPLICAS=1: a publish returns once a replica has it; with the
    replica gone it raises ReplicationNotConfirmed (a connection error, so Celery's publish
    retry policy applies; turned off here to see the error)."""
    primary = redis_fleet.server("p1")
    replica = redis_fleet.server("r1", replica_of=primary)
    env = {
        **fleet_env(redis_fleet, primary, "reliable"),
        "CELERY_BROKER_WAIT_REPLICAS": "1",
        "CELERY_BROKER_WAIT_TIMEOUT_MS": "300",
        "CELERY_TASK_PUBLISH_RETRY": "false",
    }
    runlog = tmp_path / "runs.log"
    start_worker(env, pool="threads", concurrency=2)
    client = celery_client(env)
    assert client.send_task("fleet.record", args=("ok", str(runlog))).get(timeout=10) == "ok"
    redis_fleet.kill(replica)
    redis_fleet.wait_for(
        lambda: redis_fleet.info(primary, "replication").get("connected_slaves") == 0,
        "the primary to see its replica gone",
    )
    started = time.monotonic()
    # Kombu reports connection errors as its OperationalError, caused by ours.
    with pytest.raises(OperationalError, match="confirmed by 0 replica") as err:
        client.send_task("fleet.record", args=("unconfirmed", str(runlog)))
    assert isinstance(err.value.__cause__ or err.value.__context__, ReplicationNotConfirmed)
    assert time.monotonic() - started < 5


def test_scripts_keep_every_message_in_a_queue_a_list_or_the_unacked_hash(
    redis_fleet: RedisFleet,
) -> None:
    """The three Lua scripts of celery_fleet.transport, step by step on a real server."""
    r = redis_fleet.client(redis_fleet.server("p1"))
    reg, pri = transport.INFLIGHT, "q\x06\x163"
    mine, mine_pri = f"{reg}:c1:q", f"{reg}:c1:{pri}"
    fetch_keys = [reg, "q", pri, mine, mine_pri]
    r.lpush("q", b"m1", b"m2")  # m1 is the oldest: first out
    r.lpush(pri, b"p1")

    # FETCH: the first ready key in order, moved (not popped) into the in-flight list.
    assert transport._run(r, transport.FETCH, fetch_keys, [2, 1]) == [1, b"m1"]
    assert r.lrange(mine, 0, -1) == [b"m1"]
    assert r.zscore(reg, mine) is not None

    # CLAIM: out of the list into the unacked hash + index, atomically; a retry of the
    # same attempt (same score) is recognised, any other claim is refused.
    claim_keys = [mine, "unacked", "unacked_index"]
    assert transport._run(r, transport.CLAIM, claim_keys, [b"m1", "t1", "rec", "12.5"]) == 1
    assert (r.llen(mine), r.hget("unacked", "t1"), r.zscore("unacked_index", "t1")) == (
        0,
        b"rec",
        12.5,
    )
    assert transport._run(r, transport.CLAIM, claim_keys, [b"m1", "t1", "rec", "12.5"]) == 2
    assert transport._run(r, transport.CLAIM, claim_keys, [b"m1", "t1", "rec", "13.0"]) == 0
    # No-ack: out of the list, nothing recorded.
    assert transport._run(r, transport.FETCH, fetch_keys, [2, 1]) == [1, b"m2"]
    assert transport._run(r, transport.CLAIM, claim_keys, [b"m2", "", "", "1"]) == 1
    assert r.hlen("unacked") == 1

    # RETURN by channel id (a lost connection of this process): back to the consuming end.
    r.lpush("q", b"m3", b"m4")
    assert transport._run(r, transport.FETCH, fetch_keys, [2, 1]) == [1, b"m3"]
    assert transport._run(r, transport.FETCH, fetch_keys, [2, 1]) == [1, b"m4"]
    assert transport._run(r, transport.FETCH, fetch_keys, [2, 1]) == [2, b"p1"]
    args = [f"{reg}:", "", "", transport.FORGET_AFTER]
    assert transport._run(r, transport.RETURN, [reg], [*args, "other"]) == 0
    assert transport._run(r, transport.RETURN, [reg], [*args, "c1"]) == 3
    assert r.lrange("q", 0, -1) == [b"m4", b"m3"]  # m3, the older, is next out
    assert r.lrange(pri, 0, -1) == [b"p1"]
    assert r.zcard(reg) == 2  # entries stay: a late BLMOVE into them is still found

    # RETURN of stale lists (dead consumers): only those without a recent heartbeat;
    # entries older than FORGET_AFTER are dropped.
    assert transport._run(r, transport.FETCH, fetch_keys, [2, 1]) == [1, b"m3"]
    stale = ["", "", "30", transport.FORGET_AFTER]
    assert transport._run(r, transport.RETURN, [reg], [f"{reg}:", *stale[1:]]) == 0
    r.zadd(reg, {mine: 1000.0})  # silent since 1970
    assert transport._run(r, transport.RETURN, [reg], [f"{reg}:", *stale[1:]]) == 1
    assert r.lrange("q", 0, -1) == [b"m4", b"m3"]
    assert r.zscore(reg, mine) is None
    assert r.zscore(reg, mine_pri) is not None
