"""The typed, frozen result of reading the environment (:func:`build` in ``assemble``)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .process import BeatLock
from .tls import Tls


@dataclass(frozen=True, slots=True)
class Settings:
    """What the environment means, checked. ``celery()`` is the dict Celery reads.

    URLs are normalised (``ssl_*`` moved into the TLS options, ``socket://`` spelled
    ``redis+socket://``) and carry their passwords: they are left out of ``repr``.
    """

    broker_url: str = field(repr=False)
    # None when results are off (CELERY_RESULT_BACKEND=disabled).
    result_backend: str | None = field(repr=False)
    broker_tls: Tls
    # None when results are off.
    backend_tls: Tls | None
    # "celery_fleet.transport:..." with reliable fetch, else Kombu's (None: by URL scheme).
    broker_transport: str | None
    queues: tuple[str, ...]
    # Redis brokers only (None with RabbitMQ, which has no visibility timeout).
    visibility_timeout: int | None
    # The longest hard time limit a worker of this host enforces, if any is set.
    longest_time_limit: int | None
    reliable_fetch: bool
    beat_lock: BeatLock
    log_format: str
    # The whole Celery configuration, read-only; hand out copies through celery().
    values: Mapping[str, Any] = field(repr=False)

    def celery(self) -> dict[str, Any]:
        """Celery's settings (lowercase names): a fresh copy each call, the same dict
        ``load()`` returns."""
        return copy.deepcopy(dict(self.values))
