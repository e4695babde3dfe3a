"""celery_fleet.fanout on real Redis over TLS: a worker's Pub/Sub read (remote control,
the fanout exchanges) never blocks its event loop when no whole message is waiting, and
still delivers the messages that are.

Unguarded, Kombu 5.7 reads with redis-py 8's ``PubSub.parse_response()``, which waits with
no timeout; the compose failover test caught a worker's main process there for minutes
(py-spy: ``SSLSocket.read`` under ``MultiChannelPoller.on_readable``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Consumer, Exchange, Queue
from kombu.transport import redis as kombu_redis

from celery_fleet import fanout
from harness import envs
from harness.redis_procs import RedisFleet
from harness.worker import MakeClient


@pytest.fixture
def subscribed(
    redis_fleet: RedisFleet, celery_client: MakeClient
) -> Iterator[tuple[Any, list[Any]]]:
    """A channel subscribed to a fanout exchange over TLS, as a worker's remote control is."""
    primary = redis_fleet.server("redis-1")
    env = {
        "CELERY_BROKER_URL": envs.url(redis_fleet, primary, 0),
        "CELERY_RESULT_BACKEND": envs.url(redis_fleet, primary, 1),
        **envs.tls(redis_fleet),
    }
    app = celery_client(env)
    got: list[Any] = []
    with app.connection_for_write() as conn:
        channel = conn.channel()
        # The remote-control exchange: the app user may subscribe to its channel (role redis ACL).
        exchange = Exchange("celery.pidbox", type="fanout")
        queue = Queue("", exchange=exchange, exclusive=True, auto_delete=True)
        consumer = Consumer(channel, queues=[queue], callbacks=[lambda body, m: got.append(body)])
        consumer.consume()
        deadline = time.monotonic() + 10
        while channel.subclient.connection is None or not channel.subclient.subscribed:
            assert time.monotonic() < deadline, "the channel never subscribed"
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.5)
        # The subscription replies are read: nothing is waiting on the socket now.
        while channel.subclient.connection.can_read(timeout=0.2):
            channel._receive()
        yield (channel, exchange, conn), got
        channel.subclient.connection.disconnect()  # unblocks an unguarded read left behind


def _returns_within(call: Any, seconds: float) -> bool:
    def run() -> None:
        with contextlib.suppress(Exception):  # the teardown closes a read left blocked
            call()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_read_with_nothing_waiting_returns_at_once(subscribed: tuple[Any, list[Any]]) -> None:
    (channel, _, _), _ = subscribed
    fanout.guard_fanout_read()
    fanout.guard_fanout_read()  # idempotent: a second install wraps nothing twice
    guarded = kombu_redis.Channel._receive_one
    unguarded = guarded.__wrapped__  # type: ignore[attr-defined]
    # What the event loop does on a readable socket that holds no whole message:
    assert _returns_within(lambda: guarded(channel, channel.subclient), 2)
    # Kombu's own read waits for good (this thread stays blocked until the teardown).
    assert not _returns_within(lambda: unguarded(channel, channel.subclient), 3)


def test_a_waiting_message_is_still_delivered(subscribed: tuple[Any, list[Any]]) -> None:
    (channel, exchange, conn), got = subscribed
    fanout.guard_fanout_read()
    conn.Producer().publish({"hello": "workers"}, exchange=exchange, routing_key="")
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        if channel.subclient.connection.can_read(timeout=0.2):
            channel._receive()
    assert got == [{"hello": "workers"}]
