"""Tell a webhook that dead letters arrived, at most once per interval per process.

``CELERY_FLEET_DEAD_LETTER_WEBHOOK`` is a URL that gets a JSON POST for the first new entry,
then none for ``CELERY_FLEET_DEAD_LETTER_WEBHOOK_INTERVAL`` seconds (60): the next call says
how many entries it did not report (``suppressed``). The POST runs in a daemon thread with
a 5 s timeout, so a slow or dead webhook never holds up the worker; a failed call is
logged (without the URL, which may hold a token). The payload names the task and the
error, never its arguments.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from .entry import Entry

log = logging.getLogger("celery_fleet.deadletter")
TIMEOUT = 5.0


class Notifier:
    def __init__(
        self,
        url: str,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        post: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.url = url
        self.interval = interval
        self._clock = clock
        self._post = post or _post_in_thread
        self._lock = threading.Lock()
        self._last: float | None = None
        self._suppressed = 0

    def notify(self, key: str, entry_id: str, item: Entry) -> bool:
        """Post about this entry unless a post went out less than ``interval`` ago."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self.interval:
                self._suppressed += 1
                return False
            self._last, suppressed, self._suppressed = now, self._suppressed, 0
        payload = {
            "event": "dead-letter",
            "key": key,
            "entry_id": entry_id,
            "task_id": item.task_id,
            "name": item.name,
            "reason": item.reason,
            "exc_type": item.exc_type,
            "hostname": item.hostname,
            "suppressed": suppressed,
        }
        self._post(self.url, payload)
        return True


def _post_in_thread(url: str, payload: dict[str, Any]) -> None:
    thread = threading.Thread(
        target=_post, args=(url, payload), name="celery-fleet-dead-letter-webhook", daemon=True
    )
    thread.start()


def _post(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked: http or https)
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "celery-fleet"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            response.read(1024)
    except Exception as exc:
        log.warning("dead-letter webhook call failed (%s: %s)", type(exc).__name__, exc)


_notifiers: dict[int, Notifier] = {}


def notifier(url: str, interval: float) -> Notifier:
    """This process's notifier (each prefork child has its own)."""
    pid = os.getpid()
    found = _notifiers.get(pid)
    if found is None or found.url != url or found.interval != interval:
        found = _notifiers[pid] = Notifier(url, interval)
    return found
