"""Publish-time guards for what cannot be checked when the settings load.

Kombu's Redis transport redelivers any message that is not acked within
``visibility_timeout``. A task published with an ETA or countdown further away than that is
held unacked by a worker until it is due, so Redis hands it to another worker meanwhile and
it runs more than once (kombu issue 337). We cannot forbid such tasks, but we say so loudly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from celery.signals import before_task_publish

log = logging.getLogger("celery_fleet.guards")
_state: dict[str, float] = {}


def eta_too_far(eta: str | None, visibility_timeout: float, now: datetime | None = None) -> bool:
    """Whether an ISO-8601 ETA lies beyond the visibility timeout from ``now``."""
    if not eta:
        return False
    when = datetime.fromisoformat(eta)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return (when - now).total_seconds() > visibility_timeout


def _check_eta(
    sender: str | None = None, headers: Mapping[str, Any] | None = None, **_: Any
) -> None:
    limit = _state.get("visibility_timeout")
    eta = (headers or {}).get("eta")
    if limit is not None and eta_too_far(eta, limit):
        log.warning(
            "task %s (id %s) has an ETA of %s, more than the visibility timeout (%s s) "
            "away: Redis will deliver it again before it is due and it will run twice. "
            "Raise CELERY_VISIBILITY_TIMEOUT above your longest ETA/countdown, or schedule "
            "it with beat instead.",
            sender,
            (headers or {}).get("id"),
            eta,
            int(limit),
        )


def install(settings: Mapping[str, Any]) -> None:
    """Remember the visibility timeout and connect the publish-time check (once)."""
    options = settings.get("broker_transport_options") or {}
    _state["visibility_timeout"] = float(options.get("visibility_timeout", 3600))
    before_task_publish.connect(_check_eta, weak=False, dispatch_uid="celery_fleet.eta")
