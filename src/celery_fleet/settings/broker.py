"""A Redis broker (``redis``, ``rediss``, ``socket``, ``sentinel``): its URL, TLS,
visibility timeout and transport options, and the rule that keeps the visibility timeout
above the longest task."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .. import urls
from .defaults import PREFIX, VISIBILITY_MARGIN
from .parse import SettingsError, parse_number
from .reliable import reliable_fetch
from .sentinel import sentinel_options
from .tls import Tls, tls_for

log = logging.getLogger("celery_fleet.settings")

# The largest --time-limit of the worker pools on this host (the celery role writes it).
LONGEST_VAR = "CELERY_FLEET_LONGEST_TIME_LIMIT"


def redis_broker(
    env: Mapping[str, str], raw: Mapping[str, Any], settings: dict[str, Any]
) -> tuple[Tls, int, int | None]:
    """Broker settings for a Redis URL: TLS, visibility timeout, transport options."""
    broker_var = PREFIX + "BROKER_URL"
    broker = parse_url(env[broker_var], broker_var)
    broker_tls = tls_for(env, PREFIX + "BROKER", broker, None)
    settings["broker_url"] = broker.render()
    # Always explicit: for rediss:// with no options Kombu silently uses CERT_NONE.
    settings["broker_use_ssl"] = broker_tls.redis_kwargs() if broker_tls.enabled else False
    vt_var = PREFIX + "VISIBILITY_TIMEOUT"
    longest = longest_time_limit(env, raw.get("task_time_limit"))
    default_vt = str(longest + VISIBILITY_MARGIN if longest else 3600)
    visibility = parse_number(vt_var, env.get(vt_var, default_vt), int)
    transport: dict[str, Any] = {
        "visibility_timeout": visibility,
        "socket_timeout": raw["redis_socket_timeout"],
        "socket_connect_timeout": raw["redis_socket_connect_timeout"],
        "retry_on_timeout": raw["redis_retry_on_timeout"],
        "socket_keepalive": raw["redis_socket_keepalive"],
        "health_check_interval": raw["redis_backend_health_check_interval"],
        # Sweep unacked messages whose visibility timeout ran out every ~10 s, not ~100 s.
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    }
    if raw.get("redis_max_connections"):
        transport["max_connections"] = raw["redis_max_connections"]
    if broker.scheme == "sentinel":
        transport.update(sentinel_options(env, broker, broker_var, broker_tls))
    transport.update(raw.get("broker_transport_options") or {})
    settings["broker_transport_options"] = transport
    reliable_fetch(env, broker, settings)
    return broker_tls, visibility, longest


def parse_url(value: str, variable: str) -> urls.RedisUrl:
    try:
        url = urls.parse(value, variable=variable)
    except urls.UrlError as exc:
        raise SettingsError(variable, str(exc)) from None
    if value.strip().lower().startswith(("socket://", "unix://")) and "BACKEND" in variable:
        log.warning(
            "%s: Celery has no 'socket' result backend (it says 'Unknown result backend'); "
            "celery-fleet hands Celery %s. Use that form if you configure Celery yourself.",
            variable,
            url.render(masked=True),
        )
    return url


def longest_time_limit(env: Mapping[str, str], task_time_limit: Any) -> int | None:
    """The longest hard time limit a worker of this deployment enforces: the setting, or a
    pool's own ``--time-limit`` (the celery role writes the largest as LONGEST_VAR)."""
    limits = [int(task_time_limit)] if task_time_limit else []
    if env.get(LONGEST_VAR, "").strip():
        limits.append(parse_number(LONGEST_VAR, env[LONGEST_VAR], int))
    return max(limits) if limits else None


def check_timeouts(settings: Mapping[str, Any], visibility: int, longest: int | None) -> None:
    hard = settings.get("task_time_limit")
    if longest is None:
        log.warning(
            "%sTASK_TIME_LIMIT is unset: a task running longer than the visibility timeout "
            "(%s s) is delivered again while it still runs; set a time limit below it",
            PREFIX,
            visibility,
        )
    elif visibility <= longest:
        source = (
            f"{PREFIX}TASK_TIME_LIMIT={hard}" if hard == longest else f"{LONGEST_VAR}={longest}"
        )
        log.warning(
            "%sVISIBILITY_TIMEOUT=%s is not above %s: Redis redelivers a task that is still "
            "running after %s s, so long tasks run twice. Raise %sVISIBILITY_TIMEOUT above "
            "the longest task (or leave it unset: the longest limit + %s s).",
            PREFIX,
            visibility,
            source,
            visibility,
            PREFIX,
            VISIBILITY_MARGIN,
        )
    soft = settings.get("task_soft_time_limit")
    if soft is not None and hard is not None and soft >= hard:
        raise SettingsError(
            PREFIX + "TASK_SOFT_TIME_LIMIT",
            f"{soft} is not below {PREFIX}TASK_TIME_LIMIT={hard}; the soft limit must come "
            "first so that tasks can clean up",
        )
