"""The Sentinels' monitoring user (role redis_sentinel, templates/sentinel.conf.j2), on real
Sentinels rendered from the shipped template: role monitoring's Redis exporter logs in with
role redis' monitor user and password and reads what it needs (prometheus-redis-exporter
1.45, Debian bookworm: exporter/exporter.go and exporter/sentinels.go at v1.45.0), and
nothing that changes a Sentinel's state is allowed to it.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from harness.redis_procs import MONITOR_USER, SENTINEL_APP_USER, Node, RedisFleet

# What the exporter sends to a Sentinel, in order (v1.45.0): AUTH on connect, CLIENT
# SETNAME (set-client-name defaults to true), INFO ALL, then extractSentinelMetrics. Its
# CONFIG GET, LATENCY, SLOWLOG and key checks are not Sentinel commands ("unknown
# command", not an ACL refusal): the exporter logs and goes on.
READS = [
    ("PING",),
    ("CLIENT", "SETNAME", "redis_exporter"),
    ("INFO", "ALL"),
    ("SENTINEL", "MASTERS"),
    ("SENTINEL", "CKQUORUM", "{master}"),
    ("SENTINEL", "SENTINELS", "{master}"),
    ("SENTINEL", "SLAVES", "{master}"),
    ("SENTINEL", "REPLICAS", "{master}"),
]
# Everything that would change a Sentinel, its peers' view or the fleet: refused.
WRITES = [
    ("SENTINEL", "FAILOVER", "{master}"),
    ("SENTINEL", "SET", "{master}", "down-after-milliseconds", "{down_after}"),
    ("SENTINEL", "RESET", "{master}"),
    ("SENTINEL", "REMOVE", "{master}"),
    ("SENTINEL", "MONITOR", "other", "127.0.0.1", "6379", "1"),
    ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "no"),
    ("SENTINEL", "FLUSHCONFIG"),
    ("SENTINEL", "IS-MASTER-DOWN-BY-ADDR", "127.0.0.1", "{port}", "0", "*"),
    ("PUBLISH", "__sentinel__:hello", "x"),
    ("SUBSCRIBE", "__sentinel__:hello"),
    ("ACL", "SETUSER", "{user}", "+@all"),
    ("CLIENT", "KILL", "USER", "admin"),
    ("SHUTDOWN", "NOSAVE"),
]


def _args(command: tuple[str, ...], values: dict[str, Any]) -> list[str]:
    return [part.format(**values) for part in command]


def _login(fleet: RedisFleet, node: Node, password: str) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=node.port,
        username=MONITOR_USER,
        password=password,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
        **fleet.tls_kwargs(),
    )


@pytest.fixture
def sentinels(redis_fleet: RedisFleet) -> list[Node]:
    primary = redis_fleet.server("p1")
    redis_fleet.server("r1", replica_of=primary)
    return redis_fleet.sentinels(primary, count=3, quorum=2)


def test_the_monitoring_user_reads_what_the_exporter_reads(
    redis_fleet: RedisFleet, sentinels: list[Node]
) -> None:
    master = redis_fleet.master_name
    values = {"master": master}
    for node in sentinels:
        monitor = _login(redis_fleet, node, redis_fleet.secrets.monitor)
        for command in READS:
            monitor.execute_command(*_args(command, values))  # raises on NOPERM
        # redis-py parses INFO; the exporter looks for its "# Sentinel" section.
        assert int(monitor.execute_command("INFO", "ALL")["sentinel_masters"]) == 1
        masters = monitor.execute_command("SENTINEL", "MASTERS")
        assert [m["name"] for m in masters] == [master], masters
        # What redis_sentinel_master_ok_sentinels is made of: this one and its two peers.
        assert int(masters[0]["num-other-sentinels"]) == 2, masters
        assert monitor.execute_command("SENTINEL", "CKQUORUM", master).startswith("OK 3 usable")
        # The Sentinel logged no ACL refusal of this user.
        log = redis_fleet.client(node).execute_command("ACL", "LOG")
        assert [e for e in log if e.get("username") == MONITOR_USER] == [], log


def test_the_monitoring_user_can_change_nothing(
    redis_fleet: RedisFleet, sentinels: list[Node]
) -> None:
    node = sentinels[0]
    admin = redis_fleet.client(node)
    master = redis_fleet.master_name
    down_after = admin.sentinel_master(master)["down-after-milliseconds"]
    values = {"master": master, "port": node.port, "user": MONITOR_USER, "down_after": down_after}
    monitor = _login(redis_fleet, node, redis_fleet.secrets.monitor)
    for command in WRITES:
        with pytest.raises(redis.exceptions.NoPermissionError):
            monitor.execute_command(*_args(command, values))
    # CONFIG is not a Sentinel command at all (SENTINEL CONFIG above is its form).
    with pytest.raises(redis.ResponseError, match="unknown command"):
        monitor.execute_command("CONFIG", "SET", "bind", "0.0.0.0")
    # Nothing moved: same primary, every Sentinel still agrees and still runs.
    assert admin.sentinel_master(master)["down-after-milliseconds"] == down_after
    assert redis_fleet.primary().name == "p1"
    for other in sentinels:
        assert other.alive
        assert redis_fleet.client(other).execute_command("SENTINEL", "CKQUORUM", master)


def test_control_the_refused_commands_are_refused_by_the_acl_only(
    redis_fleet: RedisFleet, sentinels: list[Node]
) -> None:
    """The same SENTINEL SET works for the administrator (so the refusals above are the
    monitoring user's rules, not a wrong command), a wrong password is not let in at all,
    and Celery's discover user does not get the monitoring user's INFO."""
    node = sentinels[0]
    admin = redis_fleet.client(node)
    master = redis_fleet.master_name
    down_after = admin.sentinel_master(master)["down-after-milliseconds"]
    assert admin.execute_command(
        "SENTINEL", "SET", master, "down-after-milliseconds", down_after
    ) in ("OK", b"OK", True)
    with pytest.raises(redis.AuthenticationError):
        _login(redis_fleet, node, "not-the-monitor-password").ping()
    # The discover user (Celery's) is not the monitoring user: no INFO for it.
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis(
            host="127.0.0.1",
            port=node.port,
            username=SENTINEL_APP_USER,
            password=redis_fleet.secrets.sentinel_app,
            **redis_fleet.tls_kwargs(),
        ).info()
