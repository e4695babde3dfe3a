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


def guard_restore_unacked() -> None:
    """Install both guards (idempotent)."""
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

    restore_unacked.celery_fleet_guard = True  # type: ignore[attr-defined]
    restore_unacked.__wrapped__ = original_restore  # type: ignore[attr-defined]
    _connparams.__wrapped__ = original_connparams  # type: ignore[attr-defined]
    setattr(qos, "restore_unacked", restore_unacked)  # noqa: B010 (patching a class)
    setattr(channel, "_connparams", _connparams)  # noqa: B010 (patching a class)
