"""Beat high availability (celery_fleet.beatlock) with real parts: two ``celery beat``
processes on one schedule against the role's Redis (TLS, shipped ACL, the app user), a
worker that runs what they send. The periodic task appends ``<send time> <beat pid>`` to a
file, both taken in the beat process at send time (``BeatLazyFunc``), so that every send
is counted outside Redis and attributed to the beat that sent it."""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_fleet import doctor
from celery_fleet.beatlock import LOCK_KEY, RUNS_KEY
from harness import envs
from harness.beat import Beat
from harness.redis_procs import HOST, RedisFleet
from harness.worker import StartWorker

INTEGRATION = Path(__file__).resolve().parent
TTL = 3.0
INTERVAL = TTL / 3
APP = """
import os
import time

from celery.beat import BeatLazyFunc
from fleet_app import app


@app.task(name="beatlock.stamp")
def stamp(path, sent_at, pid, tag):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{sent_at:.3f} {pid} {tag}\\n".encode())
    finally:
        os.close(fd)


app.conf.beat_schedule = {
    "stamp": {
        "task": "beatlock.stamp",
        "schedule": 1.0,
        "args": (%(path)r, BeatLazyFunc(time.time), BeatLazyFunc(os.getpid), "1s"),
    },
    "stamp-10s": {
        "task": "beatlock.stamp",
        "schedule": 10.0,
        "args": (%(path)r, BeatLazyFunc(time.time), BeatLazyFunc(os.getpid), "10s"),
    },
}
"""


@pytest.fixture
def beats(tmp_path: Path) -> Iterator[list[Beat]]:
    started: list[Beat] = []
    yield started
    for beat in started:
        with contextlib.suppress(Exception):
            beat.stop(timeout=15)
        beat.kill()
        print(f"--- {beat.name}\n{beat.log_tail(40)}")


def stamps(path: Path, tag: str = "1s") -> list[tuple[float, int]]:
    """(send time, beat pid) of every send of the entry ``tag`` (1s or 10s)."""
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return sorted((float(at), int(pid)) for at, pid, t in rows if t == tag)


def wait_for(check: object, what: str, timeout: float) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, f"no {what} after {timeout:.0f} s"
        time.sleep(0.1)
    return time.monotonic() - start


def setup(
    fleet: RedisFleet,
    start_worker: StartWorker,
    tmp_path: Path,
    sentinel: bool,
    replica: bool = False,
) -> tuple[dict[str, str], Path, list[Path]]:
    primary = fleet.server("primary")
    if replica:
        fleet.server("replica", replica_of=primary)
    if sentinel:
        fleet.sentinels(primary, count=3)
        env = envs.sentinel(fleet)
    else:
        env = {"CELERY_BROKER_URL": envs.url(fleet, primary, 0), **envs.tls(fleet)}
    env |= {"CELERY_FLEET_BEAT_LOCK": "true", "CELERY_FLEET_BEAT_LOCK_TTL": str(TTL)}
    runlog = tmp_path / "stamps.log"
    appdir = tmp_path / "app"
    appdir.mkdir()
    (appdir / "beatlock_app.py").write_text(APP % {"path": str(runlog)})
    pythonpath = [appdir, INTEGRATION]
    start_worker(env, app="beatlock_app", pythonpath=pythonpath, pool="threads", concurrency=2)
    return env, runlog, pythonpath


def check_spacing(rows: list[tuple[float, int]]) -> tuple[float, int]:
    """At most one send per 1 s period: the smallest gap between two sends (whichever beat
    sent them) and the most sends in one whole second."""
    times = [at for at, _ in rows]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    per_second = Counter(int(at) for at in times)
    return min(gaps), max(per_second.values())


@pytest.mark.timeout(240)
def test_standby_takes_over_after_a_kill_and_no_period_runs_twice(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    beats: list[Beat],
    tmp_path: Path,
    record_property: pytest.RecordProperty,
) -> None:
    env, runlog, pythonpath = setup(redis_fleet, start_worker, tmp_path, sentinel=True)
    active = Beat("beatlock_app", env, tmp_path / "beats", pythonpath, name="beat-a")
    standby = Beat("beatlock_app", env, tmp_path / "beats", pythonpath, name="beat-b")
    beats += [active.start()]
    active.wait_for_log("now the active one")
    beats.append(standby.start())
    standby.wait_for_log("beat lock: standby")

    # Both run: only the holder sends. Kill it once it sent the 10 s entry too.
    wait_for(lambda: stamps(runlog, "10s"), "a send of the 10 s entry", timeout=40)
    time.sleep(1)
    both = stamps(runlog)
    assert len(both) >= 5, both
    assert {pid for _, pid in both} == {active.pid}, both
    admin = redis_fleet.client(redis_fleet.primary())
    value = admin.get(LOCK_KEY).decode()
    assert f":{active.pid}:" in value
    assert admin.hexists(RUNS_KEY, "stamp")
    # celery-fleet doctor's beat check, as the app user: one holder, so healthy.
    primary = redis_fleet.primary()
    verdict = doctor.check_beat(doctor.Deployment(env, 5.0), HOST, primary.port)
    assert verdict.status == "ok", verdict
    assert verdict.detail.startswith(f"active on {socket.gethostname()}"), verdict

    active.kill()
    killed_at = time.time()
    takeover = wait_for(
        lambda: any(pid == standby.pid for _, pid in stamps(runlog)),
        "send from the standby",
        timeout=4 * TTL + 20,
    )
    # The standby continues the 10 s entry from the holder's last claim (Redis), not from
    # its own schedule file: its first send of it comes 10 s after the holder's.
    wait_for(
        lambda: any(pid == standby.pid for _, pid in stamps(runlog, "10s")),
        "a send of the 10 s entry from the standby",
        timeout=40,
    )
    standby.stop()

    rows = stamps(runlog)
    first_b = min(at for at, pid in rows if pid == standby.pid)
    last_a = max(at for at, pid in rows if pid == active.pid)
    gap = first_b - last_a
    min_gap, most = check_spacing(rows)
    record_property("takeover_after_kill_s", round(first_b - killed_at, 2))
    record_property("send_gap_across_takeover_s", round(gap, 2))
    record_property("min_gap_between_sends_s", round(min_gap, 3))
    record_property("sends", len(rows))
    assert not [r for r in rows if r[1] == active.pid and r[0] > killed_at], rows
    # Killed holder: its lock expires after TTL, the standby asks every TTL/3.
    assert first_b - killed_at <= TTL + INTERVAL + 3.0, (first_b - killed_at, takeover)
    assert min_gap >= 0.8, rows
    assert most == 1, rows
    slow = stamps(runlog, "10s")
    slow_gaps = [b[0] - a[0] for a, b in itertools.pairwise(slow)]
    record_property("gaps_10s_entry_s", [round(g, 2) for g in slow_gaps])
    assert {pid for _, pid in slow} == {active.pid, standby.pid}, slow
    assert min(slow_gaps) >= 9.8, slow
    assert len([r for r in rows if r[1] == standby.pid]) >= 4, rows


@pytest.mark.timeout(180)
def test_beat_whose_lock_is_stolen_stops_sending_then_a_clean_stop_hands_over(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    beats: list[Beat],
    tmp_path: Path,
    record_property: pytest.RecordProperty,
) -> None:
    env, runlog, pythonpath = setup(redis_fleet, start_worker, tmp_path, sentinel=False)
    beat = Beat("beatlock_app", env, tmp_path / "beats", pythonpath, name="beat-a")
    beats.append(beat.start())
    beat.wait_for_log("now the active one")
    wait_for(lambda: len(stamps(runlog)) >= 3, "three sends", timeout=30)

    admin = redis_fleet.client(redis_fleet.nodes[0])
    admin.delete(LOCK_KEY)
    admin.set(LOCK_KEY, "thief:1:0000", px=60_000)
    stolen_at = time.time()
    beat.wait_for_log("not ours any more (held by another beat)", timeout=4 * INTERVAL + 10)
    time.sleep(4)
    after = [at for at, _ in stamps(runlog) if at > stolen_at]
    record_property("sends_after_steal", len(after))
    # A send claimed before the steal may carry a time just after it; nothing later.
    assert all(at < stolen_at + 0.2 for at in after), after

    # The thief lets go: the same process takes the lock again and resumes.
    admin.delete(LOCK_KEY)
    released_at = time.time()
    wait_for(lambda: any(at > released_at for at, _ in stamps(runlog)), "resumed sends", timeout=20)
    record_property("resume_after_release_s", round(time.time() - released_at, 2))

    # A clean stop deletes the lock at once (a standby would not wait for the TTL).
    assert f":{beat.pid}:" in admin.get(LOCK_KEY).decode()
    beat.stop()
    assert admin.get(LOCK_KEY) is None
    assert "beat lock: released" in "\n".join(beat.messages())


@pytest.mark.timeout(240)
def test_the_lock_follows_a_sentinel_failover_without_double_sends(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    beats: list[Beat],
    tmp_path: Path,
    record_property: pytest.RecordProperty,
) -> None:
    env, runlog, pythonpath = setup(
        redis_fleet, start_worker, tmp_path, sentinel=True, replica=True
    )
    first = Beat("beatlock_app", env, tmp_path / "beats", pythonpath, name="beat-a")
    second = Beat("beatlock_app", env, tmp_path / "beats", pythonpath, name="beat-b")
    beats += [first.start()]
    first.wait_for_log("now the active one")
    beats.append(second.start())
    second.wait_for_log("beat lock: standby")
    wait_for(lambda: len(stamps(runlog)) >= 3, "three sends", timeout=30)

    old = redis_fleet.primary()
    redis_fleet.kill(old)
    killed_at = time.time()
    new = redis_fleet.wait_for_failover(old)
    resumed = wait_for(
        lambda: len([at for at, _ in stamps(runlog) if at > killed_at]) >= 5,
        "five sends after the failover",
        timeout=90,
    )
    rows = stamps(runlog)
    min_gap, most = check_spacing(rows)
    before = max(at for at, _ in rows if at <= killed_at)
    after = min(at for at, _ in rows if at > killed_at)
    record_property("send_gap_across_failover_s", round(after - before, 2))
    record_property("five_sends_after_kill_s", round(resumed, 1))
    record_property("senders_after_failover", sorted({p for at, p in rows if at > killed_at}))
    assert min_gap >= 0.8, rows
    assert most == 1, rows
    admin = redis_fleet.client(new)
    holder = admin.get(LOCK_KEY)
    assert holder is not None
    assert holder.decode().split(":")[1] in {str(first.pid), str(second.pid)}
