"""The dead-letter exchange and queue of an AMQP broker, declared by every worker.

The task queues name ``x-dead-letter-exchange`` (celery_fleet.amqp.queues). RabbitMQ drops a
dead-lettered message when that exchange does not exist, so each worker declares it, with
one quorum queue bound to it, once it is ready (declaring is idempotent). Nothing consumes
that queue: an operator reads it (``rabbitmqctl list_queues``, a shovel, a script).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready

from .amqp import dead_letter_entities

log = logging.getLogger("celery_fleet.amqp_topology")


def declare(app: Any) -> None:
    """Declare the dead-letter exchange, its queue and the binding on ``app``'s broker."""
    _, queue = dead_letter_entities()
    with app.connection_for_write() as conn:
        queue.bind(conn.default_channel).declare()  # type: ignore[no-untyped-call]


def _on_ready(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    try:
        declare(app)
    except Exception as exc:  # the worker runs on; poison messages would then be dropped
        log.error(
            "dead-letter exchange %s not declared (%s: %s): messages over the delivery "
            "limit are dropped until a worker declares it",
            queue_name(),
            type(exc).__name__,
            exc,
        )


def queue_name() -> str:
    return dead_letter_entities()[1].name


def install() -> None:
    worker_ready.connect(_on_ready, weak=False, dispatch_uid="celery_fleet.amqp_topology")
