"""`celery-fleet doctor` for a RabbitMQ broker (``amqps://``, Kombu's ``;`` failover list).

Per node of the list: the TLS handshake with the app's CA (and the node certificate's
expiry), then a login as the app user on its vhost with Kombu's ``Connection`` and the
settings' ``broker_use_ssl`` (``ensure_connection``, one attempt within the doctor's
timeout). Then the workers through the broker (``inspect ping``, heartbeats from the
``celeryev`` exchange) and the Redis result backend (TLS, authentication, the app user's
PING). What only a Redis broker has (beat's liveness keys, Sentinel, replication, memory
policy) is not checked, and one result line says so.

Sources: Kombu's ``Connection.ensure_connection`` (kombu/connection.py) and the
per-node ``server_hostname`` of kombu/transport/pyamqp.py; RabbitMQ's TLS guide
(https://www.rabbitmq.com/docs/ssl) and access control
(https://www.rabbitmq.com/docs/access-control).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from . import amqp_tls
from .amqp import AmqpUrl, Node
from .doctor import (
    Deployment,
    Options,
    Result,
    _why,
    check_flower,
    check_node,
    check_tls,
    check_workers,
    error,
    finding,
    ok,
)

NOT_CHECKED = "not checked on AMQP"
NOT_CHECKED_DETAIL = (
    "beat liveness (its keys live on a Redis broker), queue lengths, the broker's "
    "replication and memory: ask RabbitMQ (rabbitmq-diagnostics check_running, "
    "list_queues; docs/rabbitmq.md)"
)


def redis_style_tls(options: Mapping[str, Any]) -> dict[str, Any]:
    """py-amqp's ``broker_use_ssl`` (``ssl.SSLContext`` names) as the ``ssl_*`` options
    :func:`celery_fleet.doctor.check_tls` reads. py-amqp checks the host name only when
    ``server_hostname`` is in the dict (None: Kombu fills in each node's host)."""
    return {
        "ssl_ca_certs": options.get("ca_certs"),
        "ssl_certfile": options.get("certfile"),
        "ssl_keyfile": options.get("keyfile"),
        "ssl_cert_reqs": options.get("cert_reqs", ssl.CERT_REQUIRED),
        "ssl_check_hostname": "server_hostname" in options,
    }


def node_ssl(options: Mapping[str, Any] | bool, node: Node) -> dict[str, Any] | bool:
    """The ``ssl`` argument for one node: a copy, with that node's host name to check."""
    if not isinstance(options, Mapping):
        return bool(options)
    copy = dict(options)
    if "server_hostname" in copy:
        copy["server_hostname"] = node.host
    return copy


def login(url: AmqpUrl, node: Node, options: Mapping[str, Any] | bool, timeout: float) -> None:
    """Open an AMQP connection to ``node`` as the URL's user on its vhost; raise on failure.
    One attempt: Kombu's ``retry_over_time`` gives up once ``retries >= max_retries``."""
    from kombu.connection import Connection

    single = replace(url, nodes=[node]).render()
    conn = Connection(single, ssl=node_ssl(options, node), connect_timeout=timeout)  # type: ignore[no-untyped-call]
    try:
        conn.ensure_connection(  # type: ignore[no-untyped-call]
            max_retries=0, interval_start=0, interval_step=0, timeout=timeout
        )
    finally:
        conn.release()  # type: ignore[no-untyped-call]


def check_config(dep: Deployment) -> Iterator[Result]:
    assert dep.amqp is not None
    s = dep.settings
    found = False
    if not dep.amqp.tls:
        found = True
        yield finding("config tls", "broker traffic is plaintext amqp://; use amqps:// (5671)")
    scheme = dep.url.scheme
    if dep.redis and (scheme == "redis" or (scheme == "sentinel" and not dep.tls)):
        found = True
        yield finding("config tls", "result backend traffic is plaintext; use rediss://")
    checks = (("broker_use_ssl", "cert_reqs"), ("redis_backend_use_ssl", "ssl_cert_reqs"))
    for key, name in checks:
        reqs = (s.get(key) or {}).get(name)
        if reqs is not None and reqs != ssl.CERT_REQUIRED:
            found = True
            yield finding(f"config {key}", f"{name}={reqs.name}: no MITM protection")
    if not found:
        yield ok("config", "AMQP broker and result backend over TLS, certificates verified")


def check_amqp_node(dep: Deployment, node: Node) -> Iterator[Result]:
    """The node's TLS handshake and certificate expiry, then the app user's login."""
    assert dep.amqp is not None
    where = f"{node.host}:{node.port}"
    options = dep.settings.get("broker_use_ssl") or False
    if isinstance(options, Mapping):
        yield check_tls(dep, node.host, node.port, f"tls {where}", redis_style_tls(options))
    user, vhost = dep.amqp.username, dep.amqp.vhost
    try:
        login(dep.amqp, node, options, dep.timeout)
    except Exception as exc:  # any failure of one node is a finding about that node
        yield finding(f"amqp {where}", f"login as {user} on vhost {vhost!r} failed: {_why(exc)}")
        return
    yield ok(f"amqp {where}", f"login as {user} on vhost {vhost!r}")


def check_backend(dep: Deployment) -> Iterator[Result]:
    """The Redis result backend: its Sentinels when it has some, then the primary's TLS,
    authentication and the app user's PING."""
    if not dep.redis:
        yield ok("result backend", "results disabled: nothing to check")
        return
    nodes, sentinel_results = dep.data_nodes()
    yield from sentinel_results
    if not nodes:
        yield error("result backend", "no Sentinel answered: cannot find the primary")
        return
    yield from check_node(dep, *nodes[0], primary=True, broker=False)


def run(dep: Deployment, options: Options) -> list[Result]:
    """All checks for an AMQP broker, in the order an operator reads them."""
    assert dep.amqp is not None
    results = list(check_config(dep))
    logged_in = 0
    for node in dep.amqp.nodes:
        node_results = list(check_amqp_node(dep, node))
        results += node_results
        logged_in += node_results[-1].status == "ok"
    if not logged_in:
        why = "no node of CELERY_BROKER_URL accepted the app's login: workers not checked"
        results.append(error("amqp", why))
    else:
        # Kombu writes each node's host into broker_use_ssl when it fails over; the guard
        # hands it a copy (celery_fleet.amqp_tls), as the app's own processes do.
        amqp_tls.guard_server_hostname()
        results += check_workers(dep, options.expect_workers, options.timeout)
    results += check_backend(dep)
    results.append(ok(NOT_CHECKED, NOT_CHECKED_DETAIL))
    if options.flower_url:
        results += check_flower(dep, options.flower_url, options.flower_auth)
    return results
