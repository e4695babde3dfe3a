"""``build(env)``: the environment through every module of this package, in order."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from . import names
from .backend import BACKEND_VAR, backend_url, result_backend
from .broker import check_timeouts, redis_broker
from .defaults import PREFIX
from .model import Settings
from .parse import SettingsError, parse_queues
from .process import beat_lock, beat_scheduler, log_format
from .reliable import RELIABLE_TRANSPORTS
from .retry import per_round
from .serializers import check_serializers

BROKER_VAR = PREFIX + "BROKER_URL"


def build(env: Mapping[str, str] | None = None) -> Settings:
    """The typed settings for ``env`` (``os.environ`` when None); :class:`SettingsError`
    names the variable at fault."""
    from .. import amqp, cli_env  # both import this package

    env = dict(os.environ if env is None else env)
    cli_env.check(env)
    raw = names.read(env)
    if not env.get(BROKER_VAR, "").strip():
        raise SettingsError(
            BROKER_VAR,
            "is not set; set it to rediss://user:pass@host:6379/0 "
            "or sentinel://h1:26379;sentinel://h2:26379",
        )
    settings: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("broker_url",)}
    settings["task_queues"] = parse_queues(PREFIX + "TASK_QUEUES", str(raw["task_queues"]))

    if amqp.is_amqp(env[BROKER_VAR]):
        broker_tls = amqp.configure(env, raw, settings)
        visibility, longest = None, None
    else:
        broker_tls, visibility, longest = redis_broker(env, raw, settings)

    per_round(settings)

    if amqp.is_amqp_backend(env.get(BACKEND_VAR), env[BROKER_VAR]):
        raise amqp.refuse_backend(BACKEND_VAR)
    backend = backend_url(env, BROKER_VAR)
    backend_tls = result_backend(env, raw, settings, backend, broker_tls)

    if visibility is not None:
        check_timeouts(settings, visibility, longest)
    check_serializers(env, settings)
    fmt = log_format(env)
    beat_scheduler(env, settings)
    transport = settings.get("broker_transport")
    return Settings(
        broker_url=settings["broker_url"],
        result_backend=settings["result_backend"],
        broker_tls=broker_tls,
        backend_tls=backend_tls,
        broker_transport=transport,
        queues=tuple(q.name for q in settings["task_queues"]),
        visibility_timeout=visibility,
        longest_time_limit=longest,
        reliable_fetch=transport in RELIABLE_TRANSPORTS.values(),
        beat_lock=beat_lock(env),
        log_format=fmt,
        values=MappingProxyType(settings),
    )
