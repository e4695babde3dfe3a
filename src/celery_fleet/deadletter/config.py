"""The dead-letter variables, read once from the environment (docs/settings.md).

``CELERY_FLEET_DEAD_LETTERS``        on (default) or off
``CELERY_FLEET_DEAD_LETTER_KEY``     stream key (default ``celery-fleet:dead-letters``);
                                     Kombu's ``global_keyprefix`` goes in front
``CELERY_FLEET_DEAD_LETTER_MAXLEN``  approximate cap on entries (default 10000)
``CELERY_FLEET_DEAD_LETTER_WEBHOOK`` optional URL told about new entries (rate-limited)
``CELERY_FLEET_DEAD_LETTER_WEBHOOK_INTERVAL`` at most one webhook call per this many
                                     seconds and process (default 60)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..settings import SettingsError, parse_bool, parse_number

PREFIX = "CELERY_FLEET_DEAD_LETTER"
DEFAULT_KEY = "celery-fleet:dead-letters"
DEFAULT_MAXLEN = 10000
# The role derives the app user's ACL key patterns from the key: keep it plain.
KEY_CHARS = re.compile(r"^[A-Za-z0-9:._-]+$")


@dataclass(frozen=True)
class Config:
    """What the worker does with dead letters."""

    enabled: bool = True
    key: str = DEFAULT_KEY
    maxlen: int = DEFAULT_MAXLEN
    webhook: str | None = None
    webhook_interval: float = 60.0
    # Seconds of XADD retries before the entry is given up (logged and counted), and the
    # first pause between two attempts (doubling up to 1 s).
    retry_for: float = 15.0
    backoff: float = 0.2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        enabled_var = PREFIX + "S"
        enabled = parse_bool(enabled_var, env.get(enabled_var, "true"))
        key_var = PREFIX + "_KEY"
        key = env.get(key_var, DEFAULT_KEY).strip()
        if not KEY_CHARS.match(key):
            raise SettingsError(key_var, f"{key!r}: use letters, digits and : . _ - only")
        maxlen_var = PREFIX + "_MAXLEN"
        maxlen = parse_number(maxlen_var, env.get(maxlen_var, str(DEFAULT_MAXLEN)), int)
        if maxlen < 1:
            raise SettingsError(maxlen_var, f"{maxlen} keeps nothing; set e.g. 10000")
        webhook = env.get(PREFIX + "_WEBHOOK", "").strip() or None
        if webhook and not webhook.startswith(("https://", "http://")):
            raise SettingsError(PREFIX + "_WEBHOOK", f"{webhook!r} is not an http(s) URL")
        interval_var = PREFIX + "_WEBHOOK_INTERVAL"
        interval = parse_number(interval_var, env.get(interval_var, "60"))
        if interval is None or interval < 0:
            raise SettingsError(interval_var, f"{interval} is not a number of seconds; e.g. 60")
        return cls(
            enabled=enabled,
            key=key,
            maxlen=maxlen,
            webhook=webhook,
            webhook_interval=float(interval),
        )


def stream_key(key: str, transport_options: Mapping[str, Any] | None) -> str:
    """The key in Redis: Kombu's ``global_keyprefix`` (a broker transport option) first.

    Kombu prefixes only the commands it issues itself, never X* commands, so the prefix is
    added here, once."""
    prefix = str((transport_options or {}).get("global_keyprefix") or "")
    return prefix + key
