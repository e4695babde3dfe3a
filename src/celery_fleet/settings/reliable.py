"""Opt-in reliable fetch and confirmed publish (celery_fleet.transport; docs/delivery.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import urls
from .defaults import PREFIX
from .parse import SettingsError, parse_bool, parse_number

# Opt-in reliable fetch (celery_fleet.transport): the transport per broker URL scheme.
RELIABLE_FETCH_VAR = "CELERY_FLEET_RELIABLE_FETCH"
RELIABLE_TRANSPORTS = {
    "redis": "celery_fleet.transport:Transport",
    "rediss": "celery_fleet.transport:Transport",
    "socket": "celery_fleet.transport:Transport",
    "sentinel": "celery_fleet.transport:SentinelTransport",
}


def reliable_fetch(env: Mapping[str, str], broker: urls.RedisUrl, settings: dict[str, Any]) -> None:
    """``CELERY_FLEET_RELIABLE_FETCH=true``: consume through celery_fleet.transport, where a
    fetched message is never only in the worker's memory; ``CELERY_BROKER_WAIT_REPLICAS``:
    confirmed publish on the same transport (docs/delivery.md)."""
    replicas_var = PREFIX + "BROKER_WAIT_REPLICAS"
    timeout_var = PREFIX + "BROKER_WAIT_TIMEOUT_MS"
    replicas = parse_number(replicas_var, env.get(replicas_var, "0"), int)
    wait_ms = parse_number(timeout_var, env.get(timeout_var, "1000"), int)
    if replicas < 0:
        raise SettingsError(replicas_var, f"{replicas} is negative; use 0 (off) or 1, 2, ...")
    if wait_ms <= 0:
        raise SettingsError(
            timeout_var, f"{wait_ms} must be above 0 (WAIT with 0 would block forever)"
        )
    if not parse_bool(RELIABLE_FETCH_VAR, env.get(RELIABLE_FETCH_VAR, "false")):
        if replicas:
            raise SettingsError(
                replicas_var,
                f"confirmed publish is part of celery_fleet.transport; set "
                f"{RELIABLE_FETCH_VAR}=true too, or unset {replicas_var}",
            )
        return
    path = RELIABLE_TRANSPORTS[broker.scheme]
    chosen = settings.get("broker_transport")
    if chosen and chosen != path:
        raise SettingsError(
            PREFIX + "BROKER_TRANSPORT",
            f"{chosen!r} conflicts with {RELIABLE_FETCH_VAR}=true, which uses {path!r}; "
            "unset one of the two",
        )
    settings["broker_transport"] = path
    options = settings["broker_transport_options"]
    if replicas:
        options.setdefault("wait_replicas", replicas)
        options.setdefault("wait_timeout_ms", wait_ms)
    inflight = options.get("inflight_timeout", 60)
    if not isinstance(inflight, int | float) or isinstance(inflight, bool) or inflight <= 0:
        raise SettingsError(
            PREFIX + "BROKER_TRANSPORT_OPTIONS",
            f"inflight_timeout={inflight!r} must be a positive number of seconds",
        )
