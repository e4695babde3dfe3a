"""celery_fleet.patches, driven through Kombu's own sequence on real Redis and Sentinels.

What a worker does when its broker connection drops while a task runs (acks_late): Celery
closes the channel (Kombu restores the unacknowledged messages, then detaches the channel
from its connection), and the pool reports the task done afterwards, so the message is
acknowledged through the closed channel. Unguarded, Kombu 5.7 raises AttributeError there
and the worker exits (seen in the compose failover test); guarded, the acknowledgement
fails as a connection error, which Celery logs, and the message is not lost.
"""

from __future__ import annotations

import logging

import pytest
from kombu.transport import redis as kombu_redis

from celery_fleet import patches
from harness import envs
from harness.redis_procs import RedisFleet
from harness.worker import MakeClient


def test_ack_through_a_closed_channel_is_a_connection_error_and_loses_nothing(
    redis_fleet: RedisFleet, celery_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    patches.guard_restore_unacked()
    patches.guard_restore_unacked()  # idempotent: a second install wraps nothing twice
    assert kombu_redis.QoS.restore_unacked.celery_fleet_guard  # type: ignore[attr-defined]

    primary = redis_fleet.server("redis-1")
    redis_fleet.server("redis-2", replica_of=primary)
    redis_fleet.sentinels(primary)
    app = celery_client(envs.sentinel(redis_fleet))
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("patches-test")
        queue.put({"n": 1})
        message = queue.get(timeout=10)  # delivered, not acknowledged: in the unacked index
        channel = message.channel
        channel.close()  # what Celery does on a connection error: restore, then detach
        assert channel.connection is None
        # In a failover the restore on close finds no connection either and creates no
        # pool (the compose e2e test hit exactly this); drop the pool the restore made.
        channel._disconnect_pools()
        # That is the state Kombu itself cannot handle ...
        with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'client'"):
            kombu_redis.Channel._connparams.__wrapped__(channel)  # type: ignore[attr-defined]

        # ... and what the guard makes of it: a connection error Celery logs and survives.
        with caplog.at_level(logging.CRITICAL):
            message.ack_log_error(logging.getLogger("test"), conn.connection_errors)
        assert "broker channel already closed" in caplog.text

        # The message went back on its queue when the channel closed: nothing is lost.
        again = conn.SimpleQueue("patches-test", channel=conn.channel())
        redelivered = again.get(timeout=10)
        assert redelivered.payload == {"n": 1}
        redelivered.ack()
        again.close()
