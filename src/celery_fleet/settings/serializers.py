"""Serializers that run code chosen by whoever can write to the broker: refused by default."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .defaults import PREFIX
from .parse import SettingsError, parse_bool

log = logging.getLogger("celery_fleet.settings")

# Serializers whose decoding runs code chosen by whoever can write to the broker or the
# result backend (Kombu's docs: "pickle ... can be exploited"; PyYAML's full loader too).
UNSAFE_SERIALIZERS = {"pickle", "yaml", "application/x-python-serialize", "application/x-yaml"}
SERIALIZER_SETTINGS = (
    "accept_content",
    "result_accept_content",
    "task_serializer",
    "result_serializer",
    "event_serializer",
)
ALLOW_UNSAFE_VAR = "CELERY_FLEET_ALLOW_UNSAFE_SERIALIZERS"


def check_serializers(env: Mapping[str, str], settings: Mapping[str, Any]) -> None:
    """Refuse pickle/yaml unless the operator opted in (then warn once per load)."""
    allowed = parse_bool(ALLOW_UNSAFE_VAR, env.get(ALLOW_UNSAFE_VAR, "false"))
    for setting in SERIALIZER_SETTINGS:
        value = settings.get(setting)
        names = [value] if isinstance(value, str) else list(value or ())
        unsafe = sorted({str(n).strip().lower() for n in names} & UNSAFE_SERIALIZERS)
        if not unsafe:
            continue
        variable = PREFIX + setting.upper()
        if not allowed:
            raise SettingsError(
                variable,
                f"{', '.join(unsafe)} lets anyone who can write to the broker run code in "
                f"every worker; use json, or set {ALLOW_UNSAFE_VAR}=true if every writer is "
                "trusted",
            )
        log.warning(
            "%s includes %s (%s=true): anyone who can write to the broker or the result "
            "backend can run code in the workers",
            variable,
            ", ".join(unsafe),
            ALLOW_UNSAFE_VAR,
        )
