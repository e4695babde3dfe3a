"""Sentinel options for one side: master name, quorum of others, the Sentinels' own
connection (credentials, TLS, timeouts, no retry per Sentinel)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import urls
from .defaults import PREFIX
from .parse import SettingsError, parse_bool, parse_number
from .tls import Tls

log = logging.getLogger("celery_fleet.settings")


def sentinel_options(
    env: Mapping[str, str], url: urls.RedisUrl, variable: str, tls: Tls
) -> dict[str, Any]:
    """``master_name``, ``min_other_sentinels`` and ``sentinel_kwargs`` for one side."""
    master = env.get(PREFIX + "SENTINEL_MASTER_NAME", "").strip()
    if not master:
        raise SettingsError(
            f"{PREFIX}SENTINEL_MASTER_NAME",
            f"{variable} is a sentinel:// URL but no master name is set; set "
            f"{PREFIX}SENTINEL_MASTER_NAME to the name in 'sentinel monitor NAME ...'",
        )
    timeout_var = PREFIX + "SENTINEL_SOCKET_TIMEOUT"
    timeout = parse_number(timeout_var, env.get(timeout_var, "1.0"))
    if timeout is not None and timeout < 0.5:
        log.warning(
            "%s=%s: below 0.5 s a TLS handshake to a busy Sentinel can time out and look "
            "like a dead Sentinel; 1.0 is a safer value",
            timeout_var,
            timeout,
        )
    ssl_var = PREFIX + "SENTINEL_SSL"
    sentinel_tls = parse_bool(ssl_var, env[ssl_var]) if ssl_var in env else tls.enabled
    # No retries per Sentinel: the list of Sentinels is the retry, and kombu/Celery retry on
    # top. redis-py 8's default (3 backoff retries) makes a wrong password take ~26 s.
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if env.get(PREFIX + "SENTINEL_USERNAME"):
        kwargs["username"] = env[PREFIX + "SENTINEL_USERNAME"]
    if env.get(PREFIX + "SENTINEL_PASSWORD"):
        kwargs["password"] = env[PREFIX + "SENTINEL_PASSWORD"]
    if sentinel_tls:
        # Without ssl=True here redis-py talks plaintext to the Sentinels (celery#8016).
        kwargs["ssl"] = True
        kwargs.update(tls.redis_kwargs() if tls.enabled else Tls(enabled=True).redis_kwargs())
    min_var = PREFIX + "SENTINEL_MIN_OTHER_SENTINELS"
    minimum = parse_number(min_var, env.get(min_var, "0"), int)
    if minimum >= len(url.endpoints):
        raise SettingsError(
            min_var,
            f"{minimum} other Sentinels can never be seen with "
            f"{len(url.endpoints)} listed in {variable}; lower it",
        )
    return {"master_name": master, "min_other_sentinels": minimum, "sentinel_kwargs": kwargs}
