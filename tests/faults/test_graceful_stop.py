"""A clean stop of the primary (SIGTERM, as ``docker stop`` or systemd send) under a steady
stream of tasks: every task runs (with reliable fetch; Kombu's own transport may lose the
message each worker was popping at the stop, below), and every worker still answers a ping
afterwards (the same symptom upstream: celery/celery#10502). Redis 7 on SIGTERM pauses
writes, waits up to ``shutdown-timeout`` for its replicas to catch up, then exits and closes
its clients; Sentinel then fails over.

A primary and one replica behind three Sentinels, two workers (prefork, concurrency 2),
a producer at a steady pace that outlasts the failover. "Ran" is counted in a file the
task writes, outside Redis.

Before the Pub/Sub guard in celery_fleet.patches, a worker hung here in about half the runs,
with either transport: its main thread blocked for good in ``PubSub.parse_response`` on a
connection that redis-py had reconnected to the new primary without subscribing again. A
silent worker's report carries its py-spy stacks (with locals), its sockets and the
primary's CLIENT LIST, which is how that was found.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from steady import Producer, primary_with_replica, runs

from harness import envs
from harness.redis_procs import RedisFleet
from harness.worker import Worker

HERE = Path(__file__).resolve().parent
TASKS = 300
PACE = 0.05  # s between publishes: about 15 s of stream, the stop comes after 3 s
STOP_AFTER = 3.0
VISIBILITY = 12  # s; CELERY_VISIBILITY_TIMEOUT
RESTORE_INTERVAL = 2  # s; unacked_restore_interval
# A message a worker held when the primary went away comes back once its visibility
# timeout has run out, at the next sweep; twice that, plus a margin for a loaded machine.
ALL_RAN_WITHIN = 2 * (VISIBILITY + RESTORE_INTERVAL) + 10
PING_WITHIN = 30.0  # s after the failover; a worker reconnects in a few seconds
FETCH = {"kombu": {}, "reliable": {"CELERY_FLEET_RELIABLE_FETCH": "true"}}
# Tasks that may never run. Kombu's own transport pops a message (BRPOP) before it records
# it as unacknowledged, with a second command on another connection: a message popped as
# the primary stops can be gone (docs/delivery.md; celery/kombu#305 asks for the fix). Each
# worker has one BRPOP in flight, so at most one per worker. Seen: 1 task lost in 3 of 12
# loaded runs with Kombu's transport once task events were off by default (faster
# consumption, more pops in flight at the stop), 0 in 20 runs before. Reliable fetch closes
# the window: none.
MAY_BE_LOST = {"kombu": 2, "reliable": 0}


def stacks(worker: Worker, fleet: RedisFleet) -> str:
    """Where a silent worker is: py-spy dumps of it (with locals: which connection) and
    its pool children, and its TCP sockets next to the fleet's ports."""
    assert worker.proc is not None
    pids = [worker.proc.pid]
    try:
        children = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children").read_text()
        pids += [int(p) for p in children.split()]
    except OSError:
        pass
    parts = [
        "--- fleet: "
        + ", ".join(f"{n.name}={n.port}{'' if n.alive else ' (down)'}" for n in fleet.nodes)
    ]
    sockets = subprocess.run(
        ["ss", "-tanpi"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.splitlines()
    parts.append(
        f"--- sockets of {worker.proc.pid}\n"
        + "\n".join(line for line in sockets if f"pid={worker.proc.pid}," in line)
    )
    for node in fleet.nodes:
        if node.kind == "redis" and node.alive:
            try:
                clients = fleet.client(node).execute_command("CLIENT", "LIST")
            except Exception as exc:  # the report must not fail the report
                clients = repr(exc)
            parts.append(f"--- clients of {node!r}\n{clients}")
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return "\n".join([*parts, "(py-spy not installed)"])
    for pid in pids:
        extra = ["--locals"] if pid == worker.proc.pid else []
        dump = subprocess.run(
            [str(spy), "dump", "--pid", str(pid), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        parts.append(f"--- py-spy {pid}\n{dump.stdout}{dump.stderr[-300:]}")
    return "\n".join(parts)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fetch", ["kombu", "reliable"])
def test_graceful_primary_stop_loses_no_task_and_workers_answer(
    redis_fleet: RedisFleet,
    start_worker,
    celery_client,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    fetch: str,
) -> None:
    primary_with_replica(redis_fleet)
    env = {
        **envs.sentinel(redis_fleet),
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY),
        "CELERY_TASK_SOFT_TIME_LIMIT": "6",
        "CELERY_TASK_TIME_LIMIT": "8",
        "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(
            {
                "unacked_restore_interval": RESTORE_INTERVAL,
                "unacked_restore_throttle": 1,
                "inflight_timeout": 5,
            }
        ),
        **FETCH[fetch],
    }
    marks = tmp_path / "marks"
    workers = [
        start_worker(env, app="faults_app", pythonpath=[HERE], concurrency=2) for _ in range(2)
    ]
    client = celery_client(env)

    started = time.monotonic()
    producer = Producer(client, marks, TASKS, PACE).start()
    time.sleep(STOP_AFTER)
    # Under the two-lane CI load the first task has run later than STOP_AFTER (seen twice):
    # the stop waits for it, so that it always lands in a flowing stream.
    redis_fleet.wait_for(lambda: runs(marks) or None, "a first task before the stop", timeout=30)
    primary = redis_fleet.primary()
    stopped_at = time.monotonic()
    redis_fleet.stop(primary)  # SIGTERM; returns once the process has exited
    exited = time.monotonic() - stopped_at
    redis_fleet.wait_for_failover(primary)
    failover = time.monotonic() - stopped_at
    assert producer.done.wait(timeout=120), "the producer did not finish"
    published, errors = producer.published, producer.errors
    produced_at = time.monotonic()
    counts = producer.wait_all_ran(ALL_RAN_WITHIN)
    all_ran = time.monotonic() - produced_at
    lost = [t for t in published if counts[t] == 0]

    silent = []
    for worker in workers:
        ping_deadline = time.monotonic() + PING_WITHIN
        while True:
            replies = client.control.ping(destination=[worker.nodename], timeout=2.0)
            if replies:
                break
            if time.monotonic() > ping_deadline:
                silent.append(worker)
                break
    report = "".join(
        f"\n--- worker {w.nodename} does not answer ping\n{w.log_tail(15)}\n"
        + stacks(w, redis_fleet)
        for w in silent
    )

    record_property(f"{fetch}: seconds from SIGTERM to exit", round(exited, 1))
    record_property(f"{fetch}: seconds from SIGTERM to new primary", round(failover, 1))
    record_property(f"{fetch}: tasks published", len(published))
    record_property(f"{fetch}: publishes that failed", len(errors))
    record_property(f"{fetch}: lost", len(lost))
    record_property(f"{fetch}: ran more than once", sum(1 for t in published if counts[t] > 1))
    record_property(f"{fetch}: seconds from last publish to all ran", round(all_ran, 1))
    record_property(f"{fetch}: test seconds", round(time.monotonic() - started))
    for worker in workers:
        assert worker.proc is not None
        assert worker.proc.poll() is None, worker.log_tail()
    assert not silent, report
    assert len(published) >= TASKS - 10, errors[:5]
    assert len(lost) <= MAY_BE_LOST[fetch], (
        f"{len(lost)} of {len(published)} tasks never ran within {ALL_RAN_WITHIN} s "
        f"of the last publish: {lost[:10]}"
    )
