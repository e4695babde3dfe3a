"""celery_fleet.transport: the Kombu internals it relies on still have the shape it was
written against (a Kombu upgrade that changes them fails here, not in production), the
transport survives Kombu's failover switch, and the settings select it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES, _transport_cache, get_transport_cls, virtual
from kombu.transport import redis as kombu_redis

from celery_fleet import patches, transport
from celery_fleet.settings import SettingsError, load


def params(function: Callable[..., Any]) -> list[str]:
    return [
        f"{p.kind.name}:{p.name}={p.default!r}" if p.default is not p.empty else p.name
        for p in inspect.signature(function).parameters.values()
    ]


# (owner, method): the parameters as Kombu 5.7 has them.
OVERRIDDEN_OR_CALLED = {
    (kombu_redis.Channel, "_brpop_start"): ["self", "POSITIONAL_OR_KEYWORD:timeout=None"],
    (kombu_redis.Channel, "_brpop_read"): ["self", "options"],
    (kombu_redis.Channel, "_get"): ["self", "queue"],
    (kombu_redis.Channel, "basic_consume"): ["self", "queue", "args", "kwargs"],
    (kombu_redis.Channel, "_basic_cancel"): ["self", "consumer_tag"],
    (kombu_redis.Channel, "close"): ["self"],
    (kombu_redis.Channel, "_q_for_pri"): ["self", "queue", "pri"],
    (kombu_redis.Channel, "_flush_brpop_reauth"): ["self"],
    (kombu_redis.Channel, "_maybe_update_queues_expire"): ["self", "client", "queue"],
    (kombu_redis.QoS, "append"): ["self", "message", "delivery_tag"],
    (kombu_redis.QoS, "restore_visible"): [
        "self",
        "POSITIONAL_OR_KEYWORD:start=0",
        "POSITIONAL_OR_KEYWORD:num=10",
        "POSITIONAL_OR_KEYWORD:interval=10",
    ],
    (virtual.Channel, "basic_get"): [
        "self",
        "queue",
        "POSITIONAL_OR_KEYWORD:no_ack=False",
        "kwargs",
    ],
    (virtual.Transport, "_deliver"): ["self", "message", "queue"],
    (kombu_redis.QoS, "ack"): ["self", "delivery_tag"],
    (kombu_redis.MultiChannelPoller, "_register_BRPOP"): ["self", "channel"],
}


@pytest.mark.parametrize(
    ("owner", "name"), list(OVERRIDDEN_OR_CALLED), ids=lambda v: getattr(v, "__name__", v)
)
def test_kombu_methods_keep_their_shape(owner: type, name: str) -> None:
    method = getattr(owner, name)
    method = getattr(method, "__wrapped__", method)  # celery_fleet.patches wraps some
    assert params(method) == OVERRIDDEN_OR_CALLED[(owner, name)], (
        f"{owner.__qualname__}.{name} changed in this Kombu: review celery_fleet.transport"
    )


def source(owner: type, name: str) -> str:
    method = getattr(owner, name)
    return inspect.getsource(getattr(method, "__wrapped__", method))


def test_kombu_still_does_what_the_transport_replaces() -> None:
    # The pop: BRPOP sent on the channel's own connection, read by _brpop_read.
    assert "'BRPOP'" in source(kombu_redis.Channel, "_brpop_start")
    assert "send_command" in source(kombu_redis.Channel, "_brpop_start")
    assert "_in_poll" in source(kombu_redis.Channel, "_brpop_start")
    assert "_brpop_sent_at" in source(kombu_redis.Channel, "_brpop_start")
    # The unacked record: written by QoS.append, called from basic_consume's callback and
    # from basic_get; CLAIM writes the same hash value and index score.
    append = source(kombu_redis.QoS, "append")
    assert "unacked_index_key" in append
    assert "dumps([message._raw, EX, RK])" in append
    assert "self.qos.append(message, message.delivery_tag)" in source(
        virtual.Channel, "basic_consume"
    )
    # Kombu's close reads an outstanding reply through _brpop_read.
    assert "self._brpop_read()" in source(kombu_redis.Channel, "close")
    # The poller dispatches readable BRPOP sockets through the handler table.
    assert "'BRPOP': self._brpop_read" in source(kombu_redis.Channel, "__init__")
    # The unacked restore mutex the in-flight sweep shares.
    assert params(kombu_redis.Mutex) == ["client", "name", "expire"]


def test_classes_are_kombus_with_reliable_fetch() -> None:
    assert issubclass(transport.Channel, kombu_redis.Channel)
    assert issubclass(transport.SentinelChannel, kombu_redis.SentinelChannel)
    assert issubclass(transport.Transport, kombu_redis.Transport)
    assert issubclass(transport.SentinelTransport, kombu_redis.SentinelTransport)
    assert transport.Transport.Channel is transport.Channel
    assert transport.SentinelTransport.Channel is transport.SentinelChannel
    assert transport.Channel.QoS is transport.QoS
    for channel in (transport.Channel, transport.SentinelChannel):
        assert "inflight_timeout" in channel.from_transport_options
        assert set(kombu_redis.Channel.from_transport_options) < set(channel.from_transport_options)


@pytest.fixture
def aliases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """install() changes process-wide aliases: put Kombu's back afterwards."""
    for scheme in transport.ALIASES:
        monkeypatch.setitem(TRANSPORT_ALIASES, scheme, TRANSPORT_ALIASES[scheme])
    yield
    for scheme in transport.ALIASES:
        _transport_cache.pop(scheme, None)


@pytest.mark.usefixtures("aliases")
def test_failover_switch_keeps_the_transport_once_installed() -> None:
    url = "sentinel://127.0.0.1:1;sentinel://127.0.0.1:2"
    path = "celery_fleet.transport:SentinelTransport"
    conn = Connection(url, transport=path)
    assert conn.transport_cls == path
    conn.switch("sentinel://127.0.0.1:2")
    # Kombu takes the transport from the URL scheme again on a switch...
    assert conn.transport_cls == "sentinel"
    assert get_transport_cls("sentinel") is kombu_redis.SentinelTransport
    # ...so the aliases must name ours.
    transport.install()
    transport.install()
    assert get_transport_cls("sentinel") is transport.SentinelTransport
    assert get_transport_cls("rediss") is transport.Transport
    assert get_transport_cls("redis") is transport.Transport


def env(**kw: str) -> dict[str, str]:
    return {f"CELERY_{k}": v for k, v in kw.items()}


def test_reliable_fetch_is_off_by_default() -> None:
    assert "broker_transport" not in load(env(BROKER_URL="redis://h:6379/0"))


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("redis://h:6379/0", "celery_fleet.transport:Transport"),
        ("socket:///run/redis.sock?db=0", "celery_fleet.transport:Transport"),
        ("sentinel://h1:26379;sentinel://h2:26379", "celery_fleet.transport:SentinelTransport"),
    ],
)
def test_reliable_fetch_selects_the_transport_for_the_scheme(url: str, path: str) -> None:
    settings = load(
        {
            **env(BROKER_URL=url, SENTINEL_MASTER_NAME="m", SENTINEL_SSL="false"),
            "CELERY_FLEET_RELIABLE_FETCH": "true",
        }
    )
    assert settings["broker_transport"] == path
    assert get_transport_cls(path) in (transport.Transport, transport.SentinelTransport)


def test_reliable_fetch_rejects_bad_input() -> None:
    base = env(BROKER_URL="redis://h:6379/0")
    with pytest.raises(SettingsError, match="CELERY_FLEET_RELIABLE_FETCH"):
        load({**base, "CELERY_FLEET_RELIABLE_FETCH": "sure"})
    with pytest.raises(SettingsError, match=r"CELERY_BROKER_TRANSPORT.*conflicts"):
        load(
            {
                **base,
                "CELERY_FLEET_RELIABLE_FETCH": "true",
                "CELERY_BROKER_TRANSPORT": "kombu.transport.redis:Transport",
            }
        )
    with pytest.raises(SettingsError, match="inflight_timeout"):
        load(
            {
                **base,
                "CELERY_FLEET_RELIABLE_FETCH": "yes",
                "CELERY_BROKER_TRANSPORT_OPTIONS": '{"inflight_timeout": 0}',
            }
        )


def test_confirmed_publish_settings() -> None:
    base = {**env(BROKER_URL="redis://h:6379/0"), "CELERY_FLEET_RELIABLE_FETCH": "true"}
    options = load({**base, "CELERY_BROKER_WAIT_REPLICAS": "1"})["broker_transport_options"]
    assert (options["wait_replicas"], options["wait_timeout_ms"]) == (1, 1000)
    options = load(
        {**base, "CELERY_BROKER_WAIT_REPLICAS": "2", "CELERY_BROKER_WAIT_TIMEOUT_MS": "250"}
    )["broker_transport_options"]
    assert (options["wait_replicas"], options["wait_timeout_ms"]) == (2, 250)
    assert "wait_replicas" not in load(base)["broker_transport_options"]
    assert set(transport.OPTIONS) <= set(transport.Channel.from_transport_options)


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"CELERY_BROKER_WAIT_REPLICAS": "one"}, "CELERY_BROKER_WAIT_REPLICAS"),
        ({"CELERY_BROKER_WAIT_REPLICAS": "-1"}, "CELERY_BROKER_WAIT_REPLICAS"),
        ({"CELERY_BROKER_WAIT_TIMEOUT_MS": "0"}, "CELERY_BROKER_WAIT_TIMEOUT_MS"),
    ],
)
def test_confirmed_publish_rejects_bad_input(extra: dict[str, str], variable: str) -> None:
    base = {**env(BROKER_URL="redis://h:6379/0"), "CELERY_FLEET_RELIABLE_FETCH": "true"}
    with pytest.raises(SettingsError) as err:
        load({**base, **extra})
    assert err.value.variable == variable


def test_confirmed_publish_needs_the_transport() -> None:
    with pytest.raises(SettingsError, match="CELERY_FLEET_RELIABLE_FETCH=true"):
        load({**env(BROKER_URL="redis://h:6379/0"), "CELERY_BROKER_WAIT_REPLICAS": "1"})


def test_a_failed_ack_frees_the_prefetch_slot() -> None:
    """Redis unreachable at ack time: Kombu's own QoS keeps the slot; with
    celery_fleet.patches (every app configured by celery_fleet) and in our transport the
    slot is freed (the task is done) and the error still raised, so Celery logs "Couldn't
    ack"."""
    import redis

    class Detached:
        unacked_key = "unacked"
        unacked_index_key = "unacked_index"
        do_restore = False  # nothing to restore when the test's QoS is collected

        def conn_or_acquire(self, client: Any = None) -> Any:
            raise redis.exceptions.ConnectionError("primary gone")

    patches.guard_restore_unacked()
    kombu_unguarded = kombu_redis.QoS.ack.__wrapped__  # type: ignore[attr-defined]
    cases: list[tuple[type[Any], Callable[[Any, str], None], bool]] = [
        (kombu_redis.QoS, kombu_unguarded, False),
        (kombu_redis.QoS, kombu_redis.QoS.ack, True),
        (transport.QoS, transport.QoS.ack, True),
    ]
    for qos_class, ack, frees in cases:
        qos = qos_class(Detached(), prefetch_count=1)
        virtual.QoS.append(qos, object(), "tag")  # delivered, held in memory
        assert not qos.can_consume()
        with pytest.raises(redis.exceptions.ConnectionError):
            ack(qos, "tag")
        assert qos.can_consume() is frees, (qos_class, ack)


def _role_env(tmp_path: Any, **variables: object) -> dict[str, str]:
    from celery_fleet import envfile
    from harness.render import render

    inputs = {"celery_redis_password": "pw", "celery_broker_url": "redis://h/0", **variables}
    path = tmp_path / "celery.env"
    path.write_text(render("celery.env.j2", role="celery", variables=inputs))
    return envfile.read(path)


def test_the_celery_role_writes_reliable_fetch_by_default(tmp_path: Any) -> None:
    env = _role_env(tmp_path)
    assert env["CELERY_FLEET_RELIABLE_FETCH"] == "true"
    assert load(env)["broker_transport"] == "celery_fleet.transport:Transport"
    assert "CELERY_BROKER_WAIT_REPLICAS" not in env
    off = _role_env(tmp_path, celery_reliable_fetch=False)
    assert off["CELERY_FLEET_RELIABLE_FETCH"] == "false"
    assert "broker_transport" not in load(off)


def test_the_celery_role_writes_confirmed_publish_when_asked(tmp_path: Any) -> None:
    env = _role_env(tmp_path, celery_reliable_fetch=True, celery_broker_wait_replicas=1)
    assert env["CELERY_BROKER_WAIT_REPLICAS"] == "1"
    assert load(env)["broker_transport_options"]["wait_replicas"] == 1
