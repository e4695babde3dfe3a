"""A steady stream of ``faults.mark`` tasks for the fault tests, and what ran of it.

Each task appends "<pid> <token>" to a marks file outside Redis, so "ran" never depends on
the broker under test; "lost" means published and never ran."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any

from harness.redis_procs import Node, RedisFleet


def runs(path: Path) -> collections.Counter[str]:
    """How many times each token ran."""
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line.split()[1] for line in path.read_text().splitlines())


class Producer:
    """Publishes ``tasks`` tasks, one every ``pace`` seconds, from a thread; a publish that
    failed for good was never sent, and is kept in ``errors``, not in ``published``."""

    def __init__(self, client: Any, marks: Path, tasks: int, pace: float) -> None:
        self.client, self.marks, self.tasks, self.pace = client, marks, tasks, pace
        self.published: list[str] = []
        self.errors: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Producer:
        self.thread.start()
        return self

    def _run(self) -> None:
        for i in range(self.tasks):
            token = f"t{i}"
            try:
                self.client.send_task("faults.mark", args=(token, str(self.marks)))
            except Exception as exc:
                self.errors.append(f"{token}: {exc!r}")
            else:
                self.published.append(token)
            time.sleep(self.pace)
        self.done.set()

    def wait_all_ran(self, within: float) -> collections.Counter[str]:
        """Poll the marks until every published task ran or ``within`` seconds passed."""
        deadline = time.monotonic() + within
        counts = runs(self.marks)
        while time.monotonic() < deadline and not all(counts[t] for t in self.published):
            time.sleep(0.5)
            counts = runs(self.marks)
        return counts


def primary_with_replica(fleet: RedisFleet) -> Node:
    """A primary and one replica behind three Sentinels (the role's timings); returns the
    primary."""
    first = fleet.server("redis-1")
    fleet.server("redis-2", replica_of=first)
    fleet.sentinels(first)
    return first
