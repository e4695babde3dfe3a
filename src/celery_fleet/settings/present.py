"""Presentation: a masked copy for people, the normalised URLs for Celery's own reading of
the environment."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, MutableMapping
from typing import Any

from kombu.entity import Queue
from redis.retry import Retry

from .. import urls
from .defaults import PREFIX

SECRET_WORDS = ("password", "secret", "token")


def masked(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy that is safe to print: no password, JSON-friendly values."""

    def clean(key: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(key, v) for v in value]
        if isinstance(value, Queue):
            return value.name
        if isinstance(value, ssl.VerifyMode):
            return value.name
        if isinstance(value, Retry):
            return "no retry per Sentinel (the Sentinel list is the retry)"
        if value is not None and any(word in key.lower() for word in SECRET_WORDS):
            return urls.MASK
        if isinstance(value, str) and "://" in value:
            return urls.mask(value)
        return value

    return {k: clean(k, v) for k, v in settings.items()}


def publish_urls(
    settings: Mapping[str, Any], environ: MutableMapping[str, str] = os.environ
) -> None:
    """Make the process environment carry the normalised URLs.

    Celery's ``Settings.broker_url``/``result_backend`` read ``CELERY_BROKER_URL`` and
    ``CELERY_RESULT_BACKEND`` from ``os.environ`` before any configuration, so the raw
    values would win over what ``load()`` checked and rewrote.
    """
    environ[PREFIX + "BROKER_URL"] = settings["broker_url"]
    if settings.get("result_backend"):
        environ[PREFIX + "RESULT_BACKEND"] = settings["result_backend"]
    else:
        environ.pop(PREFIX + "RESULT_BACKEND", None)
