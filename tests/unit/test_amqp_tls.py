"""celery_fleet.amqp_tls: after a switch to the next node of a failover list, Kombu checks
that node's certificate against its own name, not the first node's. Real Kombu connections
to loopback addresses where nothing listens (port 1: refused at once)."""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection

from celery_fleet.amqp_tls import guard_server_hostname

NODES = ("127.0.0.2", "127.0.0.3")


def attempts(ssl: dict[str, Any]) -> list[str | None]:
    """server_hostname of each connection attempt, one per node of the list."""
    url = ";".join(f"amqps://app:pw@{host}:1/fleet" for host in NODES)
    seen: list[str | None] = []
    conn = Connection(url, ssl=ssl, connect_timeout=1)
    for _ in NODES:
        with pytest.raises(ConnectionRefusedError):  # nothing listens there
            conn.transport.establish_connection()
        seen.append(conn.ssl["server_hostname"])
        conn.maybe_switch_next()
    return seen


def test_kombu_alone_keeps_the_first_nodes_name() -> None:
    # What the guard is for; if Kombu stops writing into the shared dict, this fails and
    # the guard can go.
    from kombu.transport import pyamqp

    from celery_fleet import amqp_tls

    patched = pyamqp.Transport.establish_connection
    original = amqp_tls._state.get("original")
    if original is not None:
        pyamqp.Transport.establish_connection = original
    try:
        shared: dict[str, Any] = {"server_hostname": None}
        assert attempts(shared) == [NODES[0], NODES[0]]
    finally:
        pyamqp.Transport.establish_connection = patched


def test_with_the_guard_each_node_gets_its_own_name() -> None:
    guard_server_hostname()
    guard_server_hostname()  # idempotent
    shared: dict[str, Any] = {"server_hostname": None}
    assert attempts(shared) == list(NODES)
    assert shared == {"server_hostname": None}  # the app's broker_use_ssl is untouched


def test_an_explicit_name_is_left_alone() -> None:
    guard_server_hostname()
    assert attempts({"server_hostname": "rabbit.example"}) == ["rabbit.example"] * 2
