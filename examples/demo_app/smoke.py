"""Send tasks to the running stack and print their results.

    python -m demo_app.smoke            # a few tasks, human-readable
    python -m demo_app.smoke --load 200 --json   # many tasks, a JSON summary (tests)

Exit status 0 only if every task came back with the expected result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from celery import chain, group

from demo_app.app import app
from demo_app.tasks import add, sleep_then, where, xsum

# Publishing rides out a Sentinel failover (a few seconds without a primary).
RETRY = {"max_retries": 60, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 2}


def smoke(timeout: float) -> dict[str, Any]:
    checks: dict[str, tuple[Any, Any]] = {}
    started = time.monotonic()
    checks["add(2, 3)"] = (add.apply_async((2, 3), retry_policy=RETRY).get(timeout=timeout), 5)
    checks["chain add(1,1) | add(10)"] = (
        chain(add.s(1, 1), add.s(10)).apply_async(retry_policy=RETRY).get(timeout=timeout),
        12,
    )
    checks["group xsum x 4"] = (
        group(xsum.s(list(range(n))) for n in (10, 20, 30, 40))
        .apply_async(retry_policy=RETRY)
        .get(timeout=timeout),
        [45, 190, 435, 780],
    )
    hosts = group(where.s() for _ in range(8)).apply_async(retry_policy=RETRY).get(timeout=timeout)
    workers = app.control.inspect(timeout=2.0).ping() or {}
    return {
        "results": {name: {"got": got, "want": want} for name, (got, want) in checks.items()},
        "ok": all(got == want for got, want in checks.values()),
        "workers": sorted(workers),
        "ran_on": sorted(set(hosts)),
        "seconds": round(time.monotonic() - started, 2),
    }


def load(count: int, seconds: float, interval: float, timeout: float) -> dict[str, Any]:
    """Send ``count`` tasks ``interval`` seconds apart, then collect every result."""
    started = time.monotonic()
    pending = []
    for i in range(count):
        pending.append((i, sleep_then.apply_async((seconds, i), retry_policy=RETRY)))
        time.sleep(interval)
    lost, wrong = [], []
    deadline = time.monotonic() + timeout  # for all results together, not each
    for i, result in pending:
        try:
            value = result.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # any failure is a lost task; report which
            lost.append({"task": i, "error": f"{type(exc).__name__}: {exc}"})
            continue
        if value != i:
            wrong.append({"task": i, "got": value})
    return {
        "sent": count,
        "completed": count - len(lost) - len(wrong),
        "lost": lost[:10],
        "wrong": wrong[:10],
        "ok": not lost and not wrong,
        "seconds": round(time.monotonic() - started, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_app.smoke", description=__doc__)
    parser.add_argument("--load", type=int, metavar="N", help="send N tasks instead")
    parser.add_argument("--task-seconds", type=float, default=0.05, help="each task sleeps")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between sends")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for all results")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = (
        load(args.load, args.task_seconds, args.interval, args.timeout)
        if args.load
        else smoke(args.timeout)
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
    elif args.load:
        print(f"{report['completed']}/{report['sent']} tasks completed in {report['seconds']} s")
    else:
        for name, r in report["results"].items():
            mark = "ok  " if r["got"] == r["want"] else "FAIL"
            print(f"  {mark} {name} = {r['got']}")
        print(f"  workers answering ping: {', '.join(report['workers']) or 'none'}")
        print(f"  tasks ran on containers: {', '.join(report['ran_on'])}")
        print(f"  {report['seconds']} s")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
