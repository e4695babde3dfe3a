"""The result backend: derived from the broker (db + 1), its own URL, or disabled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import urls
from .broker import parse_url
from .defaults import PREFIX
from .sentinel import sentinel_options
from .tls import Tls, tls_for

BACKEND_VAR = PREFIX + "RESULT_BACKEND"
DISABLED = ("", "disabled", "none")


def backend_url(env: Mapping[str, str], broker_var: str) -> urls.RedisUrl | None:
    """The backend's URL: ``CELERY_RESULT_BACKEND``, else the broker's with db + 1;
    ``None`` when results are off."""
    backend_raw = env.get(BACKEND_VAR)
    if backend_raw is None:
        backend = parse_url(env[broker_var], broker_var)
        backend.db += 1
        return backend
    if backend_raw.strip().lower() in DISABLED:
        return None
    return parse_url(backend_raw, BACKEND_VAR)


def result_backend(
    env: Mapping[str, str],
    raw: Mapping[str, Any],
    settings: dict[str, Any],
    backend: urls.RedisUrl | None,
    broker_tls: Tls,
) -> Tls | None:
    """Fill the result backend's settings; its TLS (``None`` when results are off)."""
    if backend is None:
        settings["result_backend"] = None
        settings["task_ignore_result"] = raw.get("task_ignore_result", True)
        settings["task_track_started"] = False
        settings.pop("redis_backend_use_ssl", None)
        settings.pop("result_compression", None)
        return None
    backend_tls = tls_for(env, PREFIX + "REDIS_BACKEND", backend, broker_tls)
    settings["result_backend"] = backend.render()
    if backend_tls.enabled:
        settings["redis_backend_use_ssl"] = backend_tls.redis_kwargs()
    options = dict(raw.get("result_backend_transport_options") or {})
    if backend.scheme == "sentinel":
        options = {**sentinel_options(env, backend, BACKEND_VAR, backend_tls), **options}
    settings["result_backend_transport_options"] = options
    if backend.scheme == "socket":
        # Celery passes socket_keepalive to UnixDomainSocketConnection, which rejects it.
        settings["redis_socket_keepalive"] = False
    return backend_tls
