"""How the worker and beat processes run: the log format, beat's high-availability lock."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .defaults import PREFIX
from .parse import CELERY_OPTIONS, SettingsError, parse_bool, parse_number

# How workers and beat log: one JSON object per line (celery_fleet.logs), or Celery's text.
LOG_FORMAT_VAR = "CELERY_FLEET_LOG_FORMAT"
LOG_FORMATS = ("json", "text")
# Beat high availability (celery_fleet.beatlock): a lock in the broker, standby beats.
BEAT_LOCK_VAR = "CELERY_FLEET_BEAT_LOCK"
BEAT_LOCK_TTL_VAR = "CELERY_FLEET_BEAT_LOCK_TTL"
BEAT_LOCK_TTL_DEFAULT = 30.0
BEAT_LOCK_TTL_MIN = 3.0
BEAT_LOCK_SCHEDULER = "celery_fleet.beatlock:LockedScheduler"


def log_format(env: Mapping[str, str] | None = None) -> str:
    """``json`` (the default) or ``text``, from CELERY_FLEET_LOG_FORMAT."""
    raw = (os.environ if env is None else env).get(LOG_FORMAT_VAR, "")
    value = raw.strip().lower() or "json"
    if value not in LOG_FORMATS:
        raise SettingsError(
            LOG_FORMAT_VAR, f"{raw!r} is not a log format; use json (one object per line) or text"
        )
    return value


@dataclass(frozen=True)
class BeatLock:
    """``CELERY_FLEET_BEAT_LOCK`` and ``CELERY_FLEET_BEAT_LOCK_TTL`` (seconds)."""

    enabled: bool = False
    ttl: float = BEAT_LOCK_TTL_DEFAULT


def beat_lock(env: Mapping[str, str] | None = None) -> BeatLock:
    """Whether beat runs under the lock of celery_fleet.beatlock, and the lock's TTL."""
    env = os.environ if env is None else env
    enabled = parse_bool(BEAT_LOCK_VAR, env.get(BEAT_LOCK_VAR, "false"))
    raw = env.get(BEAT_LOCK_TTL_VAR, "").strip()
    ttl = BEAT_LOCK_TTL_DEFAULT if not raw else parse_number(BEAT_LOCK_TTL_VAR, raw)
    if ttl is None or ttl < BEAT_LOCK_TTL_MIN:
        raise SettingsError(
            BEAT_LOCK_TTL_VAR,
            f"{raw!r} is below {BEAT_LOCK_TTL_MIN:g} seconds: the holder renews every ttl/3 "
            f"and must get a round trip to Redis in between; use e.g. "
            f"{BEAT_LOCK_TTL_VAR}={BEAT_LOCK_TTL_DEFAULT:g}",
        )
    return BeatLock(enabled=enabled, ttl=float(ttl))


def beat_scheduler(env: Mapping[str, str], settings: dict[str, Any]) -> None:
    """``CELERY_FLEET_BEAT_LOCK=true``: beat's scheduler becomes the locked one."""
    if not beat_lock(env).enabled:
        return
    chosen = settings.get("beat_scheduler")
    if chosen and chosen not in (BEAT_LOCK_SCHEDULER, CELERY_OPTIONS["beat_scheduler"].default):
        raise SettingsError(
            PREFIX + "BEAT_SCHEDULER",
            f"{chosen!r} conflicts with {BEAT_LOCK_VAR}=true, which uses "
            f"{BEAT_LOCK_SCHEDULER!r}; unset one of the two",
        )
    settings["beat_scheduler"] = BEAT_LOCK_SCHEDULER
