"""Beat high availability under a host kill (docs/operations.md, "Beat high availability"):
both hosts of celery_beat run beat under the lock (celery_beat_lock, TTL 10 s in this
scenario). The test finds the host whose beat holds the lock and `docker kill`s its
container: beat, a worker, a Redis node and a Sentinel die at once (when its Redis was the
primary, the Sentinels fail over too). From the beats' journals it checks that the standby
takes over within the bound below and that the periodic task (every 5 s) is sent once per
period across the kill; the workers' journals count the runs. Then it starts the container
again: systemd brings its units back, its Redis rejoins as a replica through Sentinel, its
beat stands by (the other one holds the lock now), and the doctor is healthy.

The first file of the scenario in pytest's order: it leaves all three nodes up and their
units running for test_fleet.py and the files after it (nothing needs a converge: the
units are enabled and their files are on disk; the test checks that they came back).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time

import fleet
import pytest
from test_fleet import (
    BEAT_NODES,
    FLOWER_NODE,
    NODES,
    WORKER_UNIT,
    _doctor,
    beat_sends,
    lock_holder,
    sh,
    wait_workers,
)
from test_rolling import AUTH_OR_TLS_ERROR
from test_scale import healthy_without

GROUP_VARS = fleet.group_vars()
PERIOD = float(GROUP_VARS["celery_settings"]["DEMO_HEARTBEAT_SECONDS"])
TTL = float(GROUP_VARS["celery_beat_lock_ttl"])
# A standby asks for the lock every TTL/3; the holder renews it at least that often.
POLL = TTL / 3
MASTER = GROUP_VARS["redis_master_name"]
# The broker connection's socket timeout and connect timeout (celery_fleet's defaults,
# redis_socket_timeout 10 s, redis_socket_connect_timeout 5 s): a killed host sends no
# reset, so a standby waiting on the killed primary gives up after these, then asks the
# Sentinels again.
RECONNECT = 10.0 + 5.0
# Lateness of one tick and of the journal's time stamps on this loaded 2-core machine.
SLACK = 3.0
# A run may be sent at most this much earlier than one period after the previous run (the
# journal stamps a line when it receives it); two beats sending would give gaps near 0.
EARLY = 0.5
TOOK = "beat lock: took celery-fleet:beat-lock"
UNITS = ["redis-server.service", "redis-sentinel.service", WORKER_UNIT, "celery-beat.service"]


def primary() -> str:
    """The node the Sentinels name as the primary (asked on node2, never killed here)."""
    host, _ = fleet.sentinel("cf-fleet-node2").execute_command(
        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER
    )
    by_address = {fleet.address(n): n for n in NODES}
    return by_address[host.decode() if isinstance(host, bytes) else str(host)]


def took_lock(node: str, since: float) -> float | None:
    """When ``node``'s beat last logged taking the lock after ``since`` (Unix seconds)."""
    journal = sh(
        node, f"journalctl -u celery-beat.service --since @{int(since)} -o short-unix --no-pager"
    ).stdout
    stamps = [float(line.split(" ", 1)[0]) for line in journal.splitlines() if TOOK in line]
    stamps = [s for s in stamps if s >= since]
    return stamps[-1] if stamps else None


def heartbeats_run(since: float, until: float) -> set[str]:
    """Ids of the periodic task's runs that succeeded on any worker in [since, until]."""
    ids: set[str] = set()
    for node in NODES:
        journal = sh(
            node,
            f"journalctl -u {WORKER_UNIT} --since @{int(since)} --until @{int(until) + 1}"
            " -o short-unix --no-pager",
        ).stdout
        for line in journal.splitlines():
            match = re.search(r"demo_app\.tasks\.heartbeat\[([0-9a-f-]+)\] succeeded", line)
            if match and since <= float(line.split(" ", 1)[0]) <= until:
                ids.add(match.group(1))
    return ids


def units_back(node: str) -> bool:
    units = [*UNITS, "flower.service"] if node == FLOWER_NODE else UNITS
    states = sh(node, f"systemctl is-active {' '.join(units)}", check=False).stdout.split()
    return states == ["active"] * len(units)


# Measured in a full scenario run (2 cores, molecule rabbitmq beside it, load 7-23): the
# whole test 133 s; the takeover 7.1 s after the kill (its wait allows ~92 s), the units
# back ~5 s after docker start (240 s), Redis a replica again after 12 s (180 s). Every wait
# and the test's 900 s are more than twice those.
@pytest.mark.timeout(900)
def test_killing_the_active_beat_host_hands_the_schedule_to_the_standby_once_per_period() -> None:
    wait_workers()
    victim = lock_holder()
    assert victim in BEAT_NODES, f"the beat lock is held by {victim!r}"
    standby = next(n for n in BEAT_NODES if n != victim)
    assert sh(standby, "systemctl is-active celery-beat.service").stdout.strip() == "active"
    was_primary = primary() == victim
    since = time.time()
    time.sleep(3 * PERIOD)  # runs sent before the kill

    killed_at = time.time()
    fleet.docker("kill", victim)
    failover: float | None = None
    try:
        # Takeover bound: the lock expires TTL after the holder's last renewal (at or before
        # the kill) and the standby asks every POLL. If the victim was the primary, the
        # standby can only write once a replica is promoted and it has given up on the
        # dead primary's connection (RECONNECT).
        deadline = killed_at + TTL + RECONNECT + 60 + 2 * POLL
        took: float | None = None
        while time.time() < deadline and (took is None or (was_primary and failover is None)):
            if was_primary and failover is None:
                with contextlib.suppress(Exception):  # a Sentinel may be busy failing over
                    if primary() != victim:
                        failover = time.time() - killed_at
            if took is None:
                took = took_lock(standby, killed_at)
            time.sleep(0.5)
        assert took is not None, f"{standby} did not take the lock within {deadline - killed_at} s"
        takeover = took - killed_at
        bound = (max(TTL, (failover or 0) + RECONNECT) if was_primary else TTL) + POLL + SLACK
        print(
            f"killed {victim} (Redis primary: {was_primary}); failover seen after "
            f"{failover if failover is None else round(failover, 1)} s; {standby} took the "
            f"lock {takeover:.1f} s after the kill (bound {bound:.1f} s)"
        )
        assert takeover <= bound, f"takeover after {takeover:.1f} s, bound {bound:.1f} s"
        time.sleep(3 * PERIOD)  # runs sent by the new holder
    finally:
        restarted, restarted_at = time.monotonic(), time.time()
        fleet.docker("start", victim)

    # systemd in the container brings the units back (enabled; no converge).
    state = sh(victim, "timeout 240 systemctl is-system-running --wait", check=False, timeout=250)
    fleet.wait_for(lambda: units_back(victim), 240, f"the units of {victim} to be active")
    units_after = time.monotonic() - restarted
    failed = sh(victim, "systemctl --failed --plain --no-legend --no-pager").stdout
    print(f"{victim} started: {state.stdout.strip()}, failed units: {failed.strip() or 'none'}")
    new_primary = primary()
    fleet.wait_for(
        lambda: fleet.replicates_from(victim, new_primary),
        180,
        f"{victim}'s Redis to rejoin as a replica of {new_primary}",
    )
    fleet.wait_for_quorum(NODES, MASTER, f"the kill of {victim}", timeout=120)
    rejoined_after = time.monotonic() - restarted
    # Its beat stands by: the other one holds the lock and keeps it.
    fleet.wait_for(
        lambda: (
            "beat lock: standby"
            in sh(
                victim,
                f"journalctl -u celery-beat.service --since @{int(restarted_at)} -o cat --no-pager",
            ).stdout
        ),
        120,
        f"{victim}'s beat to stand by",
    )
    assert lock_holder() == standby
    wait_workers()
    end = time.time()

    # --- the runs across the kill ------------------------------------------------------
    sends = sorted(
        [(t, victim) for t in beat_sends(victim, since, end)]
        + [(t, standby) for t in beat_sends(standby, since, end)]
    )
    before = [(t, n) for t, n in sends if t < killed_at]
    after = [(t, n) for t, n in sends if t >= killed_at]
    print(f"sends: {[(round(t - killed_at, 1), n[-1]) for t, n in sends]} (s from the kill)")
    # Before the kill only the holder sent, after it only the new holder (the killed host's
    # beat came back as a standby and sent nothing).
    assert before, "no run sent before the kill"
    assert {n for _, n in before} == {victim}, before
    assert after, "no run sent after the kill"
    assert {n for _, n in after} == {standby}, after
    # The rule: once per period. No two runs closer than PERIOD - EARLY (two beats sending
    # the same period would be ~0 s apart); between runs of one holder at most PERIOD +
    # SLACK; across the kill at most what the takeover allows: the holder's last run came
    # less than PERIOD + SLACK before the kill, and the new holder sends the overdue run at
    # once on taking the lock (it continues from the runs claimed in Redis), so the gap is
    # at most PERIOD + takeover bound + SLACK: the periods missed are those of the takeover.
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sends)]
    across = len(before) - 1
    assert min(gaps) >= PERIOD - EARLY, f"two runs {min(gaps):.2f} s apart: {gaps}"
    steady = gaps[:across] + gaps[across + 1 :]
    # A missed period shows as a gap of two periods; one late send does not (the first run
    # published to a new primary after a failover came 7.2 s after the overdue one in the
    # first full run, at load ~20 on 2 cores).
    assert max(steady) < 2 * PERIOD - 1.0, f"a run was missed outside the takeover: {gaps}"
    assert gaps[across] <= PERIOD + bound + SLACK, f"across the kill: {gaps[across]:.1f} s"
    assert after[0][0] - took <= SLACK, "the new holder did not send the overdue run at once"
    print(f"gap across the kill: {gaps[across]:.1f} s; {len(sends)} runs sent")
    # The workers ran them (the existing count: "succeeded" in the workers' journals), each
    # once: a run's task in flight on the killed worker (put back after the transport's
    # in-flight timeout) or published to a killed primary just before the failover (not yet
    # replicated) may be missing, and one run of the window's edges may count on either side.
    time.sleep(SLACK)
    ran = heartbeats_run(since, end + SLACK)
    print(f"runs that succeeded on a worker: {len(ran)} of {len(sends)} sent")
    assert len(sends) - 2 <= len(ran) <= len(sends) + 2, (len(ran), len(sends))

    # --- the fleet is whole again ------------------------------------------------------
    for node in NODES:
        journal = sh(node, f"journalctl -u {WORKER_UNIT} --since @{int(since)} --no-pager").stdout
        assert not AUTH_OR_TLS_ERROR.search(journal), (node, AUTH_OR_TLS_ERROR.findall(journal))
    _doctor(FLOWER_NODE)  # writes Flower's credentials for test_scale's doctor
    healthy_without("")  # all three workers expected; a few tries (busy workers)
    doctor = _doctor(FLOWER_NODE)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"active on {standby}, standby on {victim}" in doctor.stdout, doctor.stdout
    print(
        f"{victim} back: units active {units_after:.0f} s after docker start, Redis replica"
        f" and Sentinel quorum after {rejoined_after:.0f} s, doctor healthy after"
        f" {time.monotonic() - restarted:.0f} s"
    )
