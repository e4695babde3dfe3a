"""The benchmarks' Celery app: configured only by celery_fleet.celeryconfig, like a user's."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

if os.environ.get("BENCH_WITHOUT_FAILOVER_GUARDS"):
    # The throughput part's "failover guards off" row only: celery_fleet.install() then
    # leaves Kombu's Redis channel unpatched (celery_fleet.patches, celery_fleet.fanout).
    from celery_fleet import fanout, patches

    patches.guard_restore_unacked = lambda: None
    fanout.guard_fanout_read = lambda: None

app = Celery("bench_app")
app.config_from_object("celery_fleet.celeryconfig")


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.mark", bind=True)
def mark(self: Any, token: int, path: str) -> int:
    """Append "token time task-id redelivered pid" to ``path``: runs are counted outside
    Redis. Two runs of one token with the same task id are one message delivered twice;
    with different ids, the producer published it twice. ``redelivered`` is Kombu's flag
    on a message restored from its unacked hash (visibility timeout, dead connection)."""
    info = self.request.delivery_info or {}
    line = f"{token} {time.time():.6f} {self.request.id} {int(bool(info.get('redelivered')))} "
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return token
