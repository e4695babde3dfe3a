"""The Celery app of the AMQP broker test's workers: ``celery_fleet.celeryconfig`` only,
plus a task that never succeeds (a poison message: it is given back every time)."""

from __future__ import annotations

from celery import Celery
from celery.exceptions import Reject

app = Celery("amqp_app")
app.config_from_object("celery_fleet.celeryconfig")


@app.task(name="amqp.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="amqp.poison", acks_late=True)
def poison() -> None:
    # Back to the queue every time, as a message that kills its worker would come back.
    raise Reject("poison", requeue=True)
