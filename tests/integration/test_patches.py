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


def test_an_ack_that_fails_on_a_dead_primary_frees_the_prefetch_slot(
    redis_fleet: RedisFleet, celery_client: MakeClient
) -> None:
    """Kombu keeps the slot of a failed ack: with prefetch 1 the worker would never fetch
    again after the primary died. The guard frees it; the message stays in the unacked
    index (replicated before the kill) for the visibility timeout to bring back."""
    patches.guard_restore_unacked()
    primary = redis_fleet.server("redis-1")
    env = {
        "CELERY_BROKER_URL": envs.url(redis_fleet, primary, 0),
        "CELERY_RESULT_BACKEND": envs.url(redis_fleet, primary, 1),
        **envs.tls(redis_fleet),
    }
    app = celery_client(env)
    with app.connection_for_write() as conn:
        channel = conn.channel()
        channel.basic_qos(0, 2, False)  # two slots: one for Kombu's ack, one for the guard's
        queue = conn.SimpleQueue("slot-test", channel=channel)
        queue.put({"n": 1})
        queue.put({"n": 2})
        first, second = queue.get(timeout=10), queue.get(timeout=10)
        assert not channel.qos.can_consume()
        redis_fleet.kill(primary)
        # Kombu's own ack: fails and keeps the slot (what the guard is for) ...
        with pytest.raises(conn.connection_errors):
            kombu_redis.QoS.ack.__wrapped__(channel.qos, first.delivery_tag)  # type: ignore[attr-defined]
        assert not channel.qos.can_consume()
        # ... the guarded ack fails the same way but frees its slot.
        with pytest.raises(conn.connection_errors):
            second.ack()
        assert channel.qos.can_consume()
        queue.close()
