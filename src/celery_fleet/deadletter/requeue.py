"""Send a dead task again: same name, args, kwargs and queue, a new task id, the old id in
the ``celery_fleet_requeued_from`` header. The entry is deleted only after the publish
returned (Celery retries a publish per ``task_publish_retry_policy``); a publish that
fails leaves the entry in place, so nothing is lost, but a crash between the publish and
the delete can leave an entry for a task that was sent again: requeue idempotent tasks
(docs/deadletters.md).

A batch (``requeue ID...`` or ``--all``) runs on one connection and one producer. The
first error that is not about the entry itself (the broker gone after Celery's retries, a
refused command) stops it: the entries not reached yet stay in the stream, untouched, and
the result says which were requeued before, where it stopped and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery.utils import uuid

from . import store
from .capture import REQUEUED_FROM
from .entry import Entry


class RequeueError(RuntimeError):
    """This entry cannot be sent again as it was; the message says why."""


@dataclass(frozen=True)
class Requeued:
    entry_id: str
    name: str
    old_task_id: str
    new_task_id: str
    queue: str


@dataclass(frozen=True)
class Stopped:
    """Why and where a batch stopped. ``entry_id`` and every entry in ``not_tried`` are
    still in the stream. ``sent_as`` is set when the task of ``entry_id`` was published
    (as that new task id) and only deleting its entry failed: requeueing that entry again
    would run the task twice."""

    entry_id: str
    error: str
    not_tried: list[str] = field(default_factory=list)
    sent_as: str = ""


@dataclass(frozen=True)
class Batch:
    """What a requeue did: the entries sent again (and deleted), the entries that could
    not be (not found, not requeueable), and ``stopped`` if an error ended it early."""

    requeued: list[Requeued] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stopped: Stopped | None = None


class _DeleteFailed(Exception):
    def __init__(self, new_task_id: str, cause: Exception) -> None:
        super().__init__(str(cause))
        self.new_task_id = new_task_id
        self.cause = cause


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _checked_call(item: Entry) -> tuple[list[Any], dict[str, Any]]:
    if not item.name:
        raise RequeueError(f"{item.entry_id}: no task name ({item.reason}); inspect it with show")
    if item.truncated:
        raise RequeueError(f"{item.entry_id}: its arguments were cut when stored")
    if not item.requeueable:
        raise RequeueError(f"{item.entry_id}: no arguments stored ({item.reason})")
    try:
        return item.call()
    except (ValueError, TypeError) as exc:
        raise RequeueError(f"{item.entry_id}: its arguments are not JSON as sent") from exc


def requeue_entry(app: Any, connection: Any, producer: Any, key: str, item: Entry) -> Requeued:
    """Publish ``item``'s task again through ``producer`` (on ``connection``), then delete
    the entry. RequeueError: the entry cannot be sent (nothing happened); _DeleteFailed:
    sent, not deleted; anything else: the publish failed (the entry is kept)."""
    args, kwargs = _checked_call(item)
    new_id = uuid()
    options: dict[str, Any] = {"headers": {REQUEUED_FROM: item.task_id or item.entry_id}}
    if item.queue:
        options["queue"] = item.queue
    # The operator app has no result backend (operator.Operator), so nothing subscribes
    # to the new task's result; ``ignore_result`` is not passed because Celery puts it in
    # the message and the worker would then not store the requeued run's result.
    app.send_task(item.name, args=args, kwargs=kwargs, task_id=new_id, producer=producer, **options)
    try:
        store.delete(connection.default_channel.client, key, [item.entry_id])
    except Exception as exc:
        raise _DeleteFailed(new_id, exc) from exc
    return Requeued(item.entry_id, item.name, item.task_id, new_id, item.queue)


def requeue(
    app: Any,
    connection: Any,
    key: str,
    *,
    entry_ids: Iterable[str] = (),
    every: bool = False,
    name: str | None = None,
) -> Batch:
    """Requeue the given entries (or every entry, of task ``name`` if given), oldest
    first for ``every``, in the given order otherwise; stop at the first error that is not
    about one entry. Errors while reading the entries, before anything is sent, are
    raised."""
    client = connection.default_channel.client
    problems: list[str] = []
    if every:
        items = [e for e in store.iterate(client, key) if name is None or e.name == name]
    else:
        items = []
        for entry_id in entry_ids:
            found = store.get(client, key, entry_id)
            if found is None:
                problems.append(f"{entry_id}: no such entry")
            else:
                items.append(found)
    done: list[Requeued] = []
    with app.amqp.Producer(connection) as producer:
        for position, item in enumerate(items):
            try:
                done.append(requeue_entry(app, connection, producer, key, item))
            except RequeueError as exc:
                problems.append(str(exc))
            except Exception as exc:  # a failing broker: stop, say what was done
                sent_as = exc.new_task_id if isinstance(exc, _DeleteFailed) else ""
                cause = exc.cause if isinstance(exc, _DeleteFailed) else exc
                rest = [i.entry_id for i in items[position + 1 :]]
                stopped = Stopped(item.entry_id, _error(cause), rest, sent_as)
                return Batch(done, problems, stopped)
    return Batch(done, problems)
