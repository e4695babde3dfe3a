"""Three RabbitMQ nodes in one cluster, TLS only, guest deleted, least-privilege users. The
checks connect for real from the controller (py-amqp, HTTPS) and read rabbitmqctl inside
the containers."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error

import amqp
import fleet
import pytest
import rabbit

NODES = rabbit.NODES
QUEUE = "celery_fleet.molecule.quorum"


def node_names() -> set[str]:
    return {f"rabbit@{node}" for node in NODES}


@pytest.mark.parametrize("node", NODES)
def test_every_node_sees_three_running_members(node: str) -> None:
    status = rabbit.ctl_json(node, "cluster_status")
    assert set(status["running_nodes"]) == node_names(), status["running_nodes"]
    assert set(status["disk_nodes"]) == node_names()
    assert status["alarms"] == []


def test_each_node_listens_on_the_tls_and_cluster_ports_only(host) -> None:
    ports = {
        int(s.split(":")[-1])
        for s in host.socket.get_listening_sockets()
        if s.startswith("tcp") and "127.0.0.11" not in s
    }
    # 5671 AMQPS, 15671 management over HTTPS, 25672 Erlang distribution, 4369 epmd; the
    # Redis node that keeps the worker's results (test_worker.py) also listens on 6379 (TLS).
    redis = {6379} if host.backend.get_hostname() in fleet.hosts_in("redis") else set()
    assert ports == {5671, 15671, 25672, 4369} | redis, ports


def test_cookie_and_key_are_private(host) -> None:
    cookie = host.file("/var/lib/rabbitmq/.erlang.cookie")
    assert cookie.user == "rabbitmq"
    assert cookie.mode == 0o400, oct(cookie.mode)
    assert cookie.content_string.strip() == rabbit.var("rabbitmq_erlang_cookie")
    key = host.file("/etc/rabbitmq/tls/server.key")
    assert key.user == "rabbitmq"
    assert key.mode == 0o600, oct(key.mode)


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("port", [5672, 15672])
def test_plaintext_ports_refuse_connections(node: str, port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((fleet.address(node), port), timeout=5).close()


def test_plaintext_amqp_to_the_tls_port_fails() -> None:
    plain = rabbit.connection(NODES[0], use_tls=False)
    with pytest.raises((OSError, amqp.exceptions.AMQPError)):
        plain.connect()


def test_the_certificate_is_verified_against_the_fleet_ca(tmp_path) -> None:
    options = rabbit.tls(NODES[0]) | {"ca_certs": fleet.other_ca(tmp_path)}
    conn = amqp.Connection(
        f"{fleet.address(NODES[0])}:5671", userid=rabbit.APP_USER,
        password=rabbit.var("rabbitmq_app_password"), virtual_host=rabbit.VHOST,
        ssl=options, connect_timeout=10,
    )  # fmt: skip
    with pytest.raises(ssl.SSLError):
        conn.connect()


@pytest.mark.parametrize("node", NODES)
def test_guest_is_refused(node: str) -> None:
    assert "guest" not in {u["user"] for u in rabbit.ctl_json(node, "list_users")}
    with pytest.raises(amqp.exceptions.AccessRefused):
        rabbit.connection(node, "guest", "guest", "/").connect()


def test_the_app_user_cannot_open_another_vhost() -> None:
    conn = rabbit.connection(NODES[1], vhost="/")
    with pytest.raises((amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed)):
        conn.connect()


def test_the_app_user_configures_only_its_names() -> None:
    conn = rabbit.connection(NODES[0])
    conn.connect()
    try:
        channel = conn.channel()
        # Celery's own names are inside the configure pattern.
        channel.exchange_declare("celeryev", "topic", durable=True, auto_delete=False)
        channel.exchange_declare("celery.pidbox", "fanout", durable=False, auto_delete=False)
        with pytest.raises(amqp.exceptions.AccessRefused):
            channel.exchange_declare("outside.pattern", "direct", durable=True, auto_delete=False)
    finally:
        conn.collect()


def test_a_wrong_password_is_refused() -> None:
    with pytest.raises(amqp.exceptions.AccessRefused):
        rabbit.connection(NODES[2], password="not-the-password-at-all").connect()


def test_the_quorum_queue_has_a_member_on_every_node() -> None:
    conn = rabbit.connection(NODES[0])
    conn.connect()
    try:
        conn.channel().queue_declare(
            QUEUE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
        )
    finally:
        conn.close()
    members = {m["Node Name"] for m in rabbit.quorum_status(NODES[0], QUEUE)}
    assert members == node_names()
    leaders = [m for m in rabbit.quorum_status(NODES[0], QUEUE) if m.get("Raft State") == "leader"]
    assert len(leaders) == 1


def test_management_is_https_only_and_monitoring_is_read_only() -> None:
    node = NODES[0]
    admin = (rabbit.var("rabbitmq_admin_user", "admin"), rabbit.var("rabbitmq_admin_password"))
    monitoring = (
        rabbit.var("rabbitmq_monitoring_user", "monitoring"),
        rabbit.var("rabbitmq_monitoring_password"),
    )
    overview = rabbit.management(node, "/api/overview", *admin)
    assert overview["rabbitmq_version"]
    nodes = rabbit.management(node, "/api/nodes", *monitoring)
    assert {n["name"] for n in nodes} == node_names()
    assert all(n["running"] for n in nodes)
    with pytest.raises(urllib.error.HTTPError) as refused:
        rabbit.management(node, "/api/vhosts/mol-forbidden", *monitoring, method="PUT")
    assert refused.value.code in (401, 403)
    # The app user has no management tag: the API refuses it.
    with pytest.raises(urllib.error.HTTPError) as app_refused:
        rabbit.management(
            node, "/api/overview", rabbit.APP_USER, rabbit.var("rabbitmq_app_password")
        )
    assert app_refused.value.code == 401
    assert json.dumps(overview)  # a real JSON document came back
