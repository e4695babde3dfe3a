"""One worker command line: the systemd unit and the supervisor program render the same
arguments for a pool (celery_worker_argv, role fleet_common), from the shipped templates."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from harness import render

REPO = Path(__file__).resolve().parents[2]
POOLS: list[dict[str, Any]] = [
    {"name": "default", "queues": ["default"], "concurrency": 2},
    {
        "name": "io",
        "queues": ["io", "mail"],
        "pool": "threads",
        "autoscale": "8,2",
        "max_memory_per_child": 200000,
        "time_limit": 60,
        "soft_time_limit": 50,
        "extra_args": ["--without-mingle"],
        "loglevel": "WARNING",
    },
]


def _pool(overrides: dict[str, Any]) -> dict[str, Any]:
    return {**render.role_defaults("celery")["celery_worker_defaults"], **overrides}


def _unit_argv(pool: dict[str, Any], **variables: Any) -> list[str]:
    text = render.render_file(
        REPO / "systemd" / "celery-worker@.service.j2",
        role="celery",
        role_vars=True,
        variables={"pool": pool, **variables},
    )
    # A well-formed unit: each section once, in order, one ExecStart (systemd refuses two).
    lines = text.splitlines()
    sections = [ln for ln in lines if ln.startswith("[")]
    assert sections == ["[Unit]", "[Service]", "[Install]"], sections
    assert sum(ln.startswith("ExecStart=") for ln in lines) == 1
    line = text.split("ExecStart=", 1)[1].split("\nKillMode", 1)[0].replace("\\\n", " ")
    argv = shlex.split(line)
    return argv[argv.index("worker") + 1 :]


def _supervisor_argv(pools: list[dict[str, Any]], **variables: Any) -> dict[str, list[str]]:
    text = render.render_file(
        REPO / "templates" / "supervisor-celery.conf.j2",
        role="celery",
        role_vars=True,
        variables={
            "_celery_pools": pools,
            "celery_run_workers": True,
            "celery_run_beat": False,
            **variables,
        },
    )
    found: dict[str, list[str]] = {}
    program = ""
    for line in text.splitlines():
        if line.startswith("[program:celery-worker-"):
            program = line.removeprefix("[program:celery-worker-").rstrip("]")
        elif line.startswith("command=") and program:
            argv = shlex.split(line.removeprefix("command="))
            found[program] = argv[argv.index("worker") + 1 :]
    return found


def test_the_unit_and_supervisor_run_the_same_worker_command() -> None:
    pools = [_pool(p) for p in POOLS]
    for destination in ("journal", "file"):
        supervisor = _supervisor_argv(pools, celery_log_destination=destination)
        for pool in pools:
            unit = _unit_argv(pool, celery_log_destination=destination)
            assert unit == supervisor[pool["name"]], (destination, pool["name"])
            # Both escape Celery's %h from their own % expansion.
            assert unit[:2] == ["--hostname", f"{pool['name']}@%%h"]
            assert ("--logfile" in unit) is (destination == "file")


def test_every_pool_input_reaches_the_command_line() -> None:
    io = _unit_argv(_pool(POOLS[1]))
    pairs = dict(zip(io[::2], io[1::2], strict=False))
    assert pairs["--queues"] == "io,mail"
    assert pairs["--pool"] == "threads"
    assert pairs["--autoscale"] == "8,2"
    assert "--concurrency" not in io  # autoscale replaces it
    assert pairs["--max-memory-per-child"] == "200000"
    assert pairs["--time-limit"] == "60"
    assert pairs["--soft-time-limit"] == "50"
    assert "--without-mingle" in io
    assert io[-2:] == ["--loglevel", "WARNING"]
    default = _unit_argv(_pool(POOLS[0]))
    assert "--concurrency" in default
    assert "--max-tasks-per-child" in default
