"""Small, deterministic tasks: results a test can check exactly."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

from demo_app.app import app


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def xsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def where() -> str:
    """The worker container that ran the task (its hostname)."""
    return socket.gethostname()


@app.task
def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


@app.task
def heartbeat() -> str:
    """Scheduled by beat; the worker log shows it succeeding."""
    return datetime.now(UTC).isoformat(timespec="seconds")
