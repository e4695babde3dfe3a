"""Two guards that keep a worker's event loop from blocking on its Pub/Sub connection.

Kombu's Redis transport reads the fanout (Pub/Sub) connection from the worker's event loop
when the socket is readable (``Channel._receive_one``, Kombu 5.7), with
``PubSub.parse_response()``. In redis-py 8 that call blocks: it reads with no socket
timeout at all until a whole message is there (redis-py's own docstring: "block
indefinitely"). A readable socket does not promise a whole message: over TLS the bytes may
be a record that holds no application data, or part of one whose peer is gone. The worker's
main process then waits in ``SSLSocket.read`` for good: it answers no ``inspect ping`` (the
remote-control messages come over that same connection), fetches no task and never
notices that its broker went away. Seen in the compose failover test: the worker stayed
unhealthy, its main thread in ``SSLSocket.read`` under ``MultiChannelPoller.on_readable``
(py-spy), minutes after the primary was stopped.

The guard reads only what is there: it asks the connection whether application data is
waiting (redis-py's ``can_read(timeout=0)``, which does not block and raises a connection
error on a closed socket), and then reads with the channel's socket timeout, so a message
cut short raises a timeout, which is one of Kombu's connection errors: Celery reconnects.

The second guard makes a reconnect inside redis-py subscribe again. Kombu gives its Pub/Sub
client a connection itself (``MultiChannelPoller._client_registered`` sets
``subclient.connection``), so redis-py never registers the ``PubSub.on_connect`` callback
that subscribes again after a reconnect. With ``retry_on_timeout`` (our default) redis-py
retries a failed read once, reconnecting first: when the event loop reaches the dead
primary's closed socket only after Sentinel has promoted the replica (the loop was held
up, e.g. by the heartbeat's publish retrying while no primary answered), that reconnect
succeeds, to a connection subscribed to nothing, and the read waits for good.
Reproduced by tests/faults/test_graceful_stop.py. The guard registers the callback when
Kombu subscribes (idempotent; Celery's Redis result backend does the same).
"""

from __future__ import annotations

from typing import Any

# When the transport options set no socket timeout (celery_fleet.settings always sets one).
DEFAULT_READ_TIMEOUT = 10.0


class _BoundedPubSub:
    """The channel's PubSub client, whose reads wait at most ``timeout`` seconds."""

    def __init__(self, pubsub: Any, timeout: float) -> None:
        self._pubsub = pubsub
        self._timeout = timeout

    def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        return self._pubsub.parse_response(block=False, timeout=self._timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pubsub, name)


def guard_fanout_read() -> None:
    """Install both guards on Kombu's Redis channel (and so on every subclass; idempotent)."""
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel
    if getattr(channel._receive_one, "celery_fleet_guard", False):
        return
    original = channel._receive_one

    def _receive_one(self: Any, c: Any) -> Any:
        try:
            connection = c.connection
            if connection is not None and not connection.can_read(timeout=0):
                return None  # nothing whole to read: back to the event loop
        except self.connection_errors:
            self._in_listen = None
            raise
        timeout = self.socket_timeout or DEFAULT_READ_TIMEOUT
        return original(self, _BoundedPubSub(c, timeout))  # type: ignore[no-untyped-call]

    original_subscribe = channel._subscribe

    def _subscribe(self: Any) -> Any:
        ret = original_subscribe(self)  # type: ignore[no-untyped-call]
        pubsub = self.__dict__.get("subclient")
        connection = getattr(pubsub, "connection", None)
        if connection is not None:
            # What PubSub.execute_command does for a connection it takes itself.
            connection.register_connect_callback(pubsub.on_connect)
        return ret

    _subscribe.__wrapped__ = original_subscribe  # type: ignore[attr-defined]
    setattr(channel, "_subscribe", _subscribe)  # noqa: B010 (patching a class)
    _receive_one.celery_fleet_guard = True  # type: ignore[attr-defined]
    _receive_one.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(channel, "_receive_one", _receive_one)  # noqa: B010 (patching a class)
