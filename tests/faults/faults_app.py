"""The fault suite's Celery app: only celery_fleet.celeryconfig, like a user's."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("faults_app")
app.config_from_object("celery_fleet.celeryconfig")


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@app.task(name="faults.slow_mark")
def slow_mark(token: str, path: str, seconds: float) -> str:
    """Log "start TOKEN PID", sleep, log "done TOKEN": runs and crashes are countable."""
    _append(path, f"start {token} {os.getpid()}")
    time.sleep(seconds)
    _append(path, f"done {token}")
    return token


@app.task(name="faults.mark")
def mark(token: str, path: str) -> str:
    _append(path, f"done {token}")
    return token
