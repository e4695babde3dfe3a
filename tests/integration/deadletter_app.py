"""The Celery app of the dead-letter tests: tasks that fail in every way a task can.

Configured like every deployed app (``celery_fleet.celeryconfig``: environment only).
"""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from celery_fleet.deadletter.capture import REQUEUED_FROM

app = Celery("deadletter_app")
app.config_from_object("celery_fleet.celeryconfig")


def _runs(path: str, note: str = "") -> int:
    """Append a line (``run``, or ``run <note>``) to ``path``; the number of runs so far,
    this one included."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"run {note}".rstrip().encode() + b"\n")
    finally:
        os.close(fd)
    with open(path, encoding="utf-8") as runs:
        return len(runs.read().splitlines())


class Boom(RuntimeError):
    pass


@app.task(name="dl.always_fails", autoretry_for=(Boom,), max_retries=2, default_retry_delay=0)
def always_fails(path: str, note: str = "") -> None:
    """Raises every time: retried twice, then dead."""
    raise Boom(f"run {_runs(path)} failed ({note})")


@app.task(name="dl.fails_once", bind=True, max_retries=3)
def fails_once(self: object, path: str) -> str:
    """Fails on its first run, retries, succeeds: never dead."""
    if _runs(path) == 1:
        raise self.retry(exc=Boom("first run fails"), countdown=0)  # type: ignore[attr-defined]
    return "ok"


@app.task(name="dl.fails_until", bind=True)
def fails_until(self: object, path: str, allowed: str) -> str:
    """Raises while the file ``allowed`` does not exist (no retries): dead until fixed. A
    requeued run writes the id it was requeued from (the header) into ``path``."""
    _runs(path, getattr(self.request, REQUEUED_FROM, None) or "")
    if not os.path.exists(allowed):
        raise Boom("not allowed yet")
    return "ok"


@app.task(name="dl.too_slow", time_limit=2, soft_time_limit=1)
def too_slow(path: str) -> None:
    """Ignores the soft limit and is killed by the hard one."""
    _runs(path)
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        time.sleep(30)


@app.task(name="dl.fails_later")
def fails_later(path: str, seconds: float) -> None:
    """Records its start, sleeps, then raises (no retries): dies when the test wants."""
    _runs(path)
    time.sleep(seconds)
    raise Boom(f"failed after {seconds} s")
