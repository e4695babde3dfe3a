"""Typing raw environment strings: every error names the variable and the fix."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from celery.app.defaults import NAMESPACES, flatten
from kombu.entity import Queue

# Celery's own settings table: each setting's type and default.
CELERY_OPTIONS = dict(flatten(NAMESPACES))
TRUE = {"1", "true", "yes", "on", "y"}
FALSE = {"0", "false", "no", "off", "n", ""}


class SettingsError(ValueError):
    """Bad input. ``variable`` names the environment variable at fault."""

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__(message if message.startswith(variable) else f"{variable}: {message}")


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise SettingsError(name, f"{raw!r} is not a boolean; use true or false")


def parse_number(name: str, raw: str, kind: Callable[[str], Any] = float) -> Any:
    value = raw.strip()
    if value.lower() in ("none", "null") and kind is not int:
        return None
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(name, f"{raw!r} is not {what}; set e.g. {name}=10") from None


def parse_json(name: str, raw: str, want: type) -> Any:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(name, f"is not valid JSON ({exc.msg}); quote it as JSON") from None
    if not isinstance(value, want):
        raise SettingsError(name, f"must be a JSON {want.__name__}")
    return value


def parse_setting(name: str, setting: str, raw: str) -> Any:
    """Type a generic Celery setting from its entry in Celery's own settings table."""
    option = CELERY_OPTIONS[setting]
    kind = option.type if isinstance(option.type, str) else "any"
    if kind == "bool":
        return parse_bool(name, raw)
    if kind == "int":
        if raw.strip().lower() in ("none", "null"):
            return None
        return parse_number(name, raw, int)
    if kind == "float":
        return parse_number(name, raw, float)
    if kind in ("list", "tuple"):
        if raw.strip().startswith("["):
            return parse_json(name, raw, list)
        return [item.strip() for item in raw.split(",") if item.strip()]
    if kind == "dict":
        return parse_json(name, raw, dict)
    if kind == "any" and raw.strip()[:1] in ("{", "["):
        return json.loads(raw)
    return raw


def parse_queues(name: str, raw: str) -> tuple[Queue, ...]:
    """``default,critical``: one Kombu queue per name, routed by its name."""
    names = [q.strip() for q in raw.split(",") if q.strip()]
    if not names or any(":" in q or " " in q for q in names):
        raise SettingsError(name, "must be queue names separated by commas: default,critical")
    return tuple(Queue(q, routing_key=q) for q in names)  # type: ignore[no-untyped-call]


def check_file(name: str, path: str | None) -> None:
    """Open the file as this process will: a missing or unreadable file is named now."""
    if path is None:
        return
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise SettingsError(
            name, f"file {path!r} does not exist; point it at the PEM file"
        ) from None
    except PermissionError:
        raise SettingsError(
            name,
            f"file {path!r} is not readable by this user (uid {os.getuid()}); fix the owner "
            "or mode of the file and its folders (keys: 0600, owned by the service user)",
        ) from None
    except IsADirectoryError:
        raise SettingsError(name, f"{path!r} is a folder; point it at the PEM file") from None
