"""How fast ``celery-fleet dead-letters requeue --all`` is through Sentinel + TLS.

    python -m bench.requeue [--entries 200]

A primary, one replica and three Sentinels from the test harness (TLS everywhere, the
role's ACL users); ``--entries`` dead letters of a task no worker consumes are written to
the stream; then the real command runs once, as an operator would (a subprocess with the
app's env file and the operator's login). Reported: wall time of the command, entries per
second, and the connections the primary and the Sentinels accepted meanwhile (INFO stats
``total_connections_received``, minus the probes of this script). Prints JSON; reports,
never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from celery_fleet.deadletter import Entry  # noqa: E402
from celery_fleet.deadletter.operator import PASSWORD_VAR, USERNAME_VAR  # noqa: E402
from harness import envs  # noqa: E402
from harness.pki import Pki  # noqa: E402
from harness.redis_procs import (  # noqa: E402
    DEADLETTER_USER,
    Node,
    RedisFleet,
    env_without_secrets,
)

KEY = "celery-fleet:dead-letters"
QUEUE = "requeue-bench"


def _accepted(fleet: RedisFleet, node: Node) -> int:
    """Connections ``node`` accepted so far, not counting the one this question opens."""
    client = fleet.client(node)
    try:
        return int(client.info("stats")["total_connections_received"]) - 1
    finally:
        client.close()


def measure(folder: Path, entries: int) -> dict[str, Any]:
    fleet = RedisFleet(folder / "fleet", Pki.create(folder / "pki"))
    try:
        primary = fleet.server("redis-1")
        fleet.server("redis-2", replica_of=primary)
        sentinels = fleet.sentinels(primary)
        env = envs.sentinel(fleet)
        admin = fleet.client(primary)
        item = Entry(reason="failed", task_id="t", name="bench.noop", queue=QUEUE)
        with admin.pipeline(transaction=False) as pipe:
            for i in range(entries):
                fields = {**item.to_fields(), "task_id": f"t{i}", "args": f"[{i}]", "kwargs": "{}"}
                pipe.xadd(KEY, fields)
            pipe.execute()
        admin.close()
        env_file = folder / "celery.env"
        operator = {USERNAME_VAR: DEADLETTER_USER, PASSWORD_VAR: fleet.secrets.deadletter}
        env_file.write_text("".join(f"{k}={v}\n" for k, v in {**env, **operator}.items()))
        env_file.chmod(0o600)
        before = {n.name: _accepted(fleet, n) for n in [primary, *sentinels]}
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery_fleet.cli",
                "dead-letters",
                "requeue",
                "--all",
                "--env-file",
                str(env_file),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
            env=env_without_secrets(),
        )
        elapsed = time.perf_counter() - started
        after = {n.name: _accepted(fleet, n) for n in [primary, *sentinels]}
        admin = fleet.client(primary)
        out: dict[str, Any] = {
            "entries": entries,
            "exit": done.returncode,
            "wall_s": round(elapsed, 2),
            "entries_per_s": round(entries / elapsed, 1),
            "connections_to_primary": after[primary.name] - before[primary.name],
            "connections_to_sentinels": sum(after[n.name] - before[n.name] for n in sentinels),
            "left_in_stream": int(admin.xlen(KEY)),
            "queued": int(admin.llen(QUEUE)),
        }
        if done.returncode != 0:
            out["stderr"] = done.stderr[-2000:]
            out["stdout"] = done.stdout[-2000:]
        return out
    finally:
        fleet.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-requeue-") as folder:
        result = measure(Path(folder), args.entries)
    result["machine"] = (
        f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
