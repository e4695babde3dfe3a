"""fleet_broker (role fleet_common): celery.env as role celery renders it for a Redis fleet
(the default) and for RabbitMQ, loaded by celery_fleet.settings; and the preflight checks
that refuse a broker choice, or RabbitMQ inputs, that cannot work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_preflight import GOOD, preflight

from celery_fleet import envfile
from celery_fleet.settings import load
from harness.render import render_file

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "templates" / "celery.env.j2"
RMQ_PASSWORD = "rmq/App&pw-1f3e5d7c9b"  # quoted in the URL (%2F, %26)
REDIS_PASSWORD = "redis-App-2b8e6d4c1a9f"


def _task_vars() -> dict[str, Any]:
    """The vars of the role's own template task (configure.yml), as a play passes them."""
    tasks = yaml.safe_load((ROOT / "roles" / "celery" / "tasks" / "configure.yml").read_text())
    task = next(t for t in tasks if t["name"] == "configure | Render celery.env")
    variables = task["vars"]
    assert isinstance(variables, dict)
    return variables


def role_env(tmp_path: Path, pem: dict[str, str], **inputs: object) -> dict[str, str]:
    """celery.env of a worker host of an inventory with two RabbitMQ nodes and two
    Sentinels, rendered from the role's defaults, vars and template task."""
    hosts = {
        "r1": {"fleet_address": "10.0.0.31"},
        "r2": {"fleet_address": "10.0.0.32"},
        "s1": {"fleet_address": "10.0.0.21"},
        "s2": {"fleet_address": "10.0.0.22"},
    }
    variables: dict[str, Any] = {
        "groups": {"rabbitmq": ["r1", "r2"], "sentinel": ["s1", "s2"]},
        "hostvars": hosts,
        "inventory_hostname": "w1",
        "redis_app_password": REDIS_PASSWORD,
        "rabbitmq_app_password": RMQ_PASSWORD,
        "celery_worker_pools": [{"name": "default", "queues": ["default"]}],
        "celery_run_workers": True,
        **_task_vars(),
        # The remote TLS paths, here files that exist (the settings check them).
        "celery_tls_ca_file": pem["ca_crt"],
        "celery_tls_cert_file": pem["client_crt"],
        "celery_tls_key_file": pem["client_key"],
        **inputs,
    }
    path = tmp_path / "celery.env"
    path.write_text(render_file(TEMPLATE, role="celery", variables=variables, role_vars=True))
    return envfile.read(path)


def test_redis_is_the_default_broker(tmp_path: Path, pem: dict[str, str]) -> None:
    env = role_env(tmp_path, pem)
    assert env == role_env(tmp_path, pem, fleet_broker="redis")
    assert env["CELERY_BROKER_URL"].startswith("sentinel://celery:")
    assert "amqp" not in (tmp_path / "celery.env").read_text()
    assert env["CELERY_FLEET_RELIABLE_FETCH"] == "true"
    assert load(env)["broker_transport"] == "celery_fleet.transport:SentinelTransport"


def test_rabbitmq_broker_with_results_on_the_sentinels(tmp_path: Path, pem: dict[str, str]) -> None:
    env = role_env(tmp_path, pem, fleet_broker="rabbitmq")
    encoded = "rmq%2FApp%26pw-1f3e5d7c9b"
    assert env["CELERY_BROKER_URL"] == (
        f"amqps://celery:{encoded}@10.0.0.31:5671/celery;"
        f"amqps://celery:{encoded}@10.0.0.32:5671/celery"
    )
    assert env["CELERY_RESULT_BACKEND"].startswith("sentinel://celery:")
    assert env["CELERY_RESULT_BACKEND"].count("sentinel://") == 2
    assert env["CELERY_RESULT_BACKEND"].endswith("10.0.0.22:26379/1")
    # Reliable fetch is a Redis transport: off, whatever the role's default says.
    assert env["CELERY_FLEET_RELIABLE_FETCH"] == "false"
    settings = load(env)
    assert settings["broker_url"].startswith("amqps://celery:")
    assert "broker_transport" not in settings
    assert settings["broker_use_ssl"]["ca_certs"] == pem["ca_crt"]
    assert settings["broker_use_ssl"]["certfile"] == pem["client_crt"]
    # Two nodes: Kombu fills in each node's host name for the certificate check.
    assert settings["broker_use_ssl"]["server_hostname"] is None
    assert settings["task_default_queue_type"] == "quorum"
    assert settings["result_backend_transport_options"]["master_name"] == "fleet"
    assert settings["redis_backend_use_ssl"]["ssl_ca_certs"] == pem["ca_crt"]


def test_rabbitmq_broker_with_an_explicit_result_backend(
    tmp_path: Path, pem: dict[str, str]
) -> None:
    backend = f"rediss://celery:{REDIS_PASSWORD}@10.0.0.41:6379/1"
    env = role_env(
        tmp_path,
        pem,
        fleet_broker="rabbitmq",
        rabbitmq_vhost="/",
        rabbitmq_amqps_port=5673,
        celery_result_backend=backend,
    )
    assert env["CELERY_BROKER_URL"].endswith("@10.0.0.32:5673/%2F")
    assert env["CELERY_RESULT_BACKEND"] == backend
    assert "CELERY_SENTINEL_MASTER_NAME" not in env
    settings = load(env)
    assert settings["result_backend"].startswith("rediss://celery:")


def test_fleet_common_declares_the_choice() -> None:
    defaults = yaml.safe_load((ROOT / "roles/fleet_common/defaults/main.yml").read_text())
    specs = yaml.safe_load((ROOT / "roles/fleet_common/meta/argument_specs.yml").read_text())
    assert defaults["fleet_broker"] == "redis"
    spec = specs["argument_specs"]["main"]["options"]["fleet_broker"]
    assert spec["choices"] == ["redis", "rabbitmq"]


# Preflight against localhost (test_preflight's inventory: node1 is in every group, and
# celery_rabbitmq_group points at its group redis to stand for the RabbitMQ nodes).
RABBIT = {
    "fleet_broker": "rabbitmq",
    "celery_redis_password": GOOD,
    "celery_rabbitmq_password": GOOD + "r",
    "celery_rabbitmq_group": "redis",
    "rabbitmq_app_queues": ["default"],
}


@pytest.mark.parametrize("role", ["celery", "flower"])
def test_an_unknown_broker_fails_before_anything_else(tmp_path: Path, role: str) -> None:
    """fleet_common's argument spec (both roles depend on it) names the choices."""
    out = preflight(tmp_path, role, {"celery_redis_password": GOOD, "fleet_broker": "kafka"})
    assert "fleet_broker must be one of: redis, rabbitmq, got: kafka" in out, out


def test_complete_rabbitmq_inputs_pass_preflight(tmp_path: Path) -> None:
    out = preflight(tmp_path, "celery", RABBIT)
    assert "Check the RabbitMQ broker inputs" in out, out
    assert "fleet_broker is rabbitmq:" not in out, out


def test_the_default_queue_passes_without_listing_it(tmp_path: Path) -> None:
    """Role celery's pools consume `default` unless told otherwise, and fleet_common's
    rabbitmq_app_queues (role rabbitmq's configure permission) holds it by default."""
    inputs = {k: v for k, v in RABBIT.items() if k != "rabbitmq_app_queues"}
    out = preflight(tmp_path, "celery", inputs)
    assert "Check the RabbitMQ broker inputs" in out, out
    assert "fleet_broker is rabbitmq:" not in out, out


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"celery_rabbitmq_password": ""}, "celery_rabbitmq_password (default: rabbitmq_app"),
        ({"celery_rabbitmq_group": "nowhere"}, "group nowhere (celery_rabbitmq_group) has no host"),
        ({"celery_redis_password": ""}, "celery_redis_password (default: redis_app_password)"),
        ({"celery_broker_url": "amqps://x@h/v"}, "celery_broker_url is set"),
        ({"celery_beat_lock": True}, "celery_beat_lock needs a Redis broker"),
        ({"celery_broker_wait_replicas": 1}, "celery_broker_wait_replicas is confirmed publish"),
        ({"celery_sentinel_group": "none"}, "there is no result backend"),
        ({"rabbitmq_app_queues": []}, "the queues default of celery_worker_pools are outside"),
        (
            {"celery_worker_pools": [{"name": "io", "queues": ["celery", "io", "mail"]}]},
            "the queues io, mail of celery_worker_pools",
        ),
    ],
)
def test_missing_or_redis_only_inputs_fail_rabbitmq_preflight(
    tmp_path: Path, change: dict[str, object], words: str
) -> None:
    out = preflight(tmp_path, "celery", {**RABBIT, **change})
    assert "fleet_broker is rabbitmq:" in out, out
    assert words in out, out
    assert GOOD not in out


def test_flower_refuses_rabbitmq(tmp_path: Path) -> None:
    flower = {"flower_basic_auth_password": GOOD + "h", "flower_redis_password": GOOD + "f"}
    out = preflight(tmp_path, "flower", {**flower, "fleet_broker": "rabbitmq"})
    assert "role flower supports a Redis broker only for now" in out, out
    out = preflight(tmp_path, "flower", flower)
    assert "role flower supports a Redis broker only" not in out, out
