"""Read, delete, purge and count dead letters: what an operator (or an exporter) does.

Every function takes a redis-py client and the stream key (``config.stream_key``). The
app user cannot call them (its ACL lets it only XADD to the key); the operator user can.
Stream IDs are the XADD time in milliseconds, so ``purge_older_than`` is one
``XTRIM MINID`` (https://redis.io/commands/xtrim/).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .entry import Entry

BATCH = 500


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def iterate(client: Any, key: str, *, batch: int = BATCH) -> Iterator[Entry]:
    """Every entry, oldest first, read in batches."""
    start = "-"
    while True:
        rows = client.xrange(key, min=start, max="+", count=batch)
        for entry_id, fields in rows:
            yield Entry.from_fields(entry_id, fields)
        if len(rows) < batch:
            return
        start = "(" + _text(rows[-1][0])


def newest(client: Any, key: str, *, limit: int, name: str | None = None) -> list[Entry]:
    """Up to ``limit`` entries, newest first (only task ``name`` if given)."""
    found: list[Entry] = []
    end = "+"
    while len(found) < limit:
        rows = client.xrevrange(key, max=end, min="-", count=BATCH)
        for entry_id, fields in rows:
            item = Entry.from_fields(entry_id, fields)
            if name is None or item.name == name:
                found.append(item)
                if len(found) == limit:
                    break
        if len(rows) < BATCH:
            break
        end = "(" + _text(rows[-1][0])
    return found


def get(client: Any, key: str, entry_id: str) -> Entry | None:
    rows = client.xrange(key, min=entry_id, max=entry_id, count=1)
    return Entry.from_fields(rows[0][0], rows[0][1]) if rows else None


def delete(client: Any, key: str, entry_ids: Iterable[str]) -> int:
    ids = list(entry_ids)
    return int(client.xdel(key, *ids)) if ids else 0


def purge_older_than(client: Any, key: str, seconds: float, *, now: float | None = None) -> int:
    """Delete the entries written more than ``seconds`` ago; how many went."""
    cutoff_ms = int(((time.time() if now is None else now) - seconds) * 1000)
    return int(client.xtrim(key, minid=str(max(cutoff_ms, 0)), approximate=False))


@dataclass(frozen=True)
class Metrics:
    """Stream length and entries per task name (for a Prometheus exporter)."""

    length: int
    by_name: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)


def metrics(client: Any, key: str, *, per_name: bool = True) -> Metrics:
    """XLEN, and with ``per_name`` the counts per task name and reason. Those read every
    entry (tracebacks included: up to tens of MiB at MAXLEN 10000), so an exporter should
    ask for them rarely (minutes) and for the length as often as it likes."""
    length = int(client.xlen(key))
    if not per_name:
        return Metrics(length=length)
    names: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for item in iterate(client, key, batch=2000):
        names[item.name or "(none)"] += 1
        reasons[item.reason or "(none)"] += 1
    return Metrics(length=length, by_name=dict(names), by_reason=dict(reasons))
