"""Guards around a Kombu bug that kills workers during a Redis failover.

When the broker connection drops, Celery closes the channel and detaches it from its
connection (``channel.connection`` or ``channel.connection.client`` becomes None). Two
things can still reach Redis through that channel afterwards:

- Kombu's QoS restores the unacknowledged messages on close, with a NEW client built from
  the detached connection;
- a task that finishes in the pool after the drop is acknowledged (acks_late) through the
  closed channel.

Both build a client from the missing connection and raise ``AttributeError`` ("'NoneType'
object has no attribute 'hostname'" or "... 'client'"). That escapes Celery's error
handling and the worker exits ("Unrecoverable error"); measured here in about one loaded
failover in three (tests/faults, bench failover, the compose e2e test). The same family
of bugs: kombu issues 582 and 970.

A third failure is quieter: Kombu's ``QoS.ack`` and ``QoS.reject`` remove the message from
Redis' unacked index first and free the worker's prefetch slot only when that succeeded.
An acknowledgement that fails because the primary just died keeps its slot for good; a
worker whose slots are all held that way never fetches again, so it never notices the
dead connection and sits idle after the failover (seen in the fault suite). The guard frees
the slot all the same and re-raises.

The guards: the restore is skipped when there is no connection to restore through, and a
client asked of a detached channel raises a connection error, which Celery already
handles (it logs that it could not acknowledge the message and carries on). Nothing is
lost: the messages stay in Kombu's unacked index, and the periodic sweep puts them back
once their visibility timeout has passed, exactly as after a crashed worker. A task whose
acknowledgement was lost this way runs a second time (acks_late is at-least-once).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("celery_fleet.patches")


def _detached(channel: Any) -> bool:
    transport = getattr(channel, "connection", None)
    return getattr(transport, "client", None) is None


def _free_slot(qos: Any, delivery_tag: str) -> None:
    """Forget the message in memory only (Kombu's virtual QoS): the prefetch slot is free
    again; the message stays in the unacked index and returns after the visibility
    timeout, as after a crashed worker."""
    from kombu.transport import virtual

    virtual.QoS.ack(qos, delivery_tag)  # type: ignore[no-untyped-call]


def guard_restore_unacked() -> None:
    """Install the guards (idempotent)."""
    import redis
    from kombu.transport import redis as kombu_redis

    qos, channel = kombu_redis.QoS, kombu_redis.Channel
    if getattr(qos.restore_unacked, "celery_fleet_guard", False):
        return
    original_restore = qos.restore_unacked
    original_connparams = channel._connparams

    def restore_unacked(self: Any, client: Any = None) -> Any:
        if client is None and _detached(self.channel):
            log.warning(
                "broker connection already gone: %d unacknowledged message(s) stay in the "
                "unacked index and return to their queue after the visibility timeout",
                len(self._delivered),
            )
            return None
        return original_restore(self, client)  # type: ignore[no-untyped-call]

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if _detached(self):
            # A ConnectionError is in Kombu's connection_errors: Celery logs and carries on.
            raise redis.exceptions.ConnectionError(
                "broker channel already closed (connection lost); the message stays in "
                "the unacked index and returns to its queue after the visibility timeout"
            )
        return original_connparams(self, asynchronous=asynchronous)  # type: ignore[no-untyped-call]

    original_ack, original_reject = qos.ack, qos.reject

    def ack(self: Any, delivery_tag: str) -> None:
        try:
            original_ack(self, delivery_tag)  # type: ignore[no-untyped-call]
        except BaseException:
            _free_slot(self, delivery_tag)
            raise

    def reject(self: Any, delivery_tag: str, requeue: bool = False) -> None:
        try:
            original_reject(self, delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except BaseException:
            _free_slot(self, delivery_tag)
            raise

    ack.__wrapped__ = original_ack  # type: ignore[attr-defined]
    reject.__wrapped__ = original_reject  # type: ignore[attr-defined]
    setattr(qos, "ack", ack)  # noqa: B010 (patching a class)
    setattr(qos, "reject", reject)  # noqa: B010 (patching a class)
    restore_unacked.celery_fleet_guard = True  # type: ignore[attr-defined]
    restore_unacked.__wrapped__ = original_restore  # type: ignore[attr-defined]
    _connparams.__wrapped__ = original_connparams  # type: ignore[attr-defined]
    setattr(qos, "restore_unacked", restore_unacked)  # noqa: B010 (patching a class)
    setattr(channel, "_connparams", _connparams)  # noqa: B010 (patching a class)
