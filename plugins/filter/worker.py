"""The one Celery worker command line of the fleet.

``celery_fleet.fleet.celery_worker_argv(pool, loglevel, log_dir="")``: the arguments after
``celery -A APP worker`` for one pool of role celery (``celery_worker_defaults`` combined
with an entry of ``celery_worker_pools``). The systemd unit, the supervisor program and
the local stack's container (``config/celery/worker.args``) all take it from here, so the
queues, the pool, the limits and the log settings cannot drift apart.

The host name keeps Celery's ``%h``; systemd and supervisor expand ``%`` themselves, so
their templates escape it (``replace('%', '%%')``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _positive(pool: Mapping[str, Any], key: str) -> int:
    value = pool.get(key) or 0
    return int(value)


def celery_worker_argv(pool: Mapping[str, Any], loglevel: str, log_dir: str = "") -> list[str]:
    """``log_dir``: log to ``<log_dir>/worker-<pool>.log`` (celery_log_destination: file)
    instead of stdout (the journal)."""
    argv = [
        "--hostname",
        f"{pool['name']}@%h",
        "--queues",
        ",".join(pool["queues"]),
        "--pool",
        str(pool["pool"]),
    ]
    if pool.get("autoscale"):
        argv += ["--autoscale", str(pool["autoscale"])]
    else:
        argv += ["--concurrency", str(pool["concurrency"])]
    if _positive(pool, "max_tasks_per_child") > 0:
        argv += ["--max-tasks-per-child", str(_positive(pool, "max_tasks_per_child"))]
    if _positive(pool, "max_memory_per_child") > 0:
        argv += ["--max-memory-per-child", str(_positive(pool, "max_memory_per_child"))]
    argv += ["--soft-time-limit", str(pool["soft_time_limit"])]
    argv += ["--time-limit", str(pool["time_limit"])]
    if log_dir:
        argv += ["--logfile", f"{log_dir}/worker-{pool['name']}.log"]
    argv += [str(arg) for arg in pool.get("extra_args") or []]
    argv += ["--loglevel", str(pool.get("loglevel") or loglevel)]
    return argv


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"celery_worker_argv": celery_worker_argv}
