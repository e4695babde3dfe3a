"""`make bench`: figures a user can rerun. Reports; never fails on a slow machine.

    python -m bench.run all|throughput|failover|footprint|converge [--quick]

Everything runs against real processes: redis-server/redis-sentinel on loopback (the test
harness in tests/harness), real `celery worker` subprocesses configured only by
celery_fleet.settings, the real Docker engine for image sizes and molecule for converge.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT / "tests"))

from celery import Celery  # noqa: E402
from celery.result import ResultSet  # noqa: E402

from celery_fleet.settings import load  # noqa: E402
from harness import envs  # noqa: E402
from harness.pki import Pki  # noqa: E402
from harness.redis_procs import Listen, RedisFleet  # noqa: E402
from harness.worker import Worker  # noqa: E402

Env = dict[str, str]


@contextmanager
def fleet_in(folder: Path) -> Iterator[RedisFleet]:
    fleet = RedisFleet(folder / "fleet", Pki.create(folder / "pki"))
    try:
        yield fleet
    finally:
        fleet.close()


def client(env: Env) -> Celery:
    app = Celery("bench-client", set_as_current=False)
    app.conf.update(load(env))
    return app


def worker(env: Env, folder: Path, concurrency: int = 2) -> Worker:
    return Worker(
        app="bench_app", env=env, folder=folder, pythonpath=[BENCH], concurrency=concurrency
    ).start()


# --------------------------------------------------------------------------------------
# throughput: the same no-op task through plain, TLS, and Sentinel + TLS
# --------------------------------------------------------------------------------------
def _setup(mode: str, fleet: RedisFleet) -> Env:
    if mode == "plain redis://":
        node = fleet.server("plain", listen=Listen.TCP)
        return {
            "CELERY_BROKER_URL": envs.url(fleet, node, 0),
            "CELERY_RESULT_BACKEND": envs.url(fleet, node, 1),
        }
    primary = fleet.server("primary")
    if mode == "rediss:// verified":
        return {
            "CELERY_BROKER_URL": envs.url(fleet, primary, 0),
            "CELERY_RESULT_BACKEND": envs.url(fleet, primary, 1),
            **envs.tls(fleet),
        }
    if "replica" in mode:
        fleet.server("replica", replica_of=primary)
    fleet.sentinels(primary)
    return envs.sentinel(fleet)


def _rate(app: Celery, n: int) -> float:
    started = time.perf_counter()
    results = [app.send_task("bench.noop") for _ in range(n)]
    ResultSet(results, app=app).get(timeout=300, propagate=True)
    return n / (time.perf_counter() - started)


def throughput(quick: bool) -> dict[str, Any]:
    """All three stacks stay up side by side and are measured in turns (a, b, c, a, b, c...)
    so that a load change on the machine hits every path alike; medians are reported."""
    n, rounds = (300, 1) if quick else (1000, 5)
    # (c) twice: with a replica (the deployed shape; on one 2-core machine the replication
    # stream competes for the same CPU) and without (the client path alone).
    modes = [
        "plain redis://",
        "rediss:// verified",
        "sentinel + TLS, primary + replica",
        "sentinel + TLS, primary only",
    ]
    runs: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        stacks = []
        try:
            for i, mode in enumerate(modes):
                fleet = RedisFleet(Path(tmp) / f"fleet{i}", Pki.create(Path(tmp) / f"pki{i}"))
                stacks.append((mode, fleet, None, None))
                env = _setup(mode, fleet)
                stacks[-1] = (mode, fleet, worker(env, Path(tmp) / f"w{i}"), client(env))
            for _, _, _, app in stacks:
                _rate(app, 100)  # warm up connections and pools
            for _ in range(rounds):
                for mode, _, _, app in stacks:
                    runs[mode].append(round(_rate(app, n), 1))
        finally:
            for _, fleet, w, app in stacks:
                if app is not None:
                    app.close()
                if w is not None:
                    w.stop()
                fleet.close()
    figures = {m: {"tasks_per_s": statistics.median(r), "runs": r} for m, r in runs.items()}
    base = figures[modes[0]]["tasks_per_s"]
    for mode in modes:
        figures[mode]["ratio_to_plain"] = round(figures[mode]["tasks_per_s"] / base, 3)
    return {
        "tasks": n,
        "rounds": rounds,
        "worker": "prefork, concurrency 2, celery_fleet production defaults",
        "modes": figures,
        "target": "(b)/(a) and (c)/(a) >= 0.9",
    }


# --------------------------------------------------------------------------------------
# failover: K kills of the primary under a steady stream of tasks
# --------------------------------------------------------------------------------------
class Producer(threading.Thread):
    """Publishes bench.mark at a fixed rate; a publish that fails is retried until it is
    accepted, and only accepted tasks count as sent."""

    def __init__(self, app: Celery, path: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.app, self.path, self.interval = app, path, 1.0 / rate
        self.sent: dict[int, float] = {}  # token -> time the publish started
        self.errors = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        token = 0
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            started = time.time()
            try:
                self.app.send_task("bench.mark", args=(token, self.path))
            except Exception:
                self.errors += 1
                time.sleep(0.1)
                continue
            self.sent[token] = started
            token += 1
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def _runs(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        token, at = line.split()
        rows.append((int(token), float(at)))
    return rows


def failover(quick: bool) -> dict[str, Any]:
    kills, rate = (2, 10.0) if quick else (10, 20.0)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, fleet_in(Path(tmp)) as fleet:
        primary = fleet.server("redis-1")
        fleet.server("redis-2", replica_of=primary)
        fleet.server("redis-3", replica_of=primary)
        fleet.sentinels(primary, down_after_ms=1000, failover_timeout_ms=6000)
        env = envs.sentinel(fleet)
        marks = Path(tmp) / "marks.log"
        w = worker(env, Path(tmp) / "w")
        app = client(env)
        producer = Producer(app, str(marks), rate)
        producer.start()
        events: list[dict[str, float]] = []
        try:
            for _ in range(kills):
                time.sleep(3.0)
                old = fleet.primary()
                killed_at = time.time()
                fleet.kill(old)
                new = fleet.wait_for_failover(old, timeout=60)
                promoted_at = time.time()
                fleet.restart(old)
                fleet.wait_for(
                    lambda old=old, new=new: (
                        fleet.info(old, "replication").get("master_link_status") == "up"
                        and fleet.info(old, "replication").get("master_port") == new.port
                    ),
                    "the old primary to rejoin as a replica",
                    timeout=60,
                )
                events.append({"killed_at": killed_at, "promoted_after_s": promoted_at - killed_at})
            time.sleep(3.0)
        finally:
            producer.stop_event.set()
            producer.join(timeout=30)
        sent = dict(producer.sent)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if set(sent) <= {t for t, _ in _runs(marks)}:
                break
            time.sleep(0.5)
        app.close()
        w.stop(timeout=60)
        runs = _runs(marks)
        log_tail = [ln for ln in w.log().splitlines() if "bench.mark" not in ln][-40:]
    counts = Counter(t for t, _ in runs)
    lost = sorted(set(sent) - set(counts))
    twice = sorted(t for t, c in counts.items() if c > 1)
    completed_at: dict[int, float] = {}
    for token, at in runs:
        completed_at.setdefault(token, at)
    stalls = []
    for e in events:
        # the first task published after the kill, and when it completed
        after = [(sent[t], t) for t in sent if sent[t] >= e["killed_at"] and t in completed_at]
        if after:
            first = min(after)[1]
            e["stall_s"] = round(completed_at[first] - e["killed_at"], 3)
            stalls.append(e["stall_s"])
    return {
        "kills": kills,
        "rate_per_s": rate,
        "sent": len(sent),
        "lost": len(lost),
        "lost_tokens": lost[:50],
        "worker_log_tail": log_tail if lost else [],
        "run_twice": len(twice),
        "publish_retries": producer.errors,
        "stall_s": stalls,
        "median_stall_s": round(statistics.median(stalls), 3) if stalls else None,
        "max_stall_s": max(stalls) if stalls else None,
        "promotion_s": [round(e["promoted_after_s"], 3) for e in events],
        "sentinel": "down-after-milliseconds 1000, failover-timeout 6000, 3 Sentinels, quorum 2",
        "stall_definition": "kill -> completion of the first task published after the kill",
        "target": "median stall <= 3 s, 0 lost over all kills",
    }


# --------------------------------------------------------------------------------------
# footprint: image sizes and an idle worker's memory
# --------------------------------------------------------------------------------------
def _rss_kib(pid: int) -> int:
    total = 0
    pids = [pid]
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    pids += [int(c) for c in children]
    for p in pids:
        status = Path(f"/proc/{p}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(match.group(1)) if match else 0
    return total


def footprint(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, fleet_in(Path(tmp)) as fleet:
        primary = fleet.server("primary")
        env = {
            "CELERY_BROKER_URL": envs.url(fleet, primary, 0),
            "CELERY_RESULT_BACKEND": envs.url(fleet, primary, 1),
            **envs.tls(fleet),
        }
        w = worker(env, Path(tmp) / "w", concurrency=2)
        try:
            time.sleep(5 if not quick else 2)
            assert w.proc is not None
            out["idle_worker_rss_mib"] = round(_rss_kib(w.proc.pid) / 1024, 1)
            out["idle_worker"] = "prefork, concurrency 2: main process + 2 children"
        finally:
            w.stop()
    images = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    out["images"] = {
        name: size
        for name, size in (line.split(" ", 1) for line in images if " " in line)
        if name.startswith(("celery-fleet", "cf-")) or "bookworm-slim" in name
    }
    return out


# --------------------------------------------------------------------------------------
# converge: first and second run of the three-node site playbook (molecule scenario fleet)
# --------------------------------------------------------------------------------------
def _molecule(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/molecule"), "-c", "molecule/base.yml", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"molecule {' '.join(args)} failed:\n{proc.stdout[-3000:]}")
    return time.perf_counter() - started, proc.stdout + proc.stderr


def converge(quick: bool) -> dict[str, Any]:
    # The three-node site playbook (Redis, Sentinels, Celery, Flower): the `fleet` scenario,
    # the same path as `make deploy` (needs `make molecule-image wheelhouse`: make bench).
    scenario = "fleet"
    if not (ROOT / "molecule" / scenario / "molecule.yml").exists():
        return {"skipped": f"no molecule scenario {scenario}"}
    try:
        _molecule("create", "-s", scenario)
        first, _ = _molecule("converge", "-s", scenario)
        second, log = _molecule("converge", "-s", scenario)
    finally:
        subprocess.run(
            [
                str(ROOT / ".venv/bin/molecule"),
                "-c",
                "molecule/base.yml",
                "destroy",
                "-s",
                scenario,
            ],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
    changed = [int(c) for c in re.findall(r"changed=(\d+)", log)]
    return {
        "scenario": scenario,
        "first_s": round(first, 1),
        "second_s": round(second, 1),
        "second_over_first": round(second / first, 3),
        "second_changed": sum(changed),
        "target": "second run: 0 changed, at most 1/3 of the first",
    }


# --------------------------------------------------------------------------------------
PARTS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "throughput": throughput,
    "failover": failover,
    "footprint": footprint,
    "converge": converge,
}


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Benchmark results ({results['when']})", "", f"Machine: {results['machine']}", ""]
    t = results.get("throughput")
    if t and "modes" in t:
        lines += [
            "## Throughput (no-op task, broker + result backend)",
            "",
            "| path | tasks/s | ratio to plain |",
            "|---|---|---|",
        ]
        lines += [
            f"| {m} | {v['tasks_per_s']} | {v['ratio_to_plain']} |" for m, v in t["modes"].items()
        ]
        lines += ["", f"Target: {t['target']}.", ""]
    f = results.get("failover")
    if f and "kills" in f:
        lines += [
            "## Failover",
            "",
            f"{f['kills']} kills of the primary at {f['rate_per_s']} tasks/s: "
            f"{f['sent']} sent, **{f['lost']} lost**, {f['run_twice']} run twice; "
            f"stall median **{f['median_stall_s']} s**, max {f['max_stall_s']} s "
            f"(stalls: {f['stall_s']}). Target: {f['target']}.",
            "",
        ]
    c = results.get("converge")
    if c and "first_s" in c:
        lines += [
            f"## Converge (molecule {c['scenario']}: playbooks/site.yml on three nodes)",
            "",
            f"First run {c['first_s']} s, second {c['second_s']} s "
            f"({c['second_over_first']} of the first), changed on the second: "
            f"{c['second_changed']}. Target: {c['target']}.",
            "",
        ]
    fp = results.get("footprint")
    if fp and "idle_worker_rss_mib" in fp:
        lines += [
            "## Footprint",
            "",
            f"Idle worker ({fp['idle_worker']}): {fp['idle_worker_rss_mib']} MiB RSS.",
            "",
        ]
        lines += [f"- image `{k}`: {v}" for k, v in fp.get("images", {}).items()]
        lines += [""]
    for name, value in results.items():
        if isinstance(value, dict) and ("error" in value or "skipped" in value):
            lines += [f"- {name}: {value.get('error') or value.get('skipped')}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("parts", nargs="*", default=["all"], help="all or " + ", ".join(PARTS))
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    args = parser.parse_args(argv)
    names = list(PARTS) if "all" in args.parts else args.parts
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "quick": args.quick,
    }
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        started = time.perf_counter()
        try:
            results[name] = PARTS[name](args.quick)
        except Exception as exc:  # a benchmark reports; it does not fail the build
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
        results[name]["wall_s"] = round(time.perf_counter() - started, 1)
        print(f"[bench] {name}: {json.dumps(results[name])[:600]}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = results["when"].replace(":", "").replace("-", "")
    text = json.dumps(results, indent=2)
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"bench-{stamp}.json").write_text(text)
    (RESULTS / "latest.md").write_text(markdown(results))
    print((RESULTS / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
