"""Reliable fetch: Kombu's Redis transports without the loss window between pop and ack.

Kombu's Redis channel takes a message with ``BRPOP`` and only afterwards records it as
unacknowledged (``QoS.append``: ZADD to the unacked index, HSET to the unacked hash, on
another pooled connection). Until that second write lands the message exists only in the
worker's memory: a reply lost with its connection, a primary that dies between the two
commands, or a worker killed in between loses it for good (celery/kombu issue 305,
"reliable fetch"; the pattern is Redis's own ``LMOVE`` "reliable queue":
https://redis.io/docs/latest/commands/lmove/#pattern-reliable-queue).

Here a message is at every instant in its queue, in the in-flight list of the consumer
that fetched it, or in the unacked hash (with its index entry):

- ``FETCH`` (one Lua script) moves the first ready message, scanning the queues and
  priority steps in Kombu's order, into the consumer's in-flight list for that queue key
  (``LMOVE``). When nothing is ready the consumer blocks on ONE key with ``BLMOVE`` for
  at most ``brpop_timeout`` (1 s) and then scans again; idle consumers rotate that key
  over their queues. ``BLMOVE`` takes one source key where ``BRPOP`` takes many: a
  message for another queue, or at another priority step than the first, waits up to
  ``brpop_timeout`` while the consumer is idle (never while messages are flowing).
- ``CLAIM`` (one Lua script) removes the message from the in-flight list and writes the
  unacked hash entry and index score Kombu's QoS would have written, atomically; the
  message is then handed to Kombu/Celery as usual and acked or restored by Kombu's QoS.
- In-flight lists are registered with a heartbeat (server time) in a sorted set. A
  channel that starts consuming moves the lists of this process's closed channels back
  to their queues at once; every other list whose heartbeat is older than
  ``inflight_timeout`` (60 s) is moved back by the periodic unacked sweep of any worker
  (under Kombu's restore mutex). A consumer that looked dead but was not finds its
  message gone at ``CLAIM`` and skips it: a sweep never causes a second delivery.

Needs Redis >= 6.2 (LMOVE/BLMOVE). Fanout (Pub/Sub: remote control, broadcast) stays
at-most-once, as in Kombu. Producers are unchanged (LPUSH), so workers with and without
this transport can share queues during a rolling change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
import weakref
from dataclasses import dataclass, field
from queue import Empty
from time import monotonic, time
from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES, _transport_cache
from kombu.transport import redis as _kombu_redis
from kombu.transport import virtual as _virtual
from kombu.utils import encoding as _encoding
from kombu.utils import json as _json

# Kombu ships no type hints for these: typed as Any once, here.
kombu_redis: Any = _kombu_redis
virtual: Any = _virtual
bytes_to_str: Any = _encoding.bytes_to_str
dumps: Any = _json.dumps
loads: Any = _json.loads

log = logging.getLogger("celery_fleet.transport")

#: The registry (sorted set: in-flight list -> last heartbeat, server seconds) and the
#: prefix of every in-flight list: ``<prefix>:<channel id>:<queue key>``.
INFLIGHT = "_celery_fleet.inflight"
#: Registry entries are dropped once this old (their lists were emptied long before): a
#: consumer frozen between its last heartbeat and its BLMOVE must still be found.
FORGET_AFTER = 24 * 3600

# KEYS[1]: registry; KEYS[2..n+1]: queue keys in consumption order; KEYS[n+2..2n+1]: the
# consumer's in-flight list for each. ARGV[1]: n; ARGV[2]: index of the key the consumer
# blocks on next when nothing is ready (0: it will not block). Returns {index, message}.
FETCH = """
local now = redis.call('TIME')[1]
local n = tonumber(ARGV[1])
for i = 1, n do
  local item = redis.call('LMOVE', KEYS[1 + i], KEYS[1 + n + i], 'RIGHT', 'LEFT')
  if item then
    redis.call('ZADD', KEYS[1], now, KEYS[1 + n + i])
    return {i, item}
  end
end
local block = tonumber(ARGV[2])
if block > 0 then
  redis.call('ZADD', KEYS[1], now, KEYS[1 + n + block])
end
return false
"""

# KEYS[1]: in-flight list; KEYS[2]: unacked hash; KEYS[3]: unacked index.
# ARGV[1]: the message; ARGV[2]: delivery tag ('' when it is not to be acknowledged);
# ARGV[3]: the unacked record; ARGV[4]: index score (the claiming client's clock, so it
# tells this attempt apart from any other claim of the same message). Returns 1 when
# claimed, 2 when redis-py retried a call whose first attempt had claimed it, 0 when the
# message is not this consumer's any more (a sweep gave it back to its queue).
CLAIM = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  if ARGV[2] ~= '' and tonumber(redis.call('ZSCORE', KEYS[3], ARGV[2])) == tonumber(ARGV[4]) then
    return 2
  end
  return 0
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
end
return 1
"""

# KEYS[1]: registry. ARGV[1]: in-flight list prefix (global key prefix + INFLIGHT + ':');
# ARGV[2]: global key prefix; ARGV[3]: seconds without heartbeat after which a list goes
# back ('' = only the lists of the channel ids in ARGV[5..], whatever their age);
# ARGV[4]: seconds after which a registry entry is dropped. Moves each list back to the
# consuming end of its queue, oldest message first in line. Returns messages moved.
RETURN = """
local now = tonumber(redis.call('TIME')[1])
local ids = {}
for i = 5, #ARGV do ids[ARGV[i]] = true end
local members
if ARGV[3] ~= '' then
  members = redis.call('ZRANGE', KEYS[1], '-inf', now - tonumber(ARGV[3]), 'BYSCORE')
else
  members = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local moved = 0
for _, key in ipairs(members) do
  local rest = string.sub(key, #ARGV[1] + 1)
  local colon = string.find(rest, ':', 1, true)
  if colon and string.sub(key, 1, #ARGV[1]) == ARGV[1]
      and (ARGV[3] ~= '' or ids[string.sub(rest, 1, colon - 1)]) then
    local source = ARGV[2] .. string.sub(rest, colon + 1)
    while redis.call('LMOVE', key, source, 'LEFT', 'RIGHT') do
      moved = moved + 1
    end
    if ARGV[3] ~= '' then
      local seen = tonumber(redis.call('ZSCORE', KEYS[1], key))
      if seen and seen < now - tonumber(ARGV[4]) then
        redis.call('ZREM', KEYS[1], key)
      end
    end
  end
end
return moved
"""

_SHA = {script: hashlib.sha1(script.encode()).hexdigest() for script in (FETCH, CLAIM, RETURN)}  # noqa: S324 (Redis names scripts by SHA-1)

# Channel ids of this process, and the channels still alive: a new consumer returns the
# in-flight lists of the others (closed, or dropped with a lost connection) at once.
_OWN_IDS: set[str] = set()
_LIVE: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def _forget_parent_ids() -> None:
    """A forked child must not return the in-flight lists of its parent's channels."""
    _OWN_IDS.clear()
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_parent_ids)


def _run(client: Any, script: str, keys: list[Any], args: list[Any]) -> Any:
    """EVALSHA, loading the script on NOSCRIPT (a new primary after a failover)."""
    try:
        return client.evalsha(_SHA[script], len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return client.eval(script, len(keys), *keys, *args)


class ReplicationNotConfirmed(redis.exceptions.ConnectionError):
    """Fewer replicas than ``wait_replicas`` confirmed a publish within the timeout.

    A connection error to Kombu and Celery, so the publish retry policy
    (``task_publish_retry_policy``) publishes again: the first copy may still be on the
    primary, so a confirmed-publish retry can queue the task twice (at-least-once)."""


@dataclass
class _Pending:
    """The command outstanding on the consuming connection."""

    command: str  # "EVAL" (the FETCH scan) or "BLMOVE"
    sources: list[str]  # queue keys, without the global key prefix
    block: int  # 1-based index in sources of the key to block on
    timeout: float
    extra: dict[str, Any] = field(default_factory=dict)


class QoS(_kombu_redis.QoS):
    """Kombu's QoS, minus the unacked write that CLAIM already did, plus the sweep of
    in-flight lists of dead consumers."""

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel._take_claimed(delivery_tag):
            virtual.QoS.append(self, message, delivery_tag)  # memory only: CLAIM wrote Redis
            return
        super().append(message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        """Kombu's ack; when Redis cannot be reached the task is still done, so its
        prefetch slot is freed all the same (Kombu keeps it, and a worker whose slots are
        all held by failed acks never fetches again, so it never notices the dead
        connection). The message stays in the unacked hash: it runs again after the
        visibility timeout, as with Kombu."""
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except BaseException:
            virtual.QoS.ack(self, delivery_tag)
            raise

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        super().restore_visible(start, num, interval)  # type: ignore[no-untyped-call]
        if (self._vrestore_count - 1) % (interval or 1):
            return
        self.channel.sweep_inflight()


class ReliableFetch:
    """The Channel part shared by the plain and the Sentinel channel (a mixin)."""

    QoS = QoS
    #: Seconds without a heartbeat after which an in-flight list goes back to its queue.
    inflight_timeout = 60
    #: Confirmed publish: replicas that must acknowledge each published message (WAIT),
    #: and how long to wait for them. 0: do not wait (Kombu's behaviour).
    wait_replicas = 0
    wait_timeout_ms = 1000

    # Set by Kombu's Channel; declared for the type checker.
    global_keyprefix: str
    sep: str
    priority_steps: list[int]
    brpop_timeout: float
    unacked_key: str
    unacked_index_key: str
    unacked_mutex_key: str
    unacked_mutex_expire: int
    _in_poll: Any
    _closing: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.fetch_id = uuid.uuid4().hex
        self._claimed: set[str] = set()
        self._no_ack_queues: set[str] = set()
        self._pending: _Pending | None = None
        self._block_turn = 0
        super().__init__(*args, **kwargs)
        _OWN_IDS.add(self.fetch_id)
        _LIVE[self.fetch_id] = self

    # --- keys and scripts -------------------------------------------------------------
    def _raw_client(self) -> Any:
        """A client on the channel's pool that does not prefix keys: every key handed to
        the scripts is already complete (Kombu's prefixing client would prefix only the
        first key of an EVALSHA)."""
        ch: Any = self
        pool = ch.pool
        provider = pool.connection_kwargs.get("credential_provider")
        extra = {"credential_provider": provider} if provider is not None else {}
        return redis.Redis(connection_pool=pool, **extra)

    def _inflight_key(self, source: str) -> str:
        return f"{self.global_keyprefix}{INFLIGHT}:{self.fetch_id}:{source}"

    def _fetch_args(self, sources: list[str], block: int) -> list[Any]:
        prefix = self.global_keyprefix
        keys = [
            prefix + INFLIGHT,
            *(prefix + s for s in sources),
            *(self._inflight_key(s) for s in sources),
        ]
        return [len(keys), *keys, len(sources), block]

    def _return_args(self, stale: str, ids: list[str]) -> tuple[list[Any], list[Any]]:
        prefix = self.global_keyprefix
        return [prefix + INFLIGHT], [
            f"{prefix}{INFLIGHT}:",
            prefix,
            stale,
            FORGET_AFTER,
            *ids,
        ]

    # --- consuming: FETCH, then BLMOVE on one key, then CLAIM --------------------------
    def _brpop_start(self, timeout: float | None = None) -> None:
        ch: Any = self
        queues = ch._queue_cycle.consume(len(ch.active_queues))
        if not queues:
            return
        timeout = timeout or self.brpop_timeout or 1
        sources = [ch._q_for_pri(q, pri) for pri in self.priority_steps for q in queues]
        # The first len(queues) keys are each queue's first priority step: block on them in
        # turn, so that an idle worker with several queues waits on each of them.
        block = self._block_turn % len(queues) + 1
        connection = ch.client.connection
        self._pending = _Pending("EVAL", sources, block, float(timeout))
        self._in_poll = connection
        ch._brpop_sent_at = monotonic()
        connection.send_command("EVAL", FETCH, *self._fetch_args(sources, block))

    def _brpop_read(self, **options: Any) -> bool:
        ch: Any = self
        pending = self._pending
        blocking = False
        try:
            if pending is None:  # pragma: no cover (Kombu reads only after a start)
                raise Empty()
            connection = ch.client.connection
            try:
                reply = ch.client.parse_response(connection, pending.command, **options)
            except ch.connection_errors:
                connection.disconnect()
                raise
            except redis.exceptions.ResponseError as exc:
                raise _explain(exc) from exc
            if pending.command == "EVAL":
                if reply:
                    index, item = reply
                    source = pending.sources[int(index) - 1]
                elif self._closing:
                    raise Empty()
                else:
                    source = pending.sources[pending.block - 1]
                    pending.command = "BLMOVE"
                    pending.extra["source"] = source
                    ch._brpop_sent_at = monotonic()
                    connection.send_command(
                        "BLMOVE",
                        self.global_keyprefix + source,
                        self._inflight_key(source),
                        "RIGHT",
                        "LEFT",
                        pending.timeout,
                    )
                    blocking = True
                    raise Empty()
            else:
                if not reply:
                    self._block_turn += 1
                    raise Empty()
                item, source = reply, pending.extra["source"]
            payload, queue, tag = self._claim(self._raw_client(), source, item)
            ch._queue_cycle.rotate(queue)
            self._deliver_claimed(payload, queue, tag)
            return True
        finally:
            if not blocking:
                self._pending = None
                self._in_poll = None
                ch._flush_brpop_reauth()

    def _claim(
        self, client: Any, source: str, item: bytes, record: bool | None = None
    ) -> tuple[Any, str, str]:
        """Move ``item`` from the in-flight list into the unacked hash; raise Empty when
        it is not ours any more (a sweep gave it back to its queue)."""
        queue = bytes_to_str(source).rsplit(self.sep, 1)[0]
        inflight = self._inflight_key(source)
        prefix = self.global_keyprefix
        keys = [inflight, prefix + self.unacked_key, prefix + self.unacked_index_key]
        try:
            payload = loads(bytes_to_str(item))
            tag = payload["properties"]["delivery_tag"]
            info = payload["properties"].get("delivery_info") or {}
        except (ValueError, TypeError, KeyError):
            # Kombu drops a message it cannot decode too; say so, and do not keep it.
            log.critical("cannot decode a message from queue %r, dropped: %r", queue, item[:4096])
            _run(client, CLAIM, keys, [item, "", "", 0])
            raise Empty() from None
        if record is None:
            record = queue not in self._no_ack_queues
        unacked = dumps([payload, info.get("exchange"), info.get("routing_key")])
        score = repr(time())  # the exact string: a retried CLAIM compares it with ZSCORE
        claimed = _run(client, CLAIM, keys, [item, tag if record else "", unacked, score])
        if not claimed:
            log.info("message %s went back to queue %r before this consumer claimed it", tag, queue)
            raise Empty()
        return payload, queue, tag

    def _deliver_claimed(self, payload: Any, queue: str, tag: str) -> None:
        self._claimed.add(tag)
        try:
            ch: Any = self
            ch.connection._deliver(payload, queue)
        finally:
            self._claimed.discard(tag)

    def _take_claimed(self, tag: str) -> bool:
        if tag in self._claimed:
            self._claimed.discard(tag)
            return True
        return False

    # --- synchronous get (basic_get, SimpleQueue.get_nowait) ---------------------------
    def _fetch_now(self, queue: str, record: bool) -> tuple[Any, str]:
        ch: Any = self
        sources = [ch._q_for_pri(queue, pri) for pri in self.priority_steps]
        client = self._raw_client()
        reply = _run(client, FETCH, *_split(self._fetch_args(sources, 0)))
        if not reply:
            raise Empty()
        index, item = reply
        payload, _, tag = self._claim(client, sources[int(index) - 1], item, record)
        if ch._expires and queue in ch._expires:
            with ch.conn_or_acquire() as prefixed:
                ch._maybe_update_queues_expire(prefixed, queue)
        return payload, tag

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        payload, tag = self._fetch_now(queue, record=True)
        self._claimed.add(tag)  # the caller's QoS.append must not write Redis again
        return payload

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        ch: Any = self
        try:
            payload, tag = self._fetch_now(queue, record=not no_ack)
        except Empty:
            return None
        message = ch.Message(payload, channel=self)
        if not no_ack:
            self._claimed.add(tag)
            ch.qos.append(message, tag)
        return message

    # --- consumers ----------------------------------------------------------------------
    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        ch: Any = self
        if kwargs.get("no_ack", args[0] if args else False):
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        ret = super().basic_consume(queue, *args, **kwargs)  # type: ignore[misc]
        if queue not in ch._fanout_queues:
            self.return_orphans()
        return ret

    def _basic_cancel(self, consumer_tag: str) -> Any:
        ch: Any = self
        queue = ch._tag_to_queue.get(consumer_tag)
        ret = super()._basic_cancel(consumer_tag)  # type: ignore[misc]
        if queue is not None and queue not in ch._active_queues:
            self._no_ack_queues.discard(queue)
        return ret

    # --- confirmed publish --------------------------------------------------------------
    @property
    def supports_batch_publish(self) -> bool:
        """No pipelined batches when each publish must be confirmed on its own."""
        if self.wait_replicas:
            return False
        return bool(super().supports_batch_publish)  # type: ignore[misc]

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """Kombu's LPUSH, then ``WAIT wait_replicas wait_timeout_ms`` on the SAME
        connection (one pipeline): WAIT counts the replicas that have every write of the
        connection it runs on (https://redis.io/docs/latest/commands/wait/)."""
        if not self.wait_replicas or kwargs.get("_publish_batch") is not None:
            super()._put(queue, message, **kwargs)  # type: ignore[misc]
            return
        ch: Any = self
        key = ch._q_for_pri(queue, ch._get_message_priority(message, reverse=False))
        with ch.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, dumps(message))
            if ch._expires and queue in ch._expires:
                for pri in self.priority_steps:
                    pipe.pexpire(ch._q_for_pri(queue, pri), ch._expires[queue])
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            confirmed = int(pipe.execute()[-1])
        if confirmed < self.wait_replicas:
            raise ReplicationNotConfirmed(
                f"publish to queue {queue!r} confirmed by {confirmed} replica(s) of "
                f"{self.wait_replicas} within {self.wait_timeout_ms} ms "
                "(CELERY_BROKER_WAIT_REPLICAS): the message is on the primary but could be "
                "lost if it fails now; retried under task_publish_retry_policy"
            )

    # --- giving in-flight messages back -----------------------------------------------
    def return_orphans(self) -> int:
        """Move the in-flight lists of this process's other channels that are closed or
        lost their connection back to their queues. Returns the number of messages."""
        ids = [i for i in _OWN_IDS if i != self.fetch_id and _retired(_LIVE.get(i))]
        if not ids:
            return 0
        keys, args = self._return_args("", ids)
        ch: Any = self
        try:
            moved = int(_run(self._raw_client(), RETURN, keys, args))
        except (*ch.connection_errors, redis.exceptions.ResponseError):
            log.warning("in-flight lists of a lost connection left to the sweep", exc_info=True)
            return 0
        _OWN_IDS.difference_update(ids)
        if moved:
            log.warning(
                "%d in-flight message(s) of a lost broker connection went back to their queue",
                moved,
            )
        return moved

    def sweep_inflight(self) -> int:
        """Move the in-flight lists without a heartbeat for ``inflight_timeout`` seconds
        back to their queues (dead consumers), under Kombu's unacked restore mutex."""
        ch: Any = self
        keys, args = self._return_args(str(int(self.inflight_timeout)), [])
        with ch.conn_or_acquire() as prefixed:
            try:
                with kombu_redis.Mutex(prefixed, self.unacked_mutex_key, self.unacked_mutex_expire):
                    moved = int(_run(self._raw_client(), RETURN, keys, args))
            except kombu_redis.MutexHeld:
                return 0
        if moved:
            log.warning(
                "%d in-flight message(s) of a consumer silent for %s s went back to their queue",
                moved,
                self.inflight_timeout,
            )
        return moved

    def close(self) -> None:
        ch: Any = self
        self._closing = True
        if self._in_poll and self._pending is not None:
            # Read the outstanding reply so the connection is clean; a message it carries
            # stays in this channel's in-flight list and goes back just below.
            try:
                ch.client.parse_response(ch.client.connection, self._pending.command)
            except Exception:
                log.debug("could not read the last fetch reply at close", exc_info=True)
            self._in_poll = None
            self._pending = None
        if not ch.closed and not _retired(self, closing=True):
            keys, args = self._return_args("", [self.fetch_id])
            try:
                _run(self._raw_client(), RETURN, keys, args)
                _OWN_IDS.discard(self.fetch_id)
            except Exception:
                log.debug("in-flight list left to the next consumer or sweep", exc_info=True)
        super().close()  # type: ignore[misc]


def _split(args: list[Any]) -> tuple[list[Any], list[Any]]:
    """``[numkeys, *keys, *argv]`` -> ``(keys, argv)``."""
    count = int(args[0])
    return list(args[1 : 1 + count]), list(args[1 + count :])


def _retired(channel: Any, closing: bool = False) -> bool:
    """Whether a channel of this process can no longer read its in-flight replies."""
    if channel is None:
        return True
    if channel.closed and not closing:
        return True
    transport = getattr(channel, "connection", None)
    return getattr(transport, "client", None) is None


def _explain(exc: Exception) -> Exception:
    text = str(exc)
    if "unknown command" in text.lower() and ("lmove" in text.lower() or "eval" in text.lower()):
        return redis.exceptions.ResponseError(
            f"{text}: reliable fetch needs Redis >= 6.2 (LMOVE/BLMOVE) with scripting; "
            "upgrade Redis or unset CELERY_FLEET_RELIABLE_FETCH"
        )
    return exc


#: The transport options this module adds to Kombu's.
OPTIONS = ("inflight_timeout", "wait_replicas", "wait_timeout_ms")


class Channel(ReliableFetch, _kombu_redis.Channel):
    """Kombu's Redis channel with reliable fetch."""

    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        *OPTIONS,
    )


class SentinelChannel(ReliableFetch, _kombu_redis.SentinelChannel):
    """Kombu's Sentinel channel with reliable fetch."""

    from_transport_options = (
        *kombu_redis.SentinelChannel.from_transport_options,
        *OPTIONS,
    )


class Transport(_kombu_redis.Transport):
    """``redis://``, ``rediss://`` and ``socket://`` with reliable fetch."""

    Channel = Channel


class SentinelTransport(_kombu_redis.SentinelTransport):
    """``sentinel://`` with reliable fetch."""

    Channel = SentinelChannel


ALIASES = {
    "redis": "celery_fleet.transport:Transport",
    "rediss": "celery_fleet.transport:Transport",
    "sentinel": "celery_fleet.transport:SentinelTransport",
}


def install() -> None:
    """Make the Redis URL schemes name these transports in this process.

    ``broker_transport`` picks the transport of the first connection only: when a
    connection fails over to the next URL of a list (``sentinel://a;sentinel://b``),
    ``kombu.Connection.switch`` takes the transport from the URL scheme again, which
    would be Kombu's own. Idempotent.
    """
    for scheme, path in ALIASES.items():
        if TRANSPORT_ALIASES.get(scheme) != path:
            TRANSPORT_ALIASES[scheme] = path
            _transport_cache.pop(scheme, None)
