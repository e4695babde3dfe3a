"""``celery-fleet dead-letters list|show|requeue|purge``: what each prints and returns.

cli.py only parses arguments; the work and the output are here.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TextIO

from . import requeue as requeueing
from . import store
from .entry import Entry
from .operator import Operator

EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT = 0, 1, 2
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not an age; use e.g. 7d, 12h, 30m")
    return float(match.group(1)) * UNITS[match.group(2)]


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "~"


def table(items: Sequence[Entry]) -> str:
    head = ("ENTRY", "FAILED (UTC)", "REASON", "TASK", "QUEUE", "RETRIES", "ERROR")
    rows = [
        (
            e.entry_id,
            _when(e.failed_at),
            e.reason,
            _cell(e.name or "-", 40),
            _cell(e.queue or "-", 16),
            str(e.retries),
            _cell(f"{e.exc_type}: {e.exc_message}" if e.exc_type else "-", 60),
        )
        for e in items
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    )


def detail(item: Entry) -> str:
    lines = [
        f"entry        {item.entry_id}",
        f"reason       {item.reason}",
        f"task         {item.name or '-'}[{item.task_id or '-'}]",
        f"queue        {item.queue or '-'}",
        f"failed at    {_when(item.failed_at)} UTC on {item.hostname or '-'}",
        f"retries      {item.retries}",
        f"args         {item.args or '-'}",
        f"kwargs       {item.kwargs or '-'}",
        f"requeueable  {'yes' if item.requeueable else 'no'}",
    ]
    for label, value in (
        ("eta", item.eta),
        ("requeued from", item.requeued_from),
        ("error", f"{item.exc_type}: {item.exc_message}" if item.exc_type else ""),
    ):
        if value:
            lines.append(f"{label:<13}{value}")
    if item.body:
        lines += ["body", textwrap.indent(item.body, "  ")]
    if item.traceback:
        lines += ["traceback", textwrap.indent(item.traceback.rstrip(), "  ")]
    return "\n".join(lines)


def _dump(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, sort_keys=True, default=str)
    out.write("\n")


def run(
    action: str, env: Mapping[str, str], options: Mapping[str, Any], out: TextIO | None = None
) -> int:
    """Run one action against the deployment ``env`` describes; the exit status. Output
    goes to ``out``, by default the ``sys.stdout`` of the moment."""
    out = sys.stdout if out is None else out
    operator = Operator(env)
    try:
        with operator.connection() as conn:
            conn.ensure_connection(max_retries=3)
            client = conn.default_channel.client
            return _ACTIONS[action](operator, conn, client, options, out)
    finally:
        operator.close()


def _list(op: Operator, conn: Any, client: Any, o: Mapping[str, Any], out: TextIO) -> int:
    items = store.newest(client, op.key, limit=o["limit"], name=o.get("name"))
    if o["json"]:
        _dump([e.as_dict() for e in items], out)
    else:
        total = int(client.xlen(op.key))
        out.write(table(items) + f"\n{len(items)} shown, {total} in {op.key}\n")
    return EXIT_OK


def _show(op: Operator, conn: Any, client: Any, o: Mapping[str, Any], out: TextIO) -> int:
    item = store.get(client, op.key, o["id"])
    if item is None:
        out.write(f"no entry {o['id']} in {op.key}\n")
        return EXIT_PROBLEMS
    if o["json"]:
        _dump(item.as_dict(), out)
    else:
        out.write(detail(item) + "\n")
    return EXIT_OK


def _requeue(op: Operator, conn: Any, client: Any, o: Mapping[str, Any], out: TextIO) -> int:
    batch = requeueing.requeue(
        op.app, conn, op.key, entry_ids=o.get("ids") or (), every=o["all"], name=o.get("name")
    )
    stopped = batch.stopped
    if o["json"]:
        _dump(
            {
                "requeued": [asdict(r) for r in batch.requeued],
                "problems": batch.problems,
                "stopped": asdict(stopped) if stopped else None,
            },
            out,
        )
    else:
        for r in batch.requeued:
            out.write(f"requeued {r.entry_id}: {r.name}[{r.old_task_id}] -> {r.new_task_id}\n")
        for problem in batch.problems:
            out.write(f"not requeued: {problem}\n")
        if stopped:
            out.write(stopped_text(stopped) + "\n")
        summary = f"{len(batch.requeued)} requeued, {len(batch.problems)} not"
        if stopped:
            summary += f", stopped with {1 + len(stopped.not_tried)} kept"
        out.write(summary + "\n")
    if stopped:
        return EXIT_CANNOT
    return EXIT_PROBLEMS if batch.problems else EXIT_OK


def stopped_text(stopped: requeueing.Stopped) -> str:
    """Where a requeue stopped, why, and what that left, for a person."""
    lines = [f"stopped at {stopped.entry_id}: {stopped.error}"]
    rest = len(stopped.not_tried)
    after = f"the {rest} {'entry' if rest == 1 else 'entries'} after it (not tried)"
    if stopped.sent_as:
        lines.append(
            f"{stopped.entry_id}: sent again as {stopped.sent_as}, but its entry could not be "
            "deleted: do not requeue it again (the task would run twice)"
        )
        kept = f"{after} {'is' if rest == 1 else 'are'}" if rest else ""
    else:
        lines.append(f"{stopped.entry_id}: not requeued (its publish failed)")
        kept = f"it and {after} are" if rest else "it is"
    if kept:
        lines.append(f"{kept} still in the stream: requeue again once the error is gone")
    return "\n".join(lines)


def _purge(op: Operator, conn: Any, client: Any, o: Mapping[str, Any], out: TextIO) -> int:
    removed = store.purge_older_than(client, op.key, o["older_than"])
    if o["json"]:
        _dump({"purged": removed, "left": int(client.xlen(op.key))}, out)
    else:
        out.write(f"{removed} entries purged, {int(client.xlen(op.key))} left in {op.key}\n")
    return EXIT_OK


def _stats(op: Operator, conn: Any, client: Any, o: Mapping[str, Any], out: TextIO) -> int:
    found = store.metrics(client, op.key)
    if o["json"]:
        _dump(asdict(found), out)
    else:
        out.write(f"{found.length} entries in {op.key}\n")
        for name, count in sorted(found.by_name.items(), key=lambda kv: -kv[1]):
            out.write(f"{count:>8}  {name}\n")
    return EXIT_OK


_ACTIONS = {
    "list": _list,
    "show": _show,
    "requeue": _requeue,
    "purge": _purge,
    "stats": _stats,
}
