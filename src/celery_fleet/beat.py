"""A liveness key for celery beat, so that "exactly one beat" can be checked from outside.

Beat answers no ``inspect ping``. When it runs with ``celery_fleet.celeryconfig``, a daemon
thread keeps ``celery-fleet:beat:<hostname>`` alive in the broker (TTL 60 s, refreshed every
20 s). ``celery-fleet doctor`` counts these keys: none means no beat, two mean every
periodic task runs twice, unless the beats run under the lock of ``celery_fleet.beatlock``
(CELERY_FLEET_BEAT_LOCK=true): then one sends and the others stand by.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from celery.signals import beat_init

KEY_PREFIX = "celery-fleet:beat:"
TTL = 60
INTERVAL = 20.0

log = logging.getLogger("celery_fleet.beat")


def key(hostname: str | None = None) -> str:
    return KEY_PREFIX + (hostname or socket.gethostname())


def _beat(app: Any, stop: threading.Event) -> None:
    name = key()
    while not stop.is_set():
        try:
            with app.connection_for_write() as conn:
                client = conn.default_channel.client
                value = {"pid": os.getpid(), "at": time.time()}
                client.set(name, json.dumps(value), ex=TTL)
        except Exception as exc:  # a failover must not stop the heartbeat for good
            log.warning("beat liveness key %s not written (%s); retrying", name, exc)
        stop.wait(INTERVAL)


def _on_beat_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    stop = threading.Event()
    thread = threading.Thread(
        target=_beat, args=(app, stop), name="celery-fleet-beat-liveness", daemon=True
    )
    thread.start()


def install() -> None:
    beat_init.connect(_on_beat_init, weak=False, dispatch_uid="celery_fleet.beat")


def alive(app: Any, hostname: str | None = None) -> bool:
    """Whether the liveness key of beat on ``hostname`` (default: this host) is in the broker."""
    with app.connection_for_read() as conn:
        return bool(conn.default_channel.client.exists(key(hostname)))


def main() -> int:
    """``python -m celery_fleet.beat``: exit 0 when this host's beat keeps its key alive (a
    container healthcheck), 1 when not, 2 when the broker cannot be asked."""
    from celery import Celery

    app = Celery("celery-fleet-beat-check")
    app.config_from_object("celery_fleet.celeryconfig")
    try:
        return 0 if alive(app) else 1
    except Exception as exc:
        print(f"cannot ask the broker for {key()}: {type(exc).__name__}")  # no URL, no secret
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
