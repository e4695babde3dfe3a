"""A real worker logs one JSON object per line (celery_fleet.logs), with the task's id and
name on its lines, the exception and traceback on a failure, and no password; with
CELERY_FLEET_LOG_FORMAT=text it logs Celery's own text format; role celery's logrotate
config rotates a running worker's log file."""

from __future__ import annotations

import dataclasses
import getpass
import grp
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import envs, render
from harness.redis_procs import RedisFleet, env_without_secrets
from harness.worker import MakeClient, StartWorker, Worker, message

TIMEOUT = 30
INTEGRATION = Path(__file__).resolve().parent
ROLES = INTEGRATION.parents[1] / "roles"


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


def logrotate(conf: Path, state: Path) -> None:
    result = subprocess.run(
        ["logrotate", "--force", "--state", str(state), str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_roles_logrotate_config_rotates_a_running_workers_log(
    redis_fleet: RedisFleet, start_worker: StartWorker, celery_client: MakeClient, tmp_path: Path
) -> None:
    """celery_log_destination: file. Role celery's /etc/logrotate.d/celery-fleet (rendered
    from its template) run by the real logrotate, twice, on the log of a running worker that
    appends to it: copytruncate leaves the worker writing to the same, emptied file (no
    restart, no hole of NUL bytes where the old content was), delaycompress keeps the newest
    rotated file plain and compresses the one before."""
    if shutil.which("logrotate") is None:
        pytest.fail("logrotate is not installed: run .ci/bootstrap.sh", pytrace=False)
    env = fleet_env(redis_fleet)
    worker = start_worker(env, concurrency=1)
    client = celery_client(env)
    log = worker.logfile
    conf = tmp_path / "celery-fleet"
    conf.write_text(
        render.render_file(
            ROLES / "celery" / "templates" / "logrotate.j2",
            role="celery",
            variables={
                "celery_log_dir": str(log.parent),
                "celery_user": getpass.getuser(),
                "celery_group": grp.getgrgid(os.getgid()).gr_name,
                "ansible_managed": "Managed by Ansible",
            },
        )
    )
    conf.chmod(0o644)  # logrotate ignores a config that others may write
    state = tmp_path / "logrotate.state"

    tokens = [uuid.uuid4().hex for _ in range(3)]
    client.send_task("fleet.say", args=(tokens[0],)).get(timeout=TIMEOUT)
    wait_for(worker, f"say: {tokens[0]}")
    logrotate(conf, state)
    first = log.with_name(log.name + ".1")
    assert tokens[0] in first.read_text()
    assert tokens[0] not in log.read_text()

    client.send_task("fleet.say", args=(tokens[1],)).get(timeout=TIMEOUT)
    wait_for(worker, f"say: {tokens[1]}")
    assert "\0" not in log.read_text(), "the worker wrote past a hole: not appending"
    logrotate(conf, state)
    assert tokens[1] in first.read_text()
    with gzip.open(log.with_name(log.name + ".2.gz"), "rt") as older:
        assert tokens[0] in older.read()

    client.send_task("fleet.say", args=(tokens[2],)).get(timeout=TIMEOUT)
    wait_for(worker, f"say: {tokens[2]}")
    assert worker.proc is not None
    assert worker.proc.poll() is None  # the same process all along
