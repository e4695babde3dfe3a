"""Helpers for the rabbitmq scenario's verifier: AMQP clients over TLS from the controller to
a node's address, the management API, and rabbitmqctl inside the containers. Real servers
only; nothing here is mocked."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from typing import Any

import amqp
import fleet

NODES = fleet.hosts_in("rabbitmq")


def var(name: str, default: Any = None) -> Any:
    return fleet.group_vars().get(name, default)


VHOST = var("rabbitmq_vhost", "celery")
APP_USER = var("rabbitmq_app_user", "celery")


def tls(node: str) -> dict[str, Any]:
    """py-amqp's ssl options: the fleet CA, the certificate checked against the node's IP."""
    return {
        "ca_certs": fleet.ca_file(),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": fleet.address(node),
    }


def connection(
    node: str,
    user: str | None = None,
    password: str | None = None,
    vhost: str | None = None,
    port: int = 5671,
    *,
    use_tls: bool = True,
) -> amqp.Connection:
    return amqp.Connection(
        f"{fleet.address(node)}:{port}",
        userid=user or APP_USER,
        password=password if password is not None else var("rabbitmq_app_password"),
        virtual_host=vhost or VHOST,
        ssl=tls(node) if use_tls else False,
        connect_timeout=10,
    )


def url(node: str) -> str:
    """The app's amqps:// URL to one node (for kombu)."""
    return f"amqps://{APP_USER}:{var('rabbitmq_app_password')}@{fleet.address(node)}:5671/{VHOST}"


def management(node: str, path: str, user: str, password: str, method: str = "GET") -> Any:
    """A management API call over HTTPS, verified against the fleet CA."""
    context = ssl.create_default_context(cafile=fleet.ca_file())
    request = urllib.request.Request(
        f"https://{fleet.address(node)}:15671{path}", method=method, data=b"{}"
    )
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    # https only: the URL is built above from the scenario's addresses.
    with urllib.request.urlopen(request, context=context, timeout=15) as response:  # noqa: S310
        body = response.read()
    return json.loads(body) if body else None


def ctl(node: str, *args: str) -> str:
    return fleet.docker("exec", node, "rabbitmqctl", "--quiet", *args)


def ctl_json(node: str, *args: str) -> Any:
    return json.loads(ctl(node, *args, "--formatter", "json"))


def quorum_status(node: str, queue: str) -> list[dict[str, Any]]:
    out = fleet.docker(
        "exec", node, "rabbitmq-queues", "--quiet", "quorum_status", queue,
        "--vhost", VHOST, "--formatter", "json",
    )  # fmt: skip
    result = json.loads(out)
    assert isinstance(result, list)
    return result


def leader(node: str, queue: str) -> str:
    """The container that leads the quorum queue (its Raft state is `leader`)."""
    for member in quorum_status(node, queue):
        if member.get("Raft State") == "leader":
            return str(member["Node Name"]).split("@", 1)[1]
    raise AssertionError(f"no leader for {queue}: {quorum_status(node, queue)}")
