"""Which ``CELERY_*`` variables are Celery settings: read and type them, name the others."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from celery.app.defaults import _TO_NEW_KEY

from .defaults import PREFIX, PRODUCTION_DEFAULTS
from .parse import CELERY_OPTIONS, SettingsError, parse_setting

# Variables of this package that are not Celery setting names.
FLEET_KEYS = {
    "BROKER_SSL",
    "BROKER_SSL_CERT_REQS",
    "BROKER_SSL_CA_CERTS",
    "BROKER_SSL_CERTFILE",
    "BROKER_SSL_KEYFILE",
    "BROKER_SSL_CHECK_HOSTNAME",
    "REDIS_BACKEND_SSL",
    "REDIS_BACKEND_SSL_CERT_REQS",
    "REDIS_BACKEND_SSL_CA_CERTS",
    "REDIS_BACKEND_SSL_CERTFILE",
    "REDIS_BACKEND_SSL_KEYFILE",
    "REDIS_BACKEND_SSL_CHECK_HOSTNAME",
    "SENTINEL_MASTER_NAME",
    "SENTINEL_MIN_OTHER_SENTINELS",
    "SENTINEL_USERNAME",
    "SENTINEL_PASSWORD",
    "SENTINEL_SSL",
    "SENTINEL_SOCKET_TIMEOUT",
    "VISIBILITY_TIMEOUT",
    "BROKER_WAIT_REPLICAS",
    "BROKER_WAIT_TIMEOUT_MS",
}
# CELERY_* variables read by the celery command itself or by Celery internals.
NOT_SETTINGS = {
    "APP",
    "LOADER",
    "CONFIG_MODULE",
    "WORKDIR",
    "RDB_HOST",
    "RDB_PORT",
    "RDBSIG",
    "TRACE_APP",
    "BENCH",
    "CUSTOM_WORKER_POOL",
    "LOG_LEVEL",
    "LOG_FILE",
    "PID_FILE",
    "CHDIR",
}
# Names that users write because a blog post did; each maps to the real one.
KNOWN_MISTAKES = {
    "RESULT_BACKEND_USE_SSL": "CELERY_REDIS_BACKEND_USE_SSL (or CELERY_REDIS_BACKEND_SSL_*)",
    "TASK_SEND_SENT_SIGNAL": "CELERY_TASK_SEND_SENT_EVENT",
    "REDIS_USE_SSL": "CELERY_REDIS_BACKEND_USE_SSL (or CELERY_REDIS_BACKEND_SSL_*)",
    "BROKER_SSL_OPTIONS": "CELERY_BROKER_USE_SSL (or CELERY_BROKER_SSL_*)",
}
# Settings this package parses itself (task_queues: "default,critical").
RAW_STRINGS = {"task_queues", "broker_url", "result_backend"}


def read(env: Mapping[str, str]) -> dict[str, Any]:
    """The production defaults with every ``CELERY_<SETTING>`` of ``env`` typed over them."""
    raw: dict[str, Any] = dict(PRODUCTION_DEFAULTS)
    for variable, value in sorted(env.items()):
        if not variable.startswith(PREFIX) or variable.startswith("CELERY_FLEET_"):
            continue
        suffix = variable[len(PREFIX) :]
        if suffix in FLEET_KEYS or suffix in NOT_SETTINGS:
            continue
        setting = suffix.lower()
        if setting in ("broker_use_ssl", "redis_backend_use_ssl"):
            continue  # folded into the TLS options (tls.py)
        if setting not in CELERY_OPTIONS:
            raise unknown(variable)
        raw[setting] = value if setting in RAW_STRINGS else parse_setting(variable, setting, value)
    return raw


def unknown(variable: str) -> SettingsError:
    """The error for a ``CELERY_*`` name that is no setting: the likely intended name."""
    suffix = variable[len(PREFIX) :]
    if suffix in KNOWN_MISTAKES:
        hint = KNOWN_MISTAKES[suffix]
        return SettingsError(variable, f"is not a Celery setting; did you mean {hint}?")
    old = _TO_NEW_KEY.get(variable) or _TO_NEW_KEY.get(suffix)
    if old:
        return SettingsError(
            variable, f"is the old name of {old}; use {PREFIX}{old.upper()} instead"
        )
    candidates = [PREFIX + k.upper() for k in CELERY_OPTIONS] + [PREFIX + k for k in FLEET_KEYS]
    close = difflib.get_close_matches(variable, candidates, n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}?" if close else "see docs/settings.md for the names"
    return SettingsError(variable, f"is not a Celery setting; {hint}")
