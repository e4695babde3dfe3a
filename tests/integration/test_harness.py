"""The harness itself: the servers it starts are the secure production shape, so that
every test built on it proves something about that shape (and cannot pass by accident)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
import redis

from harness.pki import Pki
from harness.redis_procs import APP_USER, SENTINEL_APP_USER, Auth, Listen, RedisFleet

REPO = Path(__file__).resolve().parents[2]


def test_tls_only_server_refuses_plaintext(redis_fleet: RedisFleet) -> None:
    node = redis_fleet.server("tls")
    plain = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2, retry=None)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    assert redis_fleet.client(node).config_get("port") == {"port": "0"}


def test_default_user_is_off_and_app_user_has_no_dangerous_commands(
    redis_fleet: RedisFleet,
) -> None:
    node = redis_fleet.server("tls", auth=Auth.ACL)
    tls = redis_fleet.tls_kwargs()
    anonymous = redis.Redis(host="127.0.0.1", port=node.port, **tls)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    app = redis.Redis(
        host="127.0.0.1",
        port=node.port,
        username=APP_USER,
        password=redis_fleet.secrets.app,
        **tls,
    )
    assert app.ping()
    for command in (
        ("FLUSHALL",),
        ("CONFIG", "GET", "port"),
        ("KEYS", "*"),
        ("SHUTDOWN",),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command(*command)


def test_mutual_tls_server_refuses_a_client_without_certificate(redis_fleet: RedisFleet) -> None:
    node = redis_fleet.server("mtls", mtls=True)
    assert redis_fleet.client(node).ping()  # with the client certificate
    without = redis_fleet.client(node, ssl_certfile=None, ssl_keyfile=None, retry=None)
    with pytest.raises(redis.ConnectionError):
        without.ping()


def test_tls_protocols_are_1_2_and_up(redis_fleet: RedisFleet) -> None:
    # A TLS 1.1 client cannot be built portably (OpenSSL 3 refuses it client-side), so
    # the server's own setting is what is checked.
    node = redis_fleet.server("tls")
    assert redis_fleet.client(node).config_get("tls-protocols") == {
        "tls-protocols": "TLSv1.2 TLSv1.3"
    }


def test_failover_helpers(redis_fleet: RedisFleet) -> None:
    primary = redis_fleet.server("p1")
    replica = redis_fleet.server("r1", replica_of=primary)
    redis_fleet.sentinels(primary)
    assert redis_fleet.primary() is primary
    redis_fleet.kill(primary)
    assert redis_fleet.wait_for_failover(primary) is replica
    assert redis_fleet.role(replica) == "master"


def test_plain_and_unix_listeners(redis_fleet: RedisFleet) -> None:
    tcp = redis_fleet.server("tcp", listen=Listen.TCP, auth=Auth.REQUIREPASS)
    unix = redis_fleet.server("unix", listen=Listen.UNIX, auth=Auth.REQUIREPASS)
    assert redis_fleet.client(tcp).ping()
    assert redis_fleet.client(unix).ping()
    assert unix.unixsocket is not None
    assert stat.S_IMODE(unix.unixsocket.stat().st_mode) == 0o700


def test_private_keys_are_0600_and_never_tracked(pki: Pki) -> None:
    for pair in (pki.server, pki.client, pki.expired, pki.other_server, pki.dns_only):
        assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
    tracked = subprocess.run(
        ["git", "ls-files", "*.key", "*.pem", "*.p12"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == []


def test_sentinel_acl_app_user_can_only_discover(redis_fleet: RedisFleet) -> None:
    primary = redis_fleet.server("p1")
    sentinel = redis_fleet.sentinels(primary, count=1, quorum=1, auth=Auth.ACL)[0]
    app = redis.Redis(
        host="127.0.0.1",
        port=sentinel.port,
        username=SENTINEL_APP_USER,
        password=redis_fleet.secrets.sentinel_app,
        **redis_fleet.tls_kwargs(),
    )
    assert app.sentinel_get_master_addr_by_name(redis_fleet.master_name)[1] == primary.port
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.execute_command("SENTINEL", "FAILOVER", redis_fleet.master_name)
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.execute_command("SENTINEL", "SET", redis_fleet.master_name, "quorum", "1")
    anonymous = redis.Redis(host="127.0.0.1", port=sentinel.port, **redis_fleet.tls_kwargs())
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
