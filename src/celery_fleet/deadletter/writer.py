"""Append an entry to the stream without ever failing the worker.

The connection comes from the app's own broker pool (``app.pool``), so TLS, ACL user and
Sentinel discovery are the broker's. When Redis does not answer (a failover, a restart),
the write is retried with a doubling pause (0.2 s up to 1 s) for ``retry_for`` seconds
(15 by default: long enough for a Sentinel failover with the role's 5 s down-after, as
Celery's publish and result retries here); then the entry is given up with an ERROR log
line (task id, name, reason) and ``counters()["dropped"]`` goes up. The counters are per
process (each prefork child has its own).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .config import Config, stream_key
from .entry import Entry

log = logging.getLogger("celery_fleet.deadletter")
POOL_TIMEOUT = 5.0
MAX_PAUSE = 1.0

_lock = threading.Lock()
_counters = {"written": 0, "dropped": 0}


def counters() -> dict[str, int]:
    """Entries written and dropped by this process."""
    with _lock:
        return dict(_counters)


def _count(name: str) -> None:
    with _lock:
        _counters[name] += 1


def write(app: Any, entry: Entry, config: Config) -> str | None:
    """XADD ``entry``; its stream ID, or None when Redis could not take it."""
    key = stream_key(config.key, app.conf.broker_transport_options)
    fields = entry.to_fields()
    pause = config.backoff
    last: BaseException | None = None
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            with app.pool.acquire(block=True, timeout=POOL_TIMEOUT) as conn:
                # One connection attempt per round: the rounds are the retry here, not
                # Kombu's connection retry (which waits up to broker_connection_timeout).
                conn.ensure_connection(max_retries=0)
                client = conn.default_channel.client
                raw = client.xadd(key, fields, maxlen=config.maxlen, approximate=True)
            _count("written")
            return raw.decode() if isinstance(raw, bytes) else str(raw)
        # Anything: a dead letter that cannot be written must not become a second failure.
        except Exception as exc:
            last = exc
            if time.monotonic() - started + pause > config.retry_for:
                break
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
    _count("dropped")
    log.error(
        "dead letter not written after %d attempts in %.1f s (%s: %s): task %s[%s] (%s) "
        "is not in %s",
        attempt,
        time.monotonic() - started,
        type(last).__name__,
        last,
        entry.name or "?",
        entry.task_id or "?",
        entry.reason,
        key,
    )
    return None
