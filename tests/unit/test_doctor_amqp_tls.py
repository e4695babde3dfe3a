"""The doctor's per-node TLS options for an AMQP failover list: each node is checked
against its own host name, and the app's ``broker_use_ssl`` is never changed."""

from __future__ import annotations

import ssl
from pathlib import Path

from celery_fleet.amqp import Node
from celery_fleet.doctor_amqp import node_ssl, redis_style_tls
from celery_fleet.settings import load

BROKER = "amqps://app:pw@h1:5671/fleet;amqps://h2:5671/fleet"


def settings(tmp_path: Path, **extra: str) -> dict[str, object]:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here\n")
    env = {
        "CELERY_BROKER_URL": BROKER,
        "CELERY_RESULT_BACKEND": "disabled",
        "CELERY_BROKER_SSL_CA_CERTS": str(ca),
        **extra,
    }
    return dict(load(env))


def test_each_node_gets_its_own_host_name_on_a_copy(tmp_path: Path) -> None:
    options = settings(tmp_path)["broker_use_ssl"]
    assert isinstance(options, dict)
    assert options["server_hostname"] is None
    first, second = node_ssl(options, Node("h1", 5671)), node_ssl(options, Node("h2", 5671))
    assert isinstance(first, dict)
    assert isinstance(second, dict)
    assert (first["server_hostname"], second["server_hostname"]) == ("h1", "h2")
    assert options["server_hostname"] is None
    tls = redis_style_tls(options)
    assert tls["ssl_check_hostname"] is True
    assert tls["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert tls["ssl_ca_certs"] == options["ca_certs"]


def test_without_host_name_checks_no_name_is_added(tmp_path: Path) -> None:
    options = settings(tmp_path, CELERY_BROKER_SSL_CHECK_HOSTNAME="false")["broker_use_ssl"]
    assert isinstance(options, dict)
    assert "server_hostname" not in node_ssl(options, Node("h1", 5671))  # type: ignore[operator]
    assert redis_style_tls(options)["ssl_check_hostname"] is False


def test_plaintext_amqp_is_not_tls() -> None:
    assert node_ssl(False, Node("h1", 5672)) is False
