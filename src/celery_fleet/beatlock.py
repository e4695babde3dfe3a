"""Beat high availability: one lock in the broker's Redis, a standby beat on other hosts.

With ``CELERY_FLEET_BEAT_LOCK=true`` the settings make ``LockedScheduler`` beat's scheduler
(``beat_scheduler``). Every beat started with them runs the same loop; only the one holding
``celery-fleet:beat-lock`` sends tasks, the others are standbys.

The lock
    ``SET celery-fleet:beat-lock <host:pid:random> NX PX <ttl>``. The holder renews it with a
    compare-and-PEXPIRE script on every scheduler tick, and ticks at least every ttl/3 (the
    tick's sleep is capped), so a live holder renews three times per TTL. A standby tries to
    take the lock every ttl/3. A clean shutdown deletes the lock (compare-and-DEL), so the
    standby takes over within ttl/3; a killed or stuck holder is replaced once the lock
    expires: within ttl + ttl/3.

Fencing: no run is sent by two beats
    Before it sends a due entry, the scheduler *claims* the run in one script that is atomic
    in Redis: if the lock still holds this beat's token, renew it and record the run's time
    in the hash ``celery-fleet:beat-runs`` (entry name -> last run, ISO 8601); otherwise send
    nothing and fall back to standby. A beat that takes the lock loads that hash first, so
    it continues the schedule where the previous holder left it (an hourly task that ran at
    10:00 next runs at 11:00, whichever beat sends it), instead of from its own file.

    So a beat that lost the lock (paused past the TTL, partitioned, its key deleted) sends
    nothing after its next claim, and a beat that paused *after* a successful claim and
    before the publish sends that one run late, but the new holder knows about the claim
    and does not send it again. Renewal and fencing run in the scheduler's own thread, not
    a separate one: a beat whose loop is stuck stops renewing and loses the lock, rather
    than keeping it alive while sending nothing.

    A beat that loses the lock does not exit: it logs an error, becomes a standby in the
    same process and may take the lock again later (systemd's ``Restart=on-failure`` would
    not restart a clean exit, and the process needs nothing new to be a standby).

Limits: the lock and the claims live in one Redis primary. A Sentinel failover can lose
the writes of the last moment before it (replication is asynchronous): a lost claim can
make the next holder send that run once more; a lost lock key lets another beat take the
lock while the old holder's next claim then fails. Redis errors count as "not holding":
a beat that cannot reach Redis sends nothing until it can (it reconnects through
``app.connection_for_write()``, so it follows a failover).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from datetime import datetime
from typing import Any

from celery.beat import PersistentScheduler, ScheduleEntry

from .settings import beat_lock

LOCK_KEY = "celery-fleet:beat-lock"
RUNS_KEY = "celery-fleet:beat-runs"

log = logging.getLogger("celery_fleet.beatlock")

# 1: still ours, renewed. 2: was free, now ours. 0: another beat holds it.
_ENSURE = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""
# 1: the run is ours to send (and recorded). 0: the lock is not ours: send nothing.
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

HELD = 1
TAKEN = 2


def new_token(hostname: str | None = None) -> str:
    """``host:pid:random``: unique per process, and says who holds the lock."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"


def holder(token: str | bytes | None) -> str | None:
    """The host part of a lock value (for ``celery-fleet doctor``)."""
    if token is None:
        return None
    text = token.decode() if isinstance(token, bytes) else token
    return text.rsplit(":", 2)[0]


class Lock:
    """The lock and the run claims, over one broker connection that is made again after any
    Redis error (so a Sentinel failover moves it to the new primary)."""

    def __init__(self, app: Any, ttl: float, token: str | None = None) -> None:
        self.app = app
        self.ttl_ms = int(ttl * 1000)
        self.token = token or new_token()
        self._conn: Any = None

    @property
    def interval(self) -> float:
        """How often the holder renews and a standby asks: a third of the TTL."""
        return self.ttl_ms / 3000

    def _client(self) -> Any:
        if self._conn is None:
            self._conn = self.app.connection_for_write()
        return self._conn.default_channel.client

    def _script(self, script: str, keys: list[str], args: list[Any]) -> int | None:
        """The script's answer, or None when Redis could not be asked (counts as "not ours")."""
        try:
            return int(self._client().eval(script, len(keys), *keys, *args))
        except Exception as exc:  # connection lost, READONLY after a failover, ACL, ...
            log.warning("beat lock: Redis error (%s: %s); reconnecting", type(exc).__name__, exc)
            self.close()
            return None

    def ensure(self) -> int | None:
        """Renew the lock if ours, take it if free: ``HELD``, ``TAKEN``, 0 (another beat's)
        or None (Redis could not be asked)."""
        return self._script(_ENSURE, [LOCK_KEY], [self.token, self.ttl_ms])

    def claim(self, name: str, run_at: datetime) -> bool:
        """Record a run of ``name`` at ``run_at`` iff the lock is still ours (fencing)."""
        args = [self.token, self.ttl_ms, name, run_at.isoformat()]
        return self._script(_CLAIM, [LOCK_KEY, RUNS_KEY], args) == 1

    def runs(self) -> dict[str, datetime]:
        """The last claimed run of every entry, as the previous holders recorded them."""
        raw = self._client().hgetall(RUNS_KEY)
        result = {}
        for name, value in raw.items():
            key = name.decode() if isinstance(name, bytes) else str(name)
            text = value.decode() if isinstance(value, bytes) else str(value)
            try:
                result[key] = datetime.fromisoformat(text)
            except ValueError:
                log.warning("beat lock: ignoring unreadable run time %r of %s", text, key)
        return result

    def release(self) -> bool:
        """Delete the lock if it is still ours (a clean shutdown hands over at once)."""
        return self._script(_RELEASE, [LOCK_KEY], [self.token]) == 1

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # a dead connection
                log.debug("beat lock: closing the connection failed", exc_info=True)


class LockedScheduler(PersistentScheduler):  # type: ignore[misc]  # Celery has no types
    """``PersistentScheduler`` that sends only while it holds the beat lock (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock = Lock(kwargs["app"], beat_lock().ttl)
        self.active = False
        self._standby_logged: float | None = None  # when "standby" was last logged
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        state = self.lock.ensure()
        if state == TAKEN or (state == HELD and not self.active):
            if not self._take_over():
                return self.lock.interval
        elif state != HELD:
            self._standby("cannot reach Redis" if state is None else "held by another beat")
            return self.lock.interval
        interval = float(super().tick(*args, **kwargs) or 0.0)
        return min(interval, self.lock.interval) if interval > 0 else interval

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        # tick() reserved the entry just before: the schedule holds this run's time.
        reserved = self.schedule.get(entry.name, entry)
        if not self.lock.claim(entry.name, reserved.last_run_at):
            log.error(
                "beat lock: lost %s before sending %s; not sending it, standing by",
                LOCK_KEY,
                entry.name,
            )
            self._standby("lost before a send")
            return
        super().apply_entry(entry, producer=producer)

    def _take_over(self) -> bool:
        """Continue the schedule from the runs the previous holders claimed."""
        try:
            runs = self.lock.runs()
        except Exception as exc:
            log.warning("beat lock: cannot read %s (%s); not sending yet", RUNS_KEY, exc)
            self.lock.close()
            return False
        for name, entry in self.schedule.items():
            if name in runs:
                entry.last_run_at = runs[name]
        self._heap = None  # rebuilt from the loaded times by the next tick
        self.active = True
        self._standby_logged = None
        log.warning("beat lock: took %s; this beat is now the active one", LOCK_KEY)
        return True

    def _standby(self, why: str) -> None:
        if self.active:
            log.error("beat lock: %s is not ours any more (%s); standing by", LOCK_KEY, why)
            self._standby_logged = None
        self.active = False
        now = time.monotonic()
        last = self._standby_logged
        if last is None or now - last > 300:  # say so at once, then every 5 minutes
            log.warning(
                "beat lock: standby, %s: %s; asking every %.1f s",
                LOCK_KEY,
                why,
                self.lock.interval,
            )
            self._standby_logged = now

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.active and self.lock.release():
                log.warning("beat lock: released %s", LOCK_KEY)
            self.active = False
            self.lock.close()
