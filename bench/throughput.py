"""The throughput part: a no-op task through broker and result backend, per stack.

Every stack (its own Redis, its own worker, its own client) stays up for the whole run and
the stacks are measured in turns (a, b, c, a, b, c, ...), so that a load change on the
shared machine hits every row alike; read the ratios, not the rates. Per row and round:

- tasks/s (send ``tasks`` no-op tasks, then fetch every result);
- Redis commands per task: the delta of ``INFO commandstats`` on the stack's data node
  (the primary), the bench's own INFO calls left out, with the five largest commands;
- CPU seconds per task of the worker (main process + pool children, exited children
  included), the producer (this process: publishing and fetching results) and Redis, from
  ``/proc/<pid>/stat``; on the RabbitMQ rows, the broker's (``beam.smp``) and the results
  Redis' apart, and no Redis commands (``bench/rabbit_rows.py``).

Rows: Celery's defaults (no celery_fleet: ``bench/celery_defaults_app.py``) on plain
``redis://`` and verified ``rediss://``; celery_fleet's defaults on plain ``redis://``,
``rediss://`` and Sentinel + TLS; and, on plain ``redis://``, celery_fleet's defaults with
one thing changed per row (``VARIANTS``), to price each default on its own; celery_fleet's
defaults with RabbitMQ (amqps://) as the broker and results on ``rediss://``, with publisher
confirms and without (``bench/rabbit_rows.py``; left out, and said so, where
``rabbitmq-server`` is not installed).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import ResultSet

from bench import rabbit_rows
from celery_fleet.settings import load
from harness import envs
from harness.pki import Pki
from harness.redis_procs import Listen, Node, RedisFleet
from harness.worker import Worker

Env = dict[str, str]
BENCH = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
CONCURRENCY = 2

# name -> (path, config, env). path: plain | rediss | rediss+replica | sentinel |
# sentinel+replica | amqps (RabbitMQ broker, results on rediss://: bench/rabbit_rows.py);
# config: "celery" (Celery's defaults) or "fleet" (celery_fleet.celeryconfig).
BASELINES: dict[str, tuple[str, str, Env]] = {
    "Celery's defaults, plain redis://": ("plain", "celery", {}),
    "Celery's defaults, rediss:// verified": ("rediss", "celery", {}),
    "celery-fleet, plain redis://": ("plain", "fleet", {}),
    "celery-fleet, rediss:// verified": ("rediss", "fleet", {}),
    "celery-fleet, Sentinel + TLS (primary only)": ("sentinel", "fleet", {}),
}
# One change each against "celery-fleet, plain redis://" (the env is added to its env):
# the extras that are opt-in since 0.1.0 turned back on one at a time, then all together
# (celery-fleet's defaults before), then what stays on by default turned off one at a time.
# Variables of the deployed contract wherever one exists; BENCH_* ones are bench-only.
OPT_IN: dict[str, Env] = {
    "task events on (worker_send_task_events, task_send_sent_event)": {
        "CELERY_WORKER_SEND_TASK_EVENTS": "true",
        "CELERY_TASK_SEND_SENT_EVENT": "true",
    },
    "worker_send_task_events on (what Flower turns on)": {
        "CELERY_WORKER_SEND_TASK_EVENTS": "true",
    },
    "task_track_started on": {"CELERY_TASK_TRACK_STARTED": "true"},
    "result_extended on": {"CELERY_RESULT_EXTENDED": "true"},
    "result_compression gzip": {"CELERY_RESULT_COMPRESSION": "gzip"},
}
PREVIOUS_DEFAULTS: Env = {k: v for extra in OPT_IN.values() for k, v in extra.items()}
VARIANTS: dict[str, Env] = {
    **OPT_IN,
    "all of the above on (celery-fleet's defaults before)": PREVIOUS_DEFAULTS,
    "result_expires 1 day (Celery's)": {"CELERY_RESULT_EXPIRES": "86400"},
    # Celery's default is none; the celery command reads this variable as its
    # --max-tasks-per-child option too, which takes only a number.
    "worker_max_tasks_per_child 10**6 (~Celery's none)": {
        "CELERY_WORKER_MAX_TASKS_PER_CHILD": "1000000",
    },
    "text logs (CELERY_FLEET_LOG_FORMAT=text)": {"CELERY_FLEET_LOG_FORMAT": "text"},
    "dead letters off (CELERY_FLEET_DEAD_LETTERS=false)": {"CELERY_FLEET_DEAD_LETTERS": "false"},
    "failover guards off (patches, fanout; bench-only)": {"BENCH_WITHOUT_FAILOVER_GUARDS": "1"},
    "unacked sweep Kombu's (throttle 10: every ~100 s)": {
        "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps({"unacked_restore_throttle": 10}),
    },
    "prefetch multiplier 4 (Celery's; a guarantee, stays 1)": {
        "CELERY_WORKER_PREFETCH_MULTIPLIER": "4",
    },
    "acks early (Celery's; a guarantee, stays late)": {
        "CELERY_TASK_ACKS_LATE": "false",
        "CELERY_TASK_REJECT_ON_WORKER_LOST": "false",
    },
}
# Not run unless BENCH_THROUGHPUT_ROWS names them: the transports side by side on the TLS +
# replica path (WAIT 1 needs the replica), as measured for reliable fetch.
OPTIONAL: dict[str, tuple[str, str, Env]] = {
    "celery-fleet, rediss:// + replica, Kombu's transport": ("rediss+replica", "fleet", {}),
    "celery-fleet, rediss:// + replica, reliable fetch": (
        "rediss+replica",
        "fleet",
        {"CELERY_FLEET_RELIABLE_FETCH": "true"},
    ),
    "celery-fleet, rediss:// + replica, reliable fetch + WAIT 1": (
        "rediss+replica",
        "fleet",
        {"CELERY_FLEET_RELIABLE_FETCH": "true", "CELERY_BROKER_WAIT_REPLICAS": "1"},
    ),
    "celery-fleet, Sentinel + TLS, primary + replica": ("sentinel+replica", "fleet", {}),
}
FLEET_PLAIN = "celery-fleet, plain redis://"
CELERY_PLAIN = "Celery's defaults, plain redis://"


def _cpu_of(pid: int) -> tuple[float, float]:
    """(own + reaped children's CPU seconds, own only) of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK, (utime + stime) / TICK


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return kids


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its children, live or reaped."""
    total = _cpu_of(pid)[0]
    for kid in _children(pid):
        try:
            total += _cpu_of(kid)[1]
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between the listing and the read: counted on the next read
    return total


def self_cpu() -> float:
    return time.process_time()


@dataclass
class Stack:
    name: str
    path: str
    config: str
    env: Env
    fleet: RedisFleet
    data: Node  # the node the commands are counted on (RabbitMQ rows: the results' node)
    broker: rabbit_rows.Broker | None = None  # RabbitMQ rows only
    worker: Worker | None = None
    app: Celery | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)

    def commandstats(self) -> Counter[str]:
        """Redis commands on the data node; none counted on a RabbitMQ row's broker."""
        stats = self.fleet.info(self.data, "commandstats")
        return Counter(
            {
                k.removeprefix("cmdstat_"): int(v["calls"])
                for k, v in stats.items()
                if k != "cmdstat_info"
            }
        )

    def redis_cpu(self) -> float:
        assert self.data.proc is not None
        return _cpu_of(self.data.proc.pid)[1]

    def rabbitmq_cpu(self) -> float:
        assert self.broker is not None
        return _cpu_of(self.broker.cpu_pid())[1]

    def worker_cpu(self) -> float:
        assert self.worker is not None
        assert self.worker.proc is not None
        return tree_cpu(self.worker.proc.pid)


def _celery_conf(fleet: RedisFleet, path: str) -> dict[str, Any]:
    """What a plain Celery user sets for verified TLS: the CA, CERT_REQUIRED."""
    if path != "rediss":
        return {}
    tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": str(fleet.pki.ca)}
    return {"broker_use_ssl": tls, "redis_backend_use_ssl": tls}


def _build(name: str, path: str, config: str, extra: Env, folder: Path) -> Stack:
    fleet = RedisFleet(folder / "fleet", Pki.create(folder / "pki"))
    try:
        broker = None
        if path == rabbit_rows.PATH:
            broker = rabbit_rows.start(fleet, folder / "rabbit", fleet.pki, extra)
            data = broker.results
        elif path == "plain":
            data = fleet.server("plain", listen=Listen.TCP)
        else:
            data = fleet.server("primary")
            if path.endswith("+replica"):
                fleet.server("replica", replica_of=data)
        if broker is not None:
            env = broker.env
        elif path.startswith("sentinel"):
            fleet.sentinels(data)
            env = envs.sentinel(fleet)
        else:
            env = {
                "CELERY_BROKER_URL": envs.url(fleet, data, 0),
                "CELERY_RESULT_BACKEND": envs.url(fleet, data, 1),
                **(envs.tls(fleet) if path.startswith("rediss") and config == "fleet" else {}),
            }
        stack = Stack(name, path, config, {**env, **extra}, fleet, data, broker)
        if config == "celery":
            conf = _celery_conf(fleet, path)
            worker_env = {**env, "BENCH_CELERY_CONF": json.dumps(conf)}
            stack.worker = Worker(
                app="celery_defaults_app",
                env=worker_env,
                folder=folder / "w",
                pythonpath=[BENCH],
                concurrency=CONCURRENCY,
            ).start()
            app = Celery("bench-client-celery", set_as_current=False)
            app.conf.update(
                broker_url=env["CELERY_BROKER_URL"],
                result_backend=env["CELERY_RESULT_BACKEND"],
                **conf,
            )
        else:
            stack.worker = Worker(
                app="bench_app",
                env=stack.env,
                folder=folder / "w",
                pythonpath=[BENCH],
                concurrency=CONCURRENCY,
            ).start()
            app = Celery("bench-client", set_as_current=False)
            app.conf.update(load({k: v for k, v in stack.env.items() if k.startswith("CELERY")}))
        stack.app = app
        return stack
    except BaseException:
        if broker is not None:
            broker.close()
        fleet.close()
        raise


def _cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each process of the stack (RabbitMQ rows: ``rabbitmq`` too,
    ``redis`` being the results' node only)."""
    cpu = {"worker": stack.worker_cpu(), "producer": self_cpu(), "redis": stack.redis_cpu()}
    if stack.broker is not None:
        cpu["rabbitmq"] = stack.rabbitmq_cpu()
    return cpu


def _round(stack: Stack, n: int) -> dict[str, Any]:
    assert stack.app is not None
    redis_broker = stack.broker is None
    before_cmds = stack.commandstats() if redis_broker else Counter[str]()
    before_cpu = _cpu(stack)
    started = time.perf_counter()
    results = [stack.app.send_task("bench.noop") for _ in range(n)]
    ResultSet(results, app=stack.app).get(timeout=300, propagate=True)
    elapsed = time.perf_counter() - started
    # Let the worker finish its acks and events for the last tasks before counting.
    time.sleep(0.3)
    after_cpu = _cpu(stack)
    cmds = stack.commandstats() - before_cmds if redis_broker else Counter[str]()
    return {
        "tasks_per_s": round(n / elapsed, 1),
        # the broker's commands; a RabbitMQ row has none to count (null, "n/a")
        "commands_per_task": round(sum(cmds.values()) / n, 2) if redis_broker else None,
        "top_commands_per_task": {k: round(v / n, 2) for k, v in cmds.most_common(8)},
        "cpu_ms_per_task": {
            who: round((after_cpu[who] - before_cpu[who]) / n * 1000, 3) for who in before_cpu
        },
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    commands = [r["commands_per_task"] for r in runs]
    return {
        "tasks_per_s": med([r["tasks_per_s"] for r in runs]),
        "runs": [r["tasks_per_s"] for r in runs],
        "commands_per_task": None if None in commands else med(commands),
        "top_commands_per_task": runs[-1]["top_commands_per_task"],
        "cpu_ms_per_task": {
            who: med([r["cpu_ms_per_task"][who] for r in runs])
            for who in runs[0]["cpu_ms_per_task"]
        },
    }


def rows(selection: str | None) -> dict[str, tuple[str, str, Env]]:
    """The default rows, or those (OPTIONAL ones too) whose name contains one of the
    comma-separated words (BENCH_THROUGHPUT_ROWS)."""
    everything = dict(BASELINES)
    for name, extra in VARIANTS.items():
        everything[f"celery-fleet, plain redis://, {name}"] = ("plain", "fleet", extra)
    if rabbit_rows.installed():
        for name, extra in rabbit_rows.ROWS.items():
            everything[name] = (rabbit_rows.PATH, "fleet", extra)
    if not selection:
        return everything
    everything.update(OPTIONAL)
    words = [w.strip() for w in selection.split(",") if w.strip()]
    keep = {CELERY_PLAIN, FLEET_PLAIN}  # the ratios need both
    return {k: v for k, v in everything.items() if k in keep or any(w in k for w in words)}


def _measure(stacks: list[Stack], n: int, rounds: int) -> list[float]:
    """Each round: celery-fleet on plain redis:// (the reference), then every other row in
    a shuffled order, each followed by the reference again. A row's ratio for the round is
    its rate over the mean of the two reference runs around it (seconds apart, so a load
    change on the shared machine hits both sides alike). Returns the load averages."""
    base = next(s for s in stacks if s.name == FLEET_PLAIN)
    others = [s for s in stacks if s is not base]
    loads = []
    for r in range(rounds):
        order = others[:]
        random.Random(r).shuffle(order)
        before = _round(base, n)
        base.runs.append(before | {"ratio": 1.0})
        for stack in order:
            run = _round(stack, n)
            after = _round(base, n)
            reference = (before["tasks_per_s"] + after["tasks_per_s"]) / 2
            stack.runs.append(run | {"round": r, "ratio": run["tasks_per_s"] / reference})
            base.runs.append(after | {"ratio": 1.0})
            before = after
        loads.append(os.getloadavg()[0])
        print(f"[bench] throughput: round {r + 1}/{rounds} done", flush=True)
    return loads


def throughput(quick: bool) -> dict[str, Any]:
    n = int(os.environ.get("BENCH_THROUGHPUT_TASKS", 300 if quick else 500))
    rounds = int(os.environ.get("BENCH_THROUGHPUT_ROUNDS", 1 if quick else 4))
    chosen = rows(os.environ.get("BENCH_THROUGHPUT_ROWS"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        stacks: list[Stack] = []
        try:
            for i, (name, (path, config, extra)) in enumerate(chosen.items()):
                print(f"[bench] throughput: starting {name}", flush=True)
                stacks.append(_build(name, path, config, extra, Path(tmp) / f"s{i}"))
            for stack in stacks:
                _round(stack, 100)  # warm up connections, pools and pool children
            loads = _measure(stacks, n, rounds)
        finally:
            for stack in stacks:
                if stack.app is not None:
                    stack.app.close()
                if stack.worker is not None:
                    stack.worker.stop()
                if stack.broker is not None:
                    stack.broker.close()
                stack.fleet.close()
    figures = {s.name: _summary(s.runs) for s in stacks}
    celery_ratios = {r["round"]: r["ratio"] for r in by_name(stacks)[CELERY_PLAIN].runs}
    for stack in stacks:
        fig = figures[stack.name]
        if stack.name == FLEET_PLAIN:
            per_round = [1.0] * rounds
            to_celery = [1.0 / celery_ratios[r] for r in range(rounds)]
        else:
            per_round = [run["ratio"] for run in stack.runs]
            to_celery = [run["ratio"] / celery_ratios[run["round"]] for run in stack.runs]
        fig["ratio_to_fleet_plain"] = round(statistics.median(per_round), 3)
        fig["ratio_to_fleet_plain_per_round"] = [round(x, 3) for x in per_round]
        fig["ratio_to_celery_plain"] = round(statistics.median(to_celery), 3)
        fig["ratio_to_celery_plain_per_round"] = [round(x, 3) for x in to_celery]
        fig["env"] = dict(chosen[stack.name][2])
    rabbit_rows.against_redis(figures)
    return {
        "tasks": n,
        "rounds": rounds,
        "method": "per round: celery-fleet on plain redis:// (the reference), then each other "
        "row in a shuffled order, each followed by the reference again; a row's ratio is its "
        "rate over the mean of the two reference runs around it; medians of the rounds. "
        "Ratios to Celery's defaults: a row's ratio over that round's ratio of Celery's "
        "defaults on plain redis://",
        "worker": f"prefork, concurrency {CONCURRENCY}, one per stack; --without-mingle "
        "--without-gossip; log level INFO",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after_each_round": [round(x, 2) for x in loads],
        "rows": figures,
        "rabbitmq": rabbit_rows.note(),
        "target": "celery-fleet on rediss:// >= 0.85 of Celery's defaults on plain redis://; "
        "celery-fleet on rediss:// and Sentinel + TLS >= 0.9 of celery-fleet on plain redis://",
    }


def by_name(stacks: list[Stack]) -> dict[str, Stack]:
    return {s.name: s for s in stacks}


def throughput_markdown(t: dict[str, Any]) -> list[str]:
    lines = [
        "## Throughput (no-op task, broker + result backend)",
        "",
        f"{t['tasks']} tasks x {t['rounds']} rounds per row; {t['method']}. Worker: "
        f"{t['worker']}. Load average before: {t['load_average_before']}, after each round: "
        f"{t['load_average_after_each_round']}.",
        "",
        "| row | tasks/s (median) | ratio to Celery's defaults, plain (per round) | ratio to "
        "celery-fleet, plain (per round) | Redis commands/task | CPU ms/task worker / "
        "producer / Redis |",
        "|---|---|---|---|---|---|",
    ]
    to_redis = []
    for name, v in t["rows"].items():
        cpu = v["cpu_ms_per_task"]
        per_round = ", ".join(str(x) for x in v["ratio_to_fleet_plain_per_round"])
        to_celery = ", ".join(str(x) for x in v["ratio_to_celery_plain_per_round"])
        commands = "n/a" if v["commands_per_task"] is None else v["commands_per_task"]
        server = f"{cpu['redis']}"
        if "rabbitmq" in cpu:
            server = f"RabbitMQ {cpu['rabbitmq']} (+ results Redis {cpu['redis']})"
        lines.append(
            f"| {name} | {v['tasks_per_s']} | {v['ratio_to_celery_plain']} ({to_celery}) | "
            f"{v['ratio_to_fleet_plain']} ({per_round}) | {commands} | "
            f"{cpu['worker']} / {cpu['producer']} / {server} |"
        )
        if "ratio_to_rediss_row" in v:
            rounds = ", ".join(str(x) for x in v["ratio_to_rediss_row_per_round"])
            to_redis.append(f"- {name}: {v['ratio_to_rediss_row']} ({rounds})")
    if to_redis:
        lines += ["", f"Rate relative to {rabbit_rows.REDIS_TWIN} (per round):", *to_redis]
    if "rabbitmq" in t:
        lines += ["", f"{t['rabbitmq']}."]
    return [*lines, "", f"Target: {t['target']}.", ""]
