"""Production defaults: each a Celery setting, with the reason it differs from Celery's."""

from __future__ import annotations

from typing import Any

PREFIX = "CELERY_"
# Default visibility timeout = task_time_limit + this: a task still running is never
# redelivered, and one in flight during a failover comes back in minutes, not an hour.
VISIBILITY_MARGIN = 300

# ---------------------------------------------------------------------------------------
# Production defaults. Each is a Celery setting, overridable as CELERY_<NAME>.
# Docs: https://docs.celeryq.dev/en/stable/userguide/configuration.html#<name-with-dashes>
# ---------------------------------------------------------------------------------------
PRODUCTION_DEFAULTS: dict[str, Any] = {
    # JSON only: pickle in a broker is remote code execution for whoever can write to it.
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "timezone": "UTC",
    "enable_utc": True,
    # Ack after the task ran; a worker killed mid-task gives the task back (at-least-once).
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    # Bounded prefetch: with acks_late a worker holds at most concurrency x 1 messages.
    "worker_prefetch_multiplier": 1,
    "worker_max_tasks_per_child": 1000,
    "task_soft_time_limit": 600,
    "task_time_limit": 900,
    # Off, as in Celery: together they cost about half the throughput of a small task
    # (python -m bench.run throughput; docs/benchmarks.md) and guarantee nothing. Each is
    # one variable away (docs/settings.md, "Opt-in extras"). Flower turns the workers'
    # task events on by remote control while it runs (its --enable_events).
    "task_track_started": False,
    # The real setting name (a common snippet says task_send_sent_signal, which Celery ignores).
    "task_send_sent_event": False,
    "worker_send_task_events": False,
    "result_extended": False,
    "result_compression": None,
    "result_expires": 3600,
    # Results survive a failover: retry the backend instead of failing the task.
    "result_backend_always_retry": True,
    "result_backend_max_retries": 20,
    "result_backend_max_sleep_between_retries_ms": 1000,
    # A publish that hits a failover is retried for ~20 s (Sentinel needs down-after +
    # an election to promote a replica) instead of raising after Celery's default 0.6 s.
    "task_publish_retry": True,
    "task_publish_retry_policy": {
        "max_retries": 20,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 1,
    },
    "broker_pool_limit": 10,
    "broker_connection_retry": True,
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": 100,
    "broker_connection_timeout": 4.0,
    # Let running tasks finish when the broker connection drops (a failover). Measured on
    # real Sentinel failovers: with True, a cancelled task could end as TimeLimitExceeded
    # and never run again (tests/integration/test_failover.py); with False both finished.
    "worker_cancel_long_running_tasks_on_connection_loss": False,
    "redis_socket_timeout": 10.0,
    "redis_socket_connect_timeout": 5.0,
    "redis_retry_on_timeout": True,
    "redis_socket_keepalive": True,
    # Tried 5 against the network-partition stall (molecule ha): no measurable change.
    "redis_backend_health_check_interval": 25,
    "task_default_queue": "default",
    "task_queues": "default",
}
