"""The benchmarks' Celery app: configured only by celery_fleet.celeryconfig, like a user's."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("bench_app")
app.config_from_object("celery_fleet.celeryconfig")


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.mark")
def mark(token: int, path: str) -> int:
    """Append "token time" to ``path``: runs are counted outside Redis."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{token} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
    return token
