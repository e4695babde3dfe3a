"""A real worker logs one JSON object per line (celery_fleet.logs), with the task's id and
name on its lines, the exception and traceback on a failure, and no password; with
CELERY_FLEET_LOG_FORMAT=text it logs Celery's own text format."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import envs
from harness.redis_procs import RedisFleet, env_without_secrets
from harness.worker import MakeClient, StartWorker, Worker, message

TIMEOUT = 30
INTEGRATION = Path(__file__).resolve().parent


def fleet_env(fleet: RedisFleet) -> dict[str, str]:
    node = fleet.server("tls")
    return {"CELERY_BROKER_URL": envs.url(fleet, node, 0), **envs.tls(fleet, "BROKER")}


def after_ready(worker: Worker) -> list[str]:
    """The log lines after the worker's "ready." line (the banner, printed before, is text)."""
    lines = worker.log().splitlines()
    ready = [i for i, line in enumerate(lines) if message(line) == f"{worker.nodename} ready."]
    assert ready, worker.log_tail()
    return lines[ready[0] + 1 :]


def wait_for(worker: Worker, text: str) -> None:
    """Until ``text`` is in the log (a result is stored before the line is flushed)."""
    deadline = time.monotonic() + 10
    while text not in worker.log():
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{worker.log_tail()}"
        time.sleep(0.1)


def test_worker_logs_json_lines_with_the_task_and_no_secret(
    redis_fleet: RedisFleet, start_worker: StartWorker, celery_client: MakeClient
) -> None:
    env = fleet_env(redis_fleet)
    worker = start_worker(env, pool="prefork", concurrency=1)  # the default: json
    client = celery_client(env)
    token = uuid.uuid4().hex
    said = client.send_task("fleet.say", args=(f"hello {token}",))
    assert said.get(timeout=TIMEOUT) == f"hello {token}"
    # A failure whose argument, message and traceback hold the broker URL and its password.
    failed = client.send_task("fleet.fail", args=(f"boom {token} {env['CELERY_BROKER_URL']}",))
    with pytest.raises(Exception, match=f"boom {token}"):
        failed.get(timeout=TIMEOUT)
    wait_for(worker, f"fleet.fail[{failed.id}] raised")

    records: list[dict[str, Any]] = []
    for line in after_ready(worker):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n{worker.log_tail()}")
    for record in records:
        assert {"timestamp", "level", "logger", "message", "hostname"} <= record.keys()
        assert record["worker"] == worker.nodename
        assert "data" not in record  # Celery's extra={"data": context}: the task's args

    (line,) = [r for r in records if r["message"] == f"say: hello {token}"]
    assert line["task_id"] == said.id
    assert line["task_name"] == "fleet.say"
    assert line["queue"] == "default"
    assert line["retries"] == 0
    assert line["level"] == "WARNING"
    received = [r for r in records if r["message"].endswith("received")]
    assert {r["task_id"] for r in received} == {said.id, failed.id}

    (failure,) = [r for r in records if r.get("task_id") == failed.id and r["level"] == "ERROR"]
    assert failure["task_name"] == "fleet.fail"
    assert failure["exc_type"] == "Boom"
    assert failure["traceback"].startswith("Traceback (most recent call last):")
    assert f"Boom: boom {token}" in failure["traceback"]

    log = worker.log()
    for secret in dataclasses.astuple(redis_fleet.secrets):
        assert secret not in log


def test_text_format_is_celerys_own(
    redis_fleet: RedisFleet, start_worker: StartWorker, celery_client: MakeClient
) -> None:
    env = fleet_env(redis_fleet)
    worker = start_worker({**env, "CELERY_FLEET_LOG_FORMAT": "text"}, concurrency=1)
    client = celery_client(env)
    said = client.send_task("fleet.say", args=("plain",))
    assert said.get(timeout=TIMEOUT) == "plain"
    # Celery's worker_task_log_format: "[time: LEVEL/process] name[id]: message".
    wait_for(worker, f"fleet.say[{said.id}]: say: plain")
    lines = worker.log().splitlines()
    assert any(line.rstrip().endswith(f"{worker.nodename} ready.") for line in lines)
    assert not [line for line in lines if line.startswith("{")]


def test_beat_logs_json_lines(redis_fleet: RedisFleet, tmp_path: Path) -> None:
    env = {**env_without_secrets(), **fleet_env(redis_fleet), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INTEGRATION), env.get("PYTHONPATH")]))
    logfile = tmp_path / "beat.log"
    command = [sys.executable, "-m", "celery", "-A", "fleet_app", "beat", "--loglevel", "INFO"]
    command += ["--schedule", str(tmp_path / "schedule")]
    with logfile.open("ab") as out:
        beat = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while "beat: Starting" not in logfile.read_text():
            assert beat.poll() is None, logfile.read_text()
            assert time.monotonic() < deadline, logfile.read_text()
            time.sleep(0.2)
    finally:
        beat.terminate()
        beat.wait(timeout=TIMEOUT)
    lines = logfile.read_text().splitlines()
    (starting,) = [json.loads(line) for line in lines if "beat: Starting" in line]
    assert starting["logger"] == "celery.beat"
    assert "worker" not in starting
    assert starting["hostname"]
    for secret in dataclasses.astuple(redis_fleet.secrets):
        assert secret not in logfile.read_text()
