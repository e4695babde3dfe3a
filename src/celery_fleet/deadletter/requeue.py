"""Send a dead task again: same name, args, kwargs and queue, a new task id, the old id in
the ``celery_fleet_requeued_from`` header. The entry is deleted only after the publish
returned (Celery retries a publish per ``task_publish_retry_policy``); a publish that
fails leaves the entry in place, so nothing is lost, but a crash between the publish and
the delete can leave an entry for a task that was sent again: requeue idempotent tasks
(docs/deadletters.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


def requeue_entry(app: Any, connection: Any, key: str, item: Entry) -> Requeued:
    if not item.name:
        raise RequeueError(f"{item.entry_id}: no task name ({item.reason}); inspect it with show")
    if item.truncated:
        raise RequeueError(f"{item.entry_id}: its arguments were cut when stored")
    if not item.requeueable:
        raise RequeueError(f"{item.entry_id}: no arguments stored ({item.reason})")
    args, kwargs = item.call()
    new_id = uuid()
    options: dict[str, Any] = {"headers": {REQUEUED_FROM: item.task_id or item.entry_id}}
    if item.queue:
        options["queue"] = item.queue
    with app.amqp.Producer(connection) as producer:
        app.send_task(
            item.name, args=args, kwargs=kwargs, task_id=new_id, producer=producer, **options
        )
    store.delete(connection.default_channel.client, key, [item.entry_id])
    return Requeued(item.entry_id, item.name, item.task_id, new_id, item.queue)


def requeue(
    app: Any,
    connection: Any,
    key: str,
    *,
    entry_ids: Iterable[str] = (),
    every: bool = False,
    name: str | None = None,
) -> tuple[list[Requeued], list[str]]:
    """Requeue the given entries (or every entry, of task ``name`` if given): what was
    sent, and why the others were not."""
    client = connection.default_channel.client
    done: list[Requeued] = []
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
    for item in items:
        try:
            done.append(requeue_entry(app, connection, key, item))
        except RequeueError as exc:
            problems.append(str(exc))
    return done, problems
