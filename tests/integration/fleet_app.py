"""The Celery app that the integration tests' workers run.

Deliberately nothing but ``config_from_object("celery_fleet.celeryconfig")``: the worker
learns everything about Redis from its environment, as a deployed app does.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery
from celery.utils.log import get_task_logger

from celery_fleet.settings import masked

app = Celery("fleet_app")
app.config_from_object("celery_fleet.celeryconfig")
task_log = get_task_logger(__name__)


@app.task(name="fleet.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="fleet.echo")
def echo(value: Any) -> Any:
    return value


@app.task(name="fleet.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="fleet.record")
def record(token: str, path: str) -> str:
    """Append ``token`` to ``path``: one line per run, so duplicates and losses can be
    counted outside Redis (whose writes a failover may lose)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{token}\n".encode())
    finally:
        os.close(fd)
    return token


@app.task(name="fleet.slow_record")
def slow_record(token: str, path: str, seconds: float) -> str:
    """Record ``start <token>``, sleep, record ``end <token>``: a long task whose runs,
    interrupted or complete, can be counted."""
    record(f"start:{token}", path)
    time.sleep(seconds)
    record(f"end:{token}", path)
    return token


@app.task(name="fleet.settings")
def settings(keys: list[str]) -> dict[str, Any]:
    """The settings this worker really runs with, masked like ``celery-fleet settings``.
    Read through ``app.conf`` attributes, so Celery's own overrides (environment
    variables it reads itself) show."""
    conf = {key: getattr(app.conf, key) for key in keys}
    result: dict[str, Any] = json.loads(json.dumps(masked(conf), default=str))
    return result


@app.task(name="fleet.say")
def say(text: str) -> str:
    """Log ``text`` through Celery's task logger (a log line with the task's id and name)."""
    task_log.warning("say: %s", text)
    return text


class Boom(RuntimeError):
    """What ``fleet.fail`` raises: a type to find in the worker's log."""


@app.task(name="fleet.fail")
def fail(text: str) -> None:
    raise Boom(text)
