"""The worker hooks that turn a task that is gone for good into a dead letter.

- ``task_failure``: the task raised and will not be retried (``self.retry()`` and
  ``autoretry_for`` raise ``Retry``, which is not a failure, until ``max_retries`` runs
  out), or it hit the hard time limit (Celery sends ``task_failure`` for that from the
  worker's main process; not dead when ``task_acks_on_timeout`` is off, as the message
  then goes back to its queue), or it raised ``Reject(requeue=False)``;
- ``task_unknown``: no task of that name is registered in this worker;
- ``task_rejected``: a message that is not a task, or whose content type is refused;
- a body that cannot be decoded: Celery logs it and acknowledges it, with no signal, so
  ``Consumer.on_decode_error`` is wrapped.

Signals: https://docs.celeryq.dev/en/stable/userguide/signals.html
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from celery.exceptions import NotRegistered, TimeLimitExceeded
from celery.signals import task_failure, task_received, task_rejected, task_unknown

from . import entry as entries
from . import webhook, writer
from .config import Config, stream_key
from .entry import Entry

log = logging.getLogger("celery_fleet.deadletter")
# The header a requeued task carries: the id of the task it was requeued from.
REQUEUED_FROM = "celery_fleet_requeued_from"

_state: dict[str, Config] = {}
# Requests received by this worker's main process, by task id: a hard time limit is
# reported there after the request left Celery's own registries.
_received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
# Celery 5.7 sends task_failure twice for one hard time limit (from Request.on_timeout and
# again when the pool reports the killed job): the ids already recorded, oldest first.
_timed_out: OrderedDict[str, None] = OrderedDict()
TIMED_OUT_MEMORY = 1000


def install(config: Config | None = None) -> bool:
    """Connect the hooks (idempotent); False when dead letters are switched off."""
    config = config or Config.from_env()
    _state["config"] = config
    if not config.enabled:
        log.info("dead letters are off (CELERY_FLEET_DEAD_LETTERS)")
        return False
    task_failure.connect(_on_failure, weak=False, dispatch_uid="celery_fleet.dl.failure")
    task_unknown.connect(_on_unknown, weak=False, dispatch_uid="celery_fleet.dl.unknown")
    task_rejected.connect(_on_rejected, weak=False, dispatch_uid="celery_fleet.dl.rejected")
    task_received.connect(_on_received, weak=False, dispatch_uid="celery_fleet.dl.received")
    _wrap_decode_error()
    return True


def _record(app: Any, item: Entry) -> None:
    config = _state.get("config")
    if config is None or not config.enabled or app is None:
        return
    try:
        entry_id = writer.write(app, item, config)
    except Exception:  # never a second failure on top of the first
        log.exception("dead letter for %s[%s] not written", item.name, item.task_id)
        return
    if entry_id is not None and config.webhook:
        key = stream_key(config.key, app.conf.broker_transport_options)
        try:
            webhook.notifier(config.webhook, config.webhook_interval).notify(key, entry_id, item)
        except Exception:
            log.exception("dead-letter webhook not called")
    if entry_id is not None:
        log.warning(
            "dead letter %s: task %s[%s] (%s%s)",
            entry_id,
            item.name or "?",
            item.task_id or "?",
            item.reason,
            f": {item.exc_type}" if item.exc_type else "",
        )


# --- task_failure (pool child; main process for the hard time limit) ---------------------
def _on_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    if request is not None and getattr(request, "id", None):
        _received[request.id] = request


def _on_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    if sender is None or not task_id:
        return
    context = getattr(sender, "request", None)
    if context is not None and getattr(context, "is_eager", False):
        return  # apply() in the caller's process: the caller sees the exception
    timed_out = isinstance(exception, TimeLimitExceeded)
    if timed_out and getattr(sender, "acks_late", False) and not sender.acks_on_timeout:
        return  # task_acks_on_timeout=False: Celery puts the message back, it runs again
    if timed_out and _seen_timeout(task_id):
        return
    info = _request_info(context, task_id)
    args_text, args_cut = entries.dump_json(list(args or ()))
    kwargs_text, kwargs_cut = entries.dump_json(dict(kwargs or {}))
    traceback = str(getattr(einfo, "traceback", "") or "")
    item = Entry(
        reason=entries.TIME_LIMIT if timed_out else entries.FAILED,
        task_id=task_id,
        name=str(getattr(sender, "name", "") or ""),
        args=args_text,
        kwargs=kwargs_text,
        truncated=args_cut or kwargs_cut,
        traceback=entries.cap(traceback, entries.TRACEBACK_CAP, keep_end=True),
        failed_at=entries.now(),
        **info,
        **entries.exception_fields(exception),
    )
    _record(sender.app, item)


def _seen_timeout(task_id: str) -> bool:
    if task_id in _timed_out:
        return True
    _timed_out[task_id] = None
    while len(_timed_out) > TIMED_OUT_MEMORY:
        _timed_out.popitem(last=False)
    return False


def _request_info(context: Any, task_id: str) -> dict[str, Any]:
    """Queue, retries, worker, ETA and origin from the task's context (pool child) or from
    the request the main process received (hard time limit)."""
    if context is not None and getattr(context, "id", None) == task_id:
        delivery = getattr(context, "delivery_info", None) or {}
        retries = getattr(context, "retries", 0)
        hostname = getattr(context, "hostname", "")
        eta = getattr(context, "eta", None)
        origin = getattr(context, REQUEUED_FROM, None)
    else:
        request = _received.get(task_id)
        if request is None:
            return {}
        headers = getattr(request, "request_dict", None) or {}
        delivery = getattr(request, "delivery_info", None) or {}
        retries = headers.get("retries", 0)
        hostname = getattr(request, "hostname", "")
        eta = headers.get("eta")
        origin = headers.get(REQUEUED_FROM)
    return {
        "queue": _queue(delivery),
        "retries": int(retries or 0),
        "hostname": str(hostname or ""),
        "eta": str(eta or ""),
        "requeued_from": str(origin or ""),
    }


def _queue(delivery: Mapping[str, Any]) -> str:
    return str(delivery.get("routing_key") or delivery.get("queue") or "")


# --- messages that never became a task (worker main process) ------------------------------
def _on_unknown(
    sender: Any = None,
    message: Any = None,
    exc: BaseException | None = None,
    name: str | None = None,
    id: str | None = None,
    **_: Any,
) -> None:
    if sender is None or message is None:
        return
    # The exception is the KeyError of the lookup; Celery reports NotRegistered(name).
    missing = NotRegistered(name) if name else exc
    item = _from_message(message, entries.UNKNOWN, missing, sender=sender, name=name, task_id=id)
    _record(sender.app, item)


def _on_rejected(
    sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any
) -> None:
    if sender is None or message is None:
        return
    _record(sender.app, _from_message(message, entries.REJECTED, exc, sender=sender))


def _wrap_decode_error() -> None:
    from celery.worker.consumer.consumer import Consumer

    original = Consumer.on_decode_error
    if getattr(original, "celery_fleet_dead_letter", False):
        return

    def on_decode_error(self: Any, message: Any, exc: BaseException) -> Any:
        try:
            _record(self.app, _from_message(message, entries.UNDECODABLE, exc, sender=self))
        finally:
            result = original(self, message, exc)
        return result

    on_decode_error.celery_fleet_dead_letter = True  # type: ignore[attr-defined]
    on_decode_error.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(Consumer, "on_decode_error", on_decode_error)  # noqa: B010 (patching a class)


def _from_message(
    message: Any,
    reason: str,
    exc: BaseException | None,
    *,
    sender: Any = None,
    name: str | None = None,
    task_id: str | None = None,
) -> Entry:
    headers = getattr(message, "headers", None)
    headers = headers if isinstance(headers, Mapping) else {}
    delivery = getattr(message, "delivery_info", None) or {}
    values: dict[str, Any] = {
        "task_id": str(task_id or headers.get("id") or ""),
        "name": str(name or headers.get("task") or ""),
        "queue": _queue(delivery),
        "retries": int(headers.get("retries") or 0),
        "hostname": str(getattr(sender, "hostname", "") or ""),
        "eta": str(headers.get("eta") or ""),
        "requeued_from": str(headers.get(REQUEUED_FROM) or ""),
    }
    call = _decoded_call(message) if reason != entries.UNDECODABLE else None
    if call is not None:
        args_text, args_cut = entries.dump_json(call[0])
        kwargs_text, kwargs_cut = entries.dump_json(call[1])
        values.update(args=args_text, kwargs=kwargs_text, truncated=args_cut or kwargs_cut)
    else:
        values["body"] = entries.body_text(getattr(message, "body", b""))
    return Entry(reason=reason, failed_at=entries.now(), **values, **entries.exception_fields(exc))


def _decoded_call(message: Any) -> tuple[list[Any], dict[str, Any]] | None:
    """(args, kwargs) of a protocol 2 task message, if its body decodes to one."""
    try:
        body = message.decode()
    except Exception:
        return None
    if isinstance(body, list | tuple) and len(body) == 3:
        args, kwargs, _embed = body
        if isinstance(args, list | tuple) and isinstance(kwargs, Mapping):
            return list(args), dict(kwargs)
    return None
