"""An ETA/countdown beyond the visibility timeout runs the task twice (kombu issue 337), so
celery_fleet warns when such a task is published. Both halves, against real parts."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from celery_fleet import guards
from celery_fleet.settings import load
from harness import envs
from harness.redis_procs import RedisFleet
from harness.worker import MakeClient, StartWorker

SHORT = {
    "CELERY_VISIBILITY_TIMEOUT": "3",
    "CELERY_TASK_SOFT_TIME_LIMIT": "1",
    "CELERY_TASK_TIME_LIMIT": "2",
    # Sweep the unacked index every second instead of every ~100 s.
    "CELERY_BROKER_TRANSPORT_OPTIONS": '{"unacked_restore_interval": 1, '
    '"unacked_restore_throttle": 1}',
}


@pytest.mark.timeout(90)
def test_countdown_beyond_visibility_timeout_runs_twice_and_is_warned_about(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = redis_fleet.server("tls")
    env = {"CELERY_BROKER_URL": envs.url(redis_fleet, node, 0), **envs.tls(redis_fleet), **SHORT}
    runlog = tmp_path / "runs.log"
    start_worker(env, pool="threads", concurrency=2)
    client = celery_client(env)
    guards.install(load(env))  # what importing celery_fleet.celeryconfig does in an app
    try:
        with caplog.at_level(logging.WARNING, logger="celery_fleet.guards"):
            due_soon = client.send_task("fleet.record", args=("soon", str(runlog)), countdown=1)
            too_far = client.send_task("fleet.record", args=("far", str(runlog)), countdown=8)
        warned = [r.getMessage() for r in caplog.records if r.name == "celery_fleet.guards"]
        assert len(warned) == 1, warned
        assert too_far.id in warned[0]
        assert "CELERY_VISIBILITY_TIMEOUT" in warned[0]

        assert due_soon.get(timeout=30) == "soon"
        assert too_far.get(timeout=30) == "far"
        time.sleep(3)  # a second copy, if any, runs at the same ETA
        runs = runlog.read_text().split()
        assert runs.count("soon") == 1
        # The trap the warning is about: Redis handed the held message out again.
        assert runs.count("far") >= 2, f"ran {runs.count('far')} time(s); kombu 337 fixed?"
    finally:
        guards.install(load({**env, "CELERY_VISIBILITY_TIMEOUT": "3600"}))
