"""Faults a deployment must survive, against real redis-server/redis-sentinel processes
and real workers: SIGKILL mid-task, a primary crash with AOF, a lost Sentinel."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from harness import envs, render
from harness.redis_procs import RedisFleet

HERE = Path(__file__).resolve().parent


def lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


def wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def tls_env(fleet: RedisFleet, **extra: str) -> dict[str, str]:
    primary = fleet.server("primary")
    return {
        "CELERY_BROKER_URL": envs.url(fleet, primary, 0),
        "CELERY_RESULT_BACKEND": envs.url(fleet, primary, 1),
        **envs.tls(fleet),
        **extra,
    }


def test_pool_child_killed_mid_task_runs_the_task_again(
    redis_fleet: RedisFleet, start_worker, celery_client, tmp_path: Path
) -> None:
    env = tls_env(redis_fleet)
    marks = tmp_path / "marks"
    start_worker(env, app="faults_app", pythonpath=[HERE], concurrency=1)
    client = celery_client(env)
    token = uuid.uuid4().hex
    result = client.send_task("faults.slow_mark", args=(token, str(marks), 2.0))
    wait_until(lambda: any(r[0] == "start" for r in lines(marks)), "the task to start", 30)
    child = int(lines(marks)[0][2])
    os.kill(child, signal.SIGKILL)  # the OOM killer, a segfault: acks late + reject on lost
    assert result.get(timeout=60) == token
    rows = lines(marks)
    assert [r[0] for r in rows].count("start") == 2, rows
    assert [r[0] for r in rows].count("done") == 1, rows


def test_whole_worker_killed_mid_task_another_worker_runs_it(
    redis_fleet: RedisFleet, start_worker, celery_client, tmp_path: Path
) -> None:
    # The unacked message comes back after the visibility timeout; keep it short here.
    env = tls_env(
        redis_fleet,
        CELERY_VISIBILITY_TIMEOUT="5",
        CELERY_TASK_TIME_LIMIT="4",
        CELERY_TASK_SOFT_TIME_LIMIT="3",
    )
    marks = tmp_path / "marks"
    first = start_worker(env, app="faults_app", pythonpath=[HERE], concurrency=1)
    client = celery_client(env)
    token = uuid.uuid4().hex
    result = client.send_task("faults.slow_mark", args=(token, str(marks), 2.0))
    wait_until(lambda: any(r[0] == "start" for r in lines(marks)), "the task to start", 30)
    first.kill()  # SIGKILL to the whole process group: the host died
    start_worker(env, app="faults_app", pythonpath=[HERE], concurrency=1)
    assert result.get(timeout=90) == token
    rows = lines(marks)
    assert [r[0] for r in rows].count("done") == 1, rows
    assert len({r[2] for r in rows if r[0] == "start"}) == 2, "ran again, in another process"


def test_queued_tasks_survive_a_primary_crash_with_aof(
    redis_fleet: RedisFleet, start_worker, celery_client, tmp_path: Path
) -> None:
    # The redis role's persistence defaults (the harness turns them off elsewhere): AOF with
    # fsync every second, plus RDB.
    defaults = render.role_defaults("redis")
    persistence = {k: defaults[k] for k in ("redis_appendonly", "redis_appendfsync", "redis_save")}
    primary = redis_fleet.server("primary", variables=persistence)
    env = {
        "CELERY_BROKER_URL": envs.url(redis_fleet, primary, 0),
        "CELERY_RESULT_BACKEND": envs.url(redis_fleet, primary, 1),
        **envs.tls(redis_fleet),
    }
    marks = tmp_path / "marks"
    client = celery_client(env)
    tokens = [f"t{i}" for i in range(100)]
    for token in tokens:
        client.send_task("faults.mark", args=(token, str(marks)))
    assert redis_fleet.client(primary).llen("default") == 100
    time.sleep(1.5)  # one fsync period
    redis_fleet.kill(primary)  # SIGKILL: no clean shutdown, no final save
    redis_fleet.restart(primary)
    assert redis_fleet.client(primary).llen("default") == 100
    start_worker(env, app="faults_app", pythonpath=[HERE])
    wait_until(lambda: len(lines(marks)) >= 100, "100 tasks to run", 60)
    assert sorted(r[1] for r in lines(marks)) == sorted(tokens)


def test_failover_works_with_one_sentinel_of_three_lost(
    redis_fleet: RedisFleet, start_worker, celery_client, tmp_path: Path
) -> None:
    primary = redis_fleet.server("redis-1")
    redis_fleet.server("redis-2", replica_of=primary)
    sentinels = redis_fleet.sentinels(primary)
    # Reliable fetch: with Kombu's transport an ack that fails on the dead primary keeps its
    # prefetch slot, and a worker whose slots all hold failed acks never fetches again
    # (seen in CI: the task after the failover never ran; docs/delivery.md). This test is
    # about losing a Sentinel, so it runs on the transport that frees the slot.
    env = {**envs.sentinel(redis_fleet), "CELERY_FLEET_RELIABLE_FETCH": "true"}
    marks = tmp_path / "marks"
    worker = start_worker(env, app="faults_app", pythonpath=[HERE])
    client = celery_client(env)
    assert client.send_task("faults.mark", args=("before", str(marks))).get(timeout=30)
    redis_fleet.kill(sentinels[0])  # the first Sentinel every client tries
    redis_fleet.kill(primary)
    new = redis_fleet.wait_for_failover(primary)
    assert new is not primary
    result = client.send_task("faults.mark", args=("after", str(marks)))
    assert result.get(timeout=60) == "after"
    assert [r[1] for r in lines(marks)] == ["before", "after"]
    # Without celery_fleet.patches, Kombu crashed the worker in about one failover in three.
    assert worker.proc is not None
    assert worker.proc.poll() is None, worker.log_tail()
