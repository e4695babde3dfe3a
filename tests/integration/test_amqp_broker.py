"""RabbitMQ as the broker over amqps://, Redis (TLS) as the result backend, real processes.

One RabbitMQ node per module (tests/harness/rabbitmq.py: TLS listener only, the test CA's
certificate, a user with rights on its own vhost, no guest), a TLS Redis per test for the
results, and a ``celery worker`` whose app only calls
``config_from_object("celery_fleet.celeryconfig")`` with the CELERY_* environment below.
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import amqp
import pytest
from kombu import Connection

from celery_fleet.amqp import DEAD_LETTER_QUEUE
from celery_fleet.settings import load
from harness import envs
from harness.pki import Pki
from harness.ports import free_port
from harness.rabbitmq import APP_USER, HOST, VHOST, RabbitNode
from harness.redis_procs import RedisFleet
from harness.worker import MakeClient, StartWorker

INTEGRATION = Path(__file__).resolve().parent
TIMEOUT = 30.0
DELIVERY_LIMIT = 2


def broker_url(node: RabbitNode, *, password: str | None = None) -> str:
    secret = quote(node.password if password is None else password, safe="")
    return f"amqps://{APP_USER}:{secret}@{HOST}:{node.port}/{VHOST}"


def environment(node: RabbitNode, fleet: RedisFleet) -> dict[str, str]:
    results = fleet.server("results")
    return {
        "CELERY_BROKER_URL": broker_url(node),
        "CELERY_RESULT_BACKEND": envs.url(fleet, results, 1),
        # One CA for both: the result backend inherits the broker's TLS settings.
        "CELERY_BROKER_SSL_CA_CERTS": str(fleet.pki.ca),
        "CELERY_FLEET_AMQP_DELIVERY_LIMIT": str(DELIVERY_LIMIT),
    }


def queues(node: RabbitNode) -> dict[str, dict[str, Any]]:
    out = node.ctl(
        "list_queues", "-p", VHOST, "name", "type", "messages", "arguments", "--formatter", "json"
    )
    return {q["name"]: q for q in json.loads(out or "[]")}


def arguments(queue: dict[str, Any]) -> dict[str, Any]:
    """``rabbitmqctl``'s JSON gives arguments as [[name, type, value]] or a mapping."""
    raw = queue.get("arguments") or []
    if isinstance(raw, dict):
        return raw
    return {item[0]: item[-1] for item in raw}


def test_tasks_run_over_amqps_with_quorum_queues(
    rabbit: RabbitNode,
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    record_property: Any,
) -> None:
    env = environment(rabbit, redis_fleet)
    record_property("rabbitmq node started (s)", round(rabbit.started_in, 1))
    began = time.monotonic()
    worker = start_worker(env, app="amqp_app", pythonpath=[INTEGRATION])
    record_property("amqp worker ready (s)", round(time.monotonic() - began, 1))
    client = celery_client(env)

    results = [client.send_task("amqp.add", (i, i)) for i in range(20)]
    assert [r.get(timeout=TIMEOUT) for r in results] == [2 * i for i in range(20)]

    # Celery's native delayed delivery (quorum queues): not run before its countdown.
    sent = time.monotonic()
    delayed = client.send_task("amqp.add", (40, 2), countdown=2)
    assert delayed.get(timeout=TIMEOUT) == 42
    assert time.monotonic() - sent >= 1.5

    declared = queues(rabbit)
    default = declared["default"]
    assert default["type"] == "quorum", declared
    args = arguments(default)
    assert args.get("x-delivery-limit") == DELIVERY_LIMIT, args
    assert args.get("x-dead-letter-exchange") == "celery_fleet.dead", args
    assert declared[DEAD_LETTER_QUEUE]["type"] == "quorum", declared
    # Quorum queues refuse global QoS: Celery saw them (worker_detect_quorum_queues).
    assert "Global QoS is disabled" in worker.log()


def test_poison_message_is_dead_lettered(
    rabbit: RabbitNode,
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
) -> None:
    env = environment(rabbit, redis_fleet)
    start_worker(env, app="amqp_app", pythonpath=[INTEGRATION])
    client = celery_client(env)
    before = queues(rabbit).get(DEAD_LETTER_QUEUE, {}).get("messages", 0)
    client.send_task("amqp.poison")
    deadline = time.monotonic() + 60
    state: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        state = queues(rabbit)
        if state.get(DEAD_LETTER_QUEUE, {}).get("messages", 0) == before + 1:
            break
        time.sleep(0.5)
    assert state[DEAD_LETTER_QUEUE]["messages"] == before + 1, state
    assert state["default"]["messages"] == 0, state


def test_only_tls_and_only_the_app_user_on_its_vhost(rabbit: RabbitNode, pki: Pki) -> None:
    listeners = rabbit.diagnostics("listeners")
    assert "amqp/ssl" in listeners
    protocols = [line.split("protocol: ")[1].split(",")[0] for line in listeners.splitlines()]
    assert sorted(protocols) == ["amqp/ssl", "clustering"], listeners

    address = f"{HOST}:{rabbit.port}"
    # Plaintext AMQP to the TLS port: the server wants a TLS handshake and hangs up.
    plain = amqp.Connection(
        address, userid=APP_USER, password=rabbit.password, virtual_host=VHOST, ssl=False,
        connect_timeout=5,
    )  # fmt: skip
    with pytest.raises((OSError, amqp.exceptions.AMQPError)):
        plain.connect()

    tls = {"ca_certs": str(pki.ca), "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": HOST}
    guest = amqp.Connection(address, userid="guest", password="guest", ssl=dict(tls))
    with pytest.raises(amqp.exceptions.AccessRefused):
        guest.connect()
    other_vhost = amqp.Connection(
        address, userid=APP_USER, password=rabbit.password, virtual_host="/", ssl=dict(tls)
    )
    with pytest.raises((amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed)):
        other_vhost.connect()
    ok = amqp.Connection(
        address, userid=APP_USER, password=rabbit.password, virtual_host=VHOST, ssl=dict(tls)
    )
    ok.connect()
    ok.close()


def test_settings_verify_the_broker_certificate(rabbit: RabbitNode, pki: Pki) -> None:
    """The broker_use_ssl that load() builds is what a connection uses: the test CA
    connects, an unrelated CA fails the handshake."""
    base = {"CELERY_BROKER_URL": broker_url(rabbit), "CELERY_RESULT_BACKEND": "disabled"}
    good = load({**base, "CELERY_BROKER_SSL_CA_CERTS": str(pki.ca)})
    with Connection(good["broker_url"], ssl=good["broker_use_ssl"], connect_timeout=5) as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.connected
    bad = load({**base, "CELERY_BROKER_SSL_CA_CERTS": str(pki.other_ca)})
    with (
        Connection(bad["broker_url"], ssl=bad["broker_use_ssl"], connect_timeout=5) as conn,
        pytest.raises(ssl.SSLError),
    ):
        conn.connect()


def test_worker_fails_over_to_the_next_node_of_the_list(
    rabbit: RabbitNode,
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
) -> None:
    """Kombu's failover list: the first node does not answer, the worker and the client
    go on to the second (its certificate checked against its own address). The worker is
    ready ~17 s late: Celery's delayed-delivery set-up retries the dead node (1+3+5 s)."""
    env = environment(rabbit, redis_fleet)
    dead = f"amqps://{APP_USER}:{quote(rabbit.password, safe='')}@[::1]:{free_port()}/{VHOST}"
    env["CELERY_BROKER_URL"] = f"{dead};amqps://{HOST}:{rabbit.port}"
    settings = load(env)
    assert settings["broker_use_ssl"]["server_hostname"] is None
    start_worker(env, app="amqp_app", pythonpath=[INTEGRATION])
    client = celery_client(env)
    assert client.send_task("amqp.add", (1, 2)).get(timeout=TIMEOUT) == 3
