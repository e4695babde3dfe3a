"""RabbitMQ as the broker: ``amqps://`` URLs, py-amqp's TLS dict, quorum queues.

``settings.load`` hands a broker URL of scheme ``amqp``/``amqps`` to :func:`configure`;
everything AMQP-specific is here so that the Redis path stays as it was. Results stay on
Redis (``rediss://`` or Sentinel): :func:`refuse_backend` names the fix for an AMQP one.

Sources: Kombu's failover URLs (``amqps://h1;amqps://h2``) and ``server_hostname`` in
kombu/transport/pyamqp.py; py-amqp's ``SSLTransport._wrap_socket_sni`` (it checks the
host name only when ``server_hostname`` is set); Celery's quorum-queue support
(``worker_detect_quorum_queues``, celery/utils/quorum_queues.py); RabbitMQ's docs on quorum
queues (poison message handling: ``x-delivery-limit``), dead lettering, publisher confirms
and ``consumer_timeout`` (https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kombu.entity import Exchange, Queue

from . import urls
from .settings.broker import longest_time_limit
from .settings.defaults import PREFIX
from .settings.parse import SettingsError, parse_bool, parse_number
from .settings.process import BEAT_LOCK_VAR
from .settings.reliable import RELIABLE_FETCH_VAR
from .settings.tls import CERT_REQS, Tls, tls_for

log = logging.getLogger("celery_fleet.amqp")

SCHEMES = ("amqp", "amqps")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
ALLOW_PLAINTEXT_VAR = "CELERY_FLEET_ALLOW_PLAINTEXT_AMQP"
DELIVERY_LIMIT_VAR = "CELERY_FLEET_AMQP_DELIVERY_LIMIT"
DELIVERY_LIMIT_DEFAULT = 10
# Messages over the delivery limit go here (a fanout exchange and one quorum queue,
# declared by the workers: celery_fleet.amqp_declare).
DEAD_LETTER_EXCHANGE = "celery_fleet.dead"
DEAD_LETTER_QUEUE = "celery_fleet.dead"
HEARTBEAT = 60
# RabbitMQ's default consumer_timeout (30 minutes since 3.8.15): a delivery unacked for
# longer closes the channel, and with acks_late a task is acked only when it finished.
RABBITMQ_CONSUMER_TIMEOUT = 1800
# Broker settings that only Kombu's Redis transport reads; py-amqp takes unknown keyword
# arguments silently, so each would be a setting that does nothing.
REDIS_ONLY_VARS = (
    "VISIBILITY_TIMEOUT",
    "BROKER_SSL",
    "BROKER_WAIT_REPLICAS",
    "BROKER_WAIT_TIMEOUT_MS",
)
REDIS_ONLY_OPTIONS = {
    "visibility_timeout",
    "unacked_restore_interval",
    "unacked_restore_throttle",
    "unacked_mutex_expire",
    "fanout_prefix",
    "fanout_patterns",
    "global_keyprefix",
    "master_name",
    "min_other_sentinels",
    "sentinel_kwargs",
    "health_check_interval",
    "max_connections",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "retry_on_timeout",
    "priority_steps",
    "sep",
    "queue_order_strategy",
    "inflight_timeout",
    "wait_replicas",
    "wait_timeout_ms",
}


@dataclass(frozen=True)
class Node:
    host: str
    port: int


@dataclass
class AmqpUrl:
    """A broker URL: one node or Kombu's ``;``-separated failover list of a cluster."""

    scheme: str  # amqp | amqps
    username: str
    password: str | None
    vhost: str
    nodes: list[Node] = field(default_factory=list)

    @property
    def tls(self) -> bool:
        return self.scheme == "amqps"

    def render(self, *, masked: bool = False) -> str:
        """Every node with the same credentials and vhost (``/`` is written ``%2F``)."""
        user = quote(self.username, safe="")
        secret = urls.MASK if masked else quote(self.password or "", safe="")
        auth = f"{user}:{secret}@" if self.password is not None else f"{user}@"
        vhost = quote(self.vhost, safe="")
        return ";".join(f"{self.scheme}://{auth}{_hostport(n)}/{vhost}" for n in self.nodes)


def _hostport(node: Node) -> str:
    host = f"[{node.host}]" if ":" in node.host else node.host
    return f"{host}:{node.port}"


def scheme_of(url: str) -> str:
    url = url.strip()
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_amqp(url: str) -> bool:
    """Whether any ``;``-separated part of ``url`` names an AMQP broker."""
    return any(scheme_of(part) in (*SCHEMES, "pyamqp") for part in url.split(";"))


def parse(raw: str, *, variable: str) -> AmqpUrl:
    """Parse ``amqps://user:pass@h1:5671/vhost[;amqps://...]``; errors name ``variable`` and
    never carry the password."""
    parts = [p.strip() for p in raw.strip().split(";") if p.strip()]
    schemes = {scheme_of(p) for p in parts}
    if "pyamqp" in schemes:
        raise SettingsError(variable, "write amqps:// (Kombu's py-amqp transport), not pyamqp://")
    if len(schemes) > 1:
        raise SettingsError(
            variable,
            f"mixes {', '.join(sorted(s + '://' for s in schemes if s))} in one failover "
            "list; every node of the list must be amqps://",
        )
    scheme = schemes.pop()
    if scheme not in SCHEMES:
        raise SettingsError(variable, "every ';'-separated part must start with amqps://")
    result: AmqpUrl | None = None
    for index, part in enumerate(parts, 1):
        where = f"node {index} ({urls.mask(part)})" if len(parts) > 1 else urls.mask(part)
        if "," in part:
            raise SettingsError(
                variable, f"{where}: nodes are separated by ';' (amqps://h1;amqps://h2), not ','"
            )
        try:
            split = urlsplit(part)
            port = split.port
        except ValueError:
            raise SettingsError(
                variable, f"{where}: the port is not a number from 1 to 65535"
            ) from None
        if port == 0:
            raise SettingsError(variable, f"{where}: the port is not a number from 1 to 65535")
        if split.query or split.fragment:
            raise SettingsError(
                variable,
                f"{where}: query parameters are not read here; set TLS with "
                f"{PREFIX}BROKER_SSL_* and options with {PREFIX}BROKER_TRANSPORT_OPTIONS",
            )
        if not split.hostname:
            raise SettingsError(variable, f"{where}: no host name")
        vhost = unquote(split.path[1:]) if split.path not in ("", "/") else "/"
        user = unquote(split.username) if split.username else None
        password = unquote(split.password) if split.password is not None else None
        node = Node(split.hostname, port or DEFAULT_PORTS[scheme])
        if result is None:
            if not user:
                raise SettingsError(
                    variable,
                    f"{where}: no user; Kombu would log in as guest, which RabbitMQ allows "
                    "only from localhost. Create a user for the app's vhost: "
                    "amqps://user:password@host:5671/vhost",
                )
            result = AmqpUrl(scheme, user, password, vhost)
        else:
            if user and (user, password) != (result.username, result.password):
                raise SettingsError(
                    variable,
                    f"{where}: other credentials than node 1; a cluster has one user "
                    "database: give them once (node 1) or the same on every node",
                )
            if vhost != result.vhost and split.path not in ("", "/"):
                raise SettingsError(
                    variable, f"{where}: vhost {vhost!r} differs from node 1's {result.vhost!r}"
                )
        result.nodes.append(node)
    assert result is not None
    if scheme == "amqps":
        for node in result.nodes:
            if node.port == DEFAULT_PORTS["amqp"]:
                log.warning(
                    "%s: amqps:// to port 5672, RabbitMQ's plaintext port: the TLS "
                    "handshake will fail unless this node listens for TLS there (5671 is "
                    "the TLS port)",
                    variable,
                )
    return result


def ssl_options(tls: Tls, url: AmqpUrl) -> dict[str, Any]:
    """``broker_use_ssl`` for py-amqp (``ssl.SSLContext`` arguments, not redis-py's
    ``ssl_*``). py-amqp checks the host name only when ``server_hostname`` is given: one
    node gets its host; with several Kombu fills in each node's host when it is None."""
    options: dict[str, Any] = {"cert_reqs": CERT_REQS[tls.cert_reqs]}
    for name in ("ca_certs", "certfile", "keyfile"):
        if getattr(tls, name):
            options[name] = getattr(tls, name)
    if tls.check_hostname and tls.cert_reqs != "none":
        options["server_hostname"] = url.nodes[0].host if len(url.nodes) == 1 else None
    return options


def queues(names: tuple[Queue, ...], delivery_limit: int) -> tuple[Queue, ...]:
    """The declared queues as quorum queues with a delivery limit and a dead-letter
    exchange: a message that kills its worker again and again ends up there."""
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    }
    return tuple(
        Queue(q.name, routing_key=q.routing_key, queue_arguments=dict(arguments))  # type: ignore[no-untyped-call]
        for q in names
    )


def dead_letter_entities() -> tuple[Exchange, Queue]:
    exchange = Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True)  # type: ignore[no-untyped-call]
    queue = Queue(  # type: ignore[no-untyped-call]
        DEAD_LETTER_QUEUE, exchange, routing_key="#", queue_arguments={"x-queue-type": "quorum"}
    )
    return exchange, queue


def configure(env: Mapping[str, str], raw: Mapping[str, Any], settings: dict[str, Any]) -> Tls:
    """Fill ``settings`` for an AMQP broker; the broker's TLS (the result backend may
    inherit it)."""
    variable = PREFIX + "BROKER_URL"
    _refuse_redis_only(env, raw)
    url = parse(env[variable], variable=variable)
    tls = _broker_tls(env, url)
    settings["broker_url"] = url.render()
    settings["broker_use_ssl"] = ssl_options(tls, url) if tls.enabled else False
    options: dict[str, Any] = {"confirm_publish": True}
    options.update(raw.get("broker_transport_options") or {})
    settings["broker_transport_options"] = options
    if raw.get("broker_heartbeat") is None:
        settings["broker_heartbeat"] = HEARTBEAT
    limit_raw = env.get(DELIVERY_LIMIT_VAR, str(DELIVERY_LIMIT_DEFAULT))
    limit = parse_number(DELIVERY_LIMIT_VAR, limit_raw, int)
    if limit < 1:
        raise SettingsError(
            DELIVERY_LIMIT_VAR, f"{limit} must be 1 or more (deliveries before dead-lettering)"
        )
    settings["task_queues"] = queues(settings["task_queues"], limit)
    settings["task_default_queue_type"] = "quorum"
    settings["task_create_missing_queue_type"] = "quorum"
    # Celery's native delayed delivery (ETA/countdown on quorum queues) routes through
    # topic exchanges; with a direct one it warns and the worker holds the task instead.
    settings["task_default_exchange_type"] = "topic"
    # Quorum queues refuse global QoS; Celery then uses per-consumer prefetch.
    settings["worker_detect_quorum_queues"] = True
    _warn_consumer_timeout(env, raw)
    return tls


def _broker_tls(env: Mapping[str, str], url: AmqpUrl) -> Tls:
    prefix = PREFIX + "BROKER"
    if url.tls:
        return tls_for(env, prefix, urls.RedisUrl(scheme="rediss"), None)
    if not parse_bool(ALLOW_PLAINTEXT_VAR, env.get(ALLOW_PLAINTEXT_VAR, "false")):
        raise SettingsError(
            PREFIX + "BROKER_URL",
            f"amqp:// sends the password and every task in plaintext; use amqps:// (TLS, "
            f"port 5671), or set {ALLOW_PLAINTEXT_VAR}=true if the network is trusted",
        )
    options = sorted(k for k in env if k.startswith(prefix + "_SSL_") or k == prefix + "_USE_SSL")
    if options:
        raise SettingsError(
            options[0],
            f"TLS options ({', '.join(options)}) with a plaintext amqp:// URL; use amqps://, "
            "or remove them",
        )
    log.warning(
        "%s=true: the broker connection is plaintext amqp://; passwords and tasks cross the "
        "network unencrypted",
        ALLOW_PLAINTEXT_VAR,
    )
    return Tls(enabled=False)


def _refuse_redis_only(env: Mapping[str, str], raw: Mapping[str, Any]) -> None:
    for name in REDIS_ONLY_VARS:
        if env.get(PREFIX + name, "").strip():
            raise SettingsError(
                PREFIX + name,
                "is a Redis broker setting; RabbitMQ (amqps://) does not read it: unset it",
            )
    for name in (RELIABLE_FETCH_VAR, BEAT_LOCK_VAR):
        if parse_bool(name, env.get(name, "false")):
            raise SettingsError(
                name,
                "needs a Redis broker (it works on Redis keys); unset it with amqps://",
            )
    options = set(raw.get("broker_transport_options") or {}) & REDIS_ONLY_OPTIONS
    if options:
        raise SettingsError(
            PREFIX + "BROKER_TRANSPORT_OPTIONS",
            f"{', '.join(sorted(options))}: Redis transport options; py-amqp ignores them "
            "silently on amqps://, remove them",
        )
    transport = str(raw.get("broker_transport") or "")
    if transport and transport not in ("amqp", "pyamqp", "py-amqp"):
        raise SettingsError(
            PREFIX + "BROKER_TRANSPORT", f"{transport!r} does not fit an amqps:// broker URL"
        )


def _warn_consumer_timeout(env: Mapping[str, str], raw: Mapping[str, Any]) -> None:
    longest = longest_time_limit(env, raw.get("task_time_limit"))
    if longest is None or longest >= RABBITMQ_CONSUMER_TIMEOUT:
        log.warning(
            "the longest task may run %s; with acks_late RabbitMQ closes the channel of a "
            "delivery unacknowledged for consumer_timeout (default %s s) and the task runs "
            "again: set consumer_timeout in rabbitmq.conf above the longest task",
            f"{longest} s" if longest else "without limit (no task_time_limit)",
            RABBITMQ_CONSUMER_TIMEOUT,
        )


def is_amqp_backend(backend: str | None, broker: str) -> bool:
    """An AMQP or ``rpc://`` result backend, or none set while the broker is AMQP (the
    default backend is the broker's URL)."""
    if backend is None:
        return is_amqp(broker)
    return is_amqp(backend) or scheme_of(backend) == "rpc"


def refuse_backend(variable: str) -> SettingsError:
    """The error for an AMQP (or rpc://) result backend."""
    return SettingsError(
        variable,
        "RabbitMQ is supported as the broker only; results stay on Redis. Set it to "
        "rediss://user:pass@host:6379/1 or sentinel://h1:26379;sentinel://h2:26379, or to "
        "disabled",
    )
