"""One guard around a Kombu bug that kills workers during a Redis failover.

When the broker connection drops, Celery closes the connection and Kombu's Redis QoS tries
to push the unacknowledged messages back to their queues with a NEW client built from a
connection object that is already detached (``connection.client is None``). The
``AttributeError: 'NoneType' object has no attribute 'hostname'`` it raises escapes
Celery's error handling and the worker exits ("Unrecoverable error"); measured here in
about one failover in three under load (tests/faults, bench failover). The same family of
bugs: kombu issues 582 and 970.

The guard skips that restore when there is no connection to restore through. Nothing is
lost: the messages stay in Kombu's unacked index and the periodic sweep puts them back
once their visibility timeout has passed, exactly as after a crashed worker.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("celery_fleet.patches")


def guard_restore_unacked() -> None:
    from kombu.transport import redis as kombu_redis

    qos = kombu_redis.QoS
    original = qos.restore_unacked
    if getattr(original, "celery_fleet_guard", False):
        return

    def restore_unacked(self: Any, client: Any = None) -> Any:
        transport = getattr(self.channel, "connection", None)
        if client is None and getattr(transport, "client", None) is None:
            log.warning(
                "broker connection already gone: %d unacknowledged message(s) stay in the "
                "unacked index and return to their queue after the visibility timeout",
                len(self._delivered),
            )
            return None
        return original(self, client)  # type: ignore[no-untyped-call]

    restore_unacked.celery_fleet_guard = True  # type: ignore[attr-defined]
    setattr(qos, "restore_unacked", restore_unacked)  # noqa: B010 (patching a class)
