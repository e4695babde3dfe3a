"""Worker and beat logs as one JSON object per line (python-json-logger).

When a worker or beat starts, Celery gives the root logger, the multiprocessing logger
and ``celery.task`` a handler with its text formatter, then sends ``after_setup_logger``
and ``after_setup_task_logger``
(https://docs.celeryq.dev/en/stable/userguide/signals.html#logging-signals). ``install``
connects to both and swaps the formatters Celery installed for :class:`JsonFormatter`;
handlers someone else added keep theirs. With ``CELERY_FLEET_LOG_FORMAT=text`` nothing is
connected and Celery's own format stays.

Each line carries a fixed set of fields (``FIELDS``), never a record's other attributes:
Celery passes a task's arguments along as ``extra={"data": ...}``, and a task's arguments
may hold anything. A URL's password in the message or the traceback is masked.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from celery._state import get_current_task
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init
from celery.utils.log import ColorFormatter, get_multiprocessing_logger
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

from . import urls

FIELDS = (
    "timestamp",  # ISO 8601, UTC, milliseconds
    "level",
    "logger",
    "process",  # MainProcess, ForkPoolWorker-1, ...
    "message",
    "hostname",
    "worker",  # the worker's node name (name@host); absent in beat
    "task_id",  # inside a task, and on Celery's received/succeeded/failed lines
    "task_name",
    "queue",  # the routing key the task was delivered with (its queue here)
    "retries",
    "exc_type",  # with an exception: its class
    "traceback",  # ... and the formatted traceback, ending in "Type: message"
    "stack",
)

_state: dict[str, str] = {}
# urls.mask for free text: a URL's password ends at "@" and, in a log line, at a space.
_PASSWORD = re.compile(r"(://[^\s:/@;]*:)[^\s@;]*@")


def mask(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it masked."""
    return _PASSWORD.sub(rf"\g<1>{urls.MASK}@", text)


def _task_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What is known of the task this record is about."""
    task = get_current_task()
    request = getattr(task, "request", None)
    if task is not None and request is not None and getattr(request, "id", None):
        fields: dict[str, Any] = {"task_id": request.id, "task_name": task.name}
        queue = (getattr(request, "delivery_info", None) or {}).get("routing_key")
        if queue:
            fields["queue"] = queue
        retries = getattr(request, "retries", None)
        if isinstance(retries, int):
            fields["retries"] = retries
        return fields
    # The worker's main process logs "Task name[id] received" with a dict of arguments.
    args = record.args
    if record.name.startswith("celery.") and isinstance(args, Mapping):
        task_id, name = args.get("id"), args.get("name")
        if isinstance(task_id, str) and isinstance(name, str):
            return {"task_id": task_id, "task_name": name}
    return {}


class JsonFormatter(_BaseJsonFormatter):
    """One JSON object per record, with the fields of ``FIELDS`` only."""

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        # message_dict (a dict logged as the message) is ignored on purpose: its keys
        # would become fields. getMessage() renders such a dict as text instead.
        log_data["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["process"] = record.processName
        log_data["message"] = mask(record.getMessage())
        log_data["hostname"] = _hostname()
        if "worker" in _state:
            log_data["worker"] = _state["worker"]
        log_data.update(_task_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            log_data["exc_type"] = record.exc_info[0].__name__
            text = logging.Formatter.formatException(self, record.exc_info)
            log_data["traceback"] = mask(text)
        elif record.exc_text:
            log_data["traceback"] = mask(record.exc_text)
        if record.stack_info:
            log_data["stack"] = record.stack_info


def _hostname() -> str:
    if "hostname" not in _state:
        _state["hostname"] = socket.gethostname()
    return _state["hostname"]


def use_json(logger: logging.Logger | None) -> None:
    """Give every handler of ``logger`` that Celery set up the JSON formatter."""
    for handler in getattr(logger, "handlers", None) or ():
        if isinstance(handler.formatter, ColorFormatter):
            handler.setFormatter(JsonFormatter())


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    if sender:
        _state["worker"] = str(sender)


def _on_setup_logger(logger: logging.Logger | None = None, **_: Any) -> None:
    use_json(logger)
    use_json(get_multiprocessing_logger())


def _on_setup_task_logger(logger: logging.Logger | None = None, **_: Any) -> None:
    use_json(logger)


_RECEIVERS = (
    (celeryd_init, _on_worker_init, "celery_fleet.logs.worker"),
    (after_setup_logger, _on_setup_logger, "celery_fleet.logs"),
    (after_setup_task_logger, _on_setup_task_logger, "celery_fleet.logs.task"),
)


def install(log_format: str) -> None:
    """Log JSON from workers and beat when ``log_format`` is ``json``, Celery's text when
    ``text`` (``settings.log_format`` checks the value). Connects once; idempotent."""
    for signal, receiver, uid in _RECEIVERS:
        if log_format == "json":
            signal.connect(receiver, weak=False, dispatch_uid=uid)
        else:
            signal.disconnect(receiver, dispatch_uid=uid)
