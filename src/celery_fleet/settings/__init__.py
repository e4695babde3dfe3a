"""Environment -> Celery settings, secure by default.

``build(os.environ)`` returns a typed, frozen :class:`Settings`; ``load(os.environ)``
returns its ``celery()`` dict, the lowercase Celery settings the deployment means. Every
input is read, checked and normalised at load time, so that a mistake is an error naming
the variable and its fix, not a traceback deep in Kombu at the first publish. The
variables are documented in docs/settings.md.

Modules, one job each: ``defaults`` (the production defaults and why), ``parse`` (typing a
string, :class:`SettingsError`), ``names`` (which ``CELERY_*`` are settings), ``tls``,
``sentinel``, ``broker`` (a Redis broker, the visibility-timeout rule), ``reliable``
(reliable fetch, confirmed publish), ``backend`` (the result backend), ``serializers``,
``process`` (log format, beat lock), ``model`` (:class:`Settings`), ``assemble``
(:func:`build`), ``present`` (masked output, the URLs written back to the environment).
RabbitMQ brokers are in ``celery_fleet.amqp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .assemble import build
from .broker import LONGEST_VAR
from .defaults import PREFIX, PRODUCTION_DEFAULTS, VISIBILITY_MARGIN
from .model import Settings
from .names import FLEET_KEYS, KNOWN_MISTAKES, NOT_SETTINGS, RAW_STRINGS
from .parse import (
    CELERY_OPTIONS,
    FALSE,
    TRUE,
    SettingsError,
    check_file,
    parse_bool,
    parse_number,
    parse_setting,
)
from .present import SECRET_WORDS, masked, publish_urls
from .process import (
    BEAT_LOCK_SCHEDULER,
    BEAT_LOCK_TTL_DEFAULT,
    BEAT_LOCK_TTL_MIN,
    BEAT_LOCK_TTL_VAR,
    BEAT_LOCK_VAR,
    LOG_FORMAT_VAR,
    LOG_FORMATS,
    BeatLock,
    beat_lock,
    log_format,
)
from .reliable import RELIABLE_FETCH_VAR, RELIABLE_TRANSPORTS
from .serializers import ALLOW_UNSAFE_VAR, SERIALIZER_SETTINGS, UNSAFE_SERIALIZERS
from .tls import CERT_REQS, Tls

__all__ = [
    "ALLOW_UNSAFE_VAR",
    "BEAT_LOCK_SCHEDULER",
    "BEAT_LOCK_TTL_DEFAULT",
    "BEAT_LOCK_TTL_MIN",
    "BEAT_LOCK_TTL_VAR",
    "BEAT_LOCK_VAR",
    "CELERY_OPTIONS",
    "CERT_REQS",
    "FALSE",
    "FLEET_KEYS",
    "KNOWN_MISTAKES",
    "LOG_FORMATS",
    "LOG_FORMAT_VAR",
    "LONGEST_VAR",
    "NOT_SETTINGS",
    "PREFIX",
    "PRODUCTION_DEFAULTS",
    "RAW_STRINGS",
    "RELIABLE_FETCH_VAR",
    "RELIABLE_TRANSPORTS",
    "SECRET_WORDS",
    "SERIALIZER_SETTINGS",
    "TRUE",
    "UNSAFE_SERIALIZERS",
    "VISIBILITY_MARGIN",
    "BeatLock",
    "Settings",
    "SettingsError",
    "Tls",
    "beat_lock",
    "build",
    "check_file",
    "django_settings",
    "load",
    "log_format",
    "masked",
    "parse_bool",
    "parse_number",
    "parse_setting",
    "publish_urls",
]


def load(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return Celery settings (lowercase names) for the environment ``env``."""
    return build(env).celery()


def django_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The same settings as ``CELERY_<NAME>`` names, for a Django settings.py."""
    settings = load(env)
    if env is None:
        publish_urls(settings)
    return {PREFIX + k.upper(): v for k, v in settings.items()}
