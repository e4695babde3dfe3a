"""One dead letter: what failed, with what, where, why and when; as Redis stream fields.

Every field is a string in the stream. ``args``/``kwargs`` are the JSON the task was sent
with; beyond ``ARGS_CAP`` bytes they are cut and ``truncated`` is set (such an entry
cannot be requeued). Tracebacks keep their last ``TRACEBACK_CAP`` characters, where the
error is.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

ARGS_CAP = 64 * 1024
TRACEBACK_CAP = 16 * 1024
MESSAGE_CAP = 4 * 1024
BODY_CAP = 16 * 1024

# Why an entry exists.
FAILED = "failed"  # raised after its last retry (task_failure)
TIME_LIMIT = "time-limit"  # killed by the hard time limit
UNKNOWN = "unknown"  # no task of that name registered in the worker (task_unknown)
REJECTED = "rejected"  # Celery rejected the message (task_rejected)
UNDECODABLE = "undecodable"  # the body could not be decoded
REASONS = (FAILED, TIME_LIMIT, UNKNOWN, REJECTED, UNDECODABLE)


@dataclass(frozen=True)
class Entry:
    """A dead letter. ``entry_id`` is the stream ID (set when read back)."""

    reason: str
    task_id: str = ""
    name: str = ""
    queue: str = ""
    args: str = ""  # JSON text, as sent
    kwargs: str = ""  # JSON text, as sent
    truncated: bool = False
    body: str = ""  # the raw body, for messages that could not be read as a task
    exc_type: str = ""
    exc_message: str = ""
    traceback: str = ""
    retries: int = 0
    hostname: str = ""
    failed_at: float = 0.0  # epoch seconds
    eta: str = ""
    requeued_from: str = ""  # the task id this run was requeued from
    entry_id: str = ""

    @property
    def requeueable(self) -> bool:
        """Whether the task can be sent again exactly as it was."""
        return bool(self.name and self.args and self.kwargs and not self.truncated)

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments as sent."""
        return list(json.loads(self.args)), dict(json.loads(self.kwargs))

    def to_fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in asdict(self).items():
            if name == "entry_id" or value in ("", None):
                continue
            if isinstance(value, bool):
                value = "1" if value else "0"
            out[name] = str(value)
        return out

    @classmethod
    def from_fields(cls, entry_id: str | bytes, raw: Mapping[Any, Any]) -> Entry:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {"entry_id": _text(entry_id)}
        for k, v in raw.items():
            name = _text(k)
            if name in known and name != "entry_id":
                values[name] = _text(v)
        values.setdefault("reason", "")
        values["truncated"] = values.get("truncated") == "1"
        values["retries"] = int(values.get("retries") or 0)
        values["failed_at"] = float(values.get("failed_at") or 0.0)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: args/kwargs as values when they are whole JSON."""
        out = asdict(self)
        for name in ("args", "kwargs"):
            if getattr(self, name) and not self.truncated:
                with contextlib.suppress(ValueError):
                    out[name] = json.loads(out[name])
        return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def cap(text: str, limit: int, *, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    marker = "...[cut]..."
    return marker + text[-limit:] if keep_end else text[:limit] + marker


def dump_json(value: Any) -> tuple[str, bool]:
    """JSON text of ``value`` (repr for what JSON cannot hold), and whether it was cut."""
    try:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
        exact = True
    except (TypeError, ValueError):
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=repr)
        exact = False
    if len(text.encode()) > ARGS_CAP:
        return text[:ARGS_CAP], True
    return text, not exact


def body_text(body: Any) -> str:
    if isinstance(body, bytes | bytearray | memoryview):
        text = bytes(body).decode("utf-8", "backslashreplace")
    else:
        text = repr(body) if not isinstance(body, str) else body
    return cap(text, BODY_CAP)


def exception_fields(exc: BaseException | None) -> dict[str, Any]:
    if exc is None:
        return {}
    return {
        "exc_type": type(exc).__qualname__,
        "exc_message": cap(str(exc), MESSAGE_CAP),
    }


def now() -> float:
    return time.time()
