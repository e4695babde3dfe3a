"""celery_fleet.settings with RabbitMQ as the broker (celery_fleet.amqp): every amqps://
form, the py-amqp TLS dict, quorum-queue defaults and the mistakes."""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from celery_fleet.amqp import DEAD_LETTER_EXCHANGE, is_amqp
from celery_fleet.settings import SettingsError, load, masked
from harness import cli
from harness.ports import free_port

SECRET = "Tr0ub4dor&3"  # percent-encoded in the URLs below
ENCODED = "Tr0ub4dor%263"
BACKEND = "rediss://app:backendpw@r1:6379/1"


def env(broker: str, **kw: str) -> dict[str, str]:
    return {"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": BACKEND} | {
        f"CELERY_{k}": v for k, v in kw.items()
    }


def assert_no_secret(text: str) -> None:
    for secret in (SECRET, ENCODED, "backendpw"):
        assert secret not in text


def refused(environment: dict[str, str], variable: str, *words: str) -> str:
    with pytest.raises(SettingsError) as info:
        load(environment)
    message = str(info.value)
    assert info.value.variable == variable, message
    assert_no_secret(message)
    for word in words:
        assert word in message, message
    return message


def test_one_node_with_ca_gets_a_verifying_ssl_dict(pem: dict[str, str]) -> None:
    s = load(env(f"amqps://app:{ENCODED}@h1:5671/fleet", BROKER_SSL_CA_CERTS=pem["ca_crt"]))
    assert s["broker_url"] == f"amqps://app:{ENCODED}@h1:5671/fleet"
    # py-amqp's SSLContext arguments, not redis-py's ssl_* names.
    assert s["broker_use_ssl"] == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": pem["ca_crt"],
        "server_hostname": "h1",
    }
    assert s["broker_transport_options"] == {"confirm_publish": True}
    assert s["broker_heartbeat"] == 60
    assert s["result_backend"] == "rediss://app:backendpw@r1:6379/1"
    # The result backend inherits the broker's CA.
    assert s["redis_backend_use_ssl"]["ssl_ca_certs"] == pem["ca_crt"]


def test_quorum_queues_with_delivery_limit_and_dead_letter_exchange() -> None:
    s = load(env("amqps://app:pw@h1/fleet", TASK_QUEUES="default,critical"))
    assert [q.name for q in s["task_queues"]] == ["default", "critical"]
    for queue in s["task_queues"]:
        assert queue.routing_key == queue.name
        assert queue.queue_arguments == {
            "x-queue-type": "quorum",
            "x-delivery-limit": 10,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        }
    assert s["worker_detect_quorum_queues"] is True
    assert s["task_default_queue_type"] == "quorum"
    assert s["task_create_missing_queue_type"] == "quorum"
    assert s["task_default_exchange_type"] == "topic"
    assert s["task_acks_late"] is True


def test_delivery_limit_is_configurable_and_checked() -> None:
    s = load(env("amqps://app:pw@h1/fleet", FLEET_AMQP_DELIVERY_LIMIT="3"))
    assert s["task_queues"][0].queue_arguments["x-delivery-limit"] == 3
    refused(
        env("amqps://app:pw@h1/fleet", FLEET_AMQP_DELIVERY_LIMIT="0"),
        "CELERY_FLEET_AMQP_DELIVERY_LIMIT",
        "1 or more",
    )


def test_no_redis_only_transport_options_on_amqp() -> None:
    s = load(env("amqps://app:pw@h1/fleet"))
    options = s["broker_transport_options"]
    for redis_only in ("visibility_timeout", "unacked_restore_interval", "socket_timeout"):
        assert redis_only not in options
    assert "broker_transport" not in s


def test_default_port_and_default_vhost() -> None:
    s = load(env(f"amqps://app:{ENCODED}@h1"))
    assert s["broker_url"] == f"amqps://app:{ENCODED}@h1:5671/%2F"
    assert load(env("amqps://app:pw@h1:5671/"))["broker_url"].endswith("/%2F")
    assert load(env("amqps://app:pw@h1:5671/%2F"))["broker_url"].endswith("/%2F")
    assert load(env("amqps://app:pw@h1:5671/a%2Fb"))["broker_url"].endswith("/a%2Fb")


def test_failover_list_of_nodes_shares_credentials_and_vhost() -> None:
    s = load(env(f"amqps://app:{ENCODED}@h1:5671/fleet;amqps://h2:5671;amqps://h3"))
    assert s["broker_url"] == ";".join(
        f"amqps://app:{ENCODED}@{h}:5671/fleet" for h in ("h1", "h2", "h3")
    )
    # Several names: Kombu puts each node's host into server_hostname (None asks for it).
    assert s["broker_use_ssl"]["server_hostname"] is None
    assert "server_hostname" in s["broker_use_ssl"]


def test_ipv6_node() -> None:
    s = load(env("amqps://app:pw@[fd00::1]:5671/fleet"))
    assert s["broker_url"] == "amqps://app:pw@[fd00::1]:5671/fleet"
    assert s["broker_use_ssl"]["server_hostname"] == "fd00::1"


@pytest.mark.parametrize(
    ("broker", "words"),
    [
        (f"amqps://app:{ENCODED}@h1:5671/v;amqp://app:{ENCODED}@h2:5672/v", ("mixes", "amqp://")),
        (f"amqps://app:{ENCODED}@h1:5671/v;rediss://:{ENCODED}@h2:6379/0", ("mixes",)),
        (f"amqps://app:{ENCODED}@h1:5671/v,h2:5671", ("';'",)),
        (f"amqps://app:{ENCODED}@h1:99999/v", ("port",)),
        (f"amqps://app:{ENCODED}@h1:notaport/v", ("port",)),
        (f"amqps://app:{ENCODED}@h1:0/v", ("port",)),
        (f"amqps://app:{ENCODED}@h1:5671/v?ssl=1", ("query", "CELERY_BROKER_SSL_")),
        ("amqps://h1:5671/v", ("no user", "guest")),
        (f"amqps://app:{ENCODED}@:5671/v", ("no host",)),
        (f"amqps://app:{ENCODED}@h1/v;amqps://other:{ENCODED}@h2/v", ("credentials",)),
        (f"amqps://app:{ENCODED}@h1/v;amqps://h2/w", ("vhost",)),
        (f"pyamqp://app:{ENCODED}@h1/v", ("amqps://",)),
    ],
)
def test_broker_url_mistakes(broker: str, words: tuple[str, ...]) -> None:
    refused(env(broker), "CELERY_BROKER_URL", *words)


def test_plaintext_amqp_needs_the_explicit_flag(caplog: pytest.LogCaptureFixture) -> None:
    broker = f"amqp://app:{ENCODED}@h1/fleet"
    refused(env(broker), "CELERY_BROKER_URL", "amqps://", "CELERY_FLEET_ALLOW_PLAINTEXT_AMQP")
    with caplog.at_level(logging.WARNING):
        s = load(env(broker, FLEET_ALLOW_PLAINTEXT_AMQP="true"))
    assert s["broker_url"] == f"amqp://app:{ENCODED}@h1:5672/fleet"
    assert s["broker_use_ssl"] is False
    assert any("plaintext" in r.getMessage() for r in caplog.records)
    refused(
        env(broker, FLEET_ALLOW_PLAINTEXT_AMQP="maybe"),
        "CELERY_FLEET_ALLOW_PLAINTEXT_AMQP",
        "boolean",
    )


def test_plaintext_amqp_with_tls_options_is_refused(pem: dict[str, str]) -> None:
    refused(
        env(
            "amqp://app:pw@h1/fleet",
            FLEET_ALLOW_PLAINTEXT_AMQP="true",
            BROKER_SSL_CA_CERTS=pem["ca_crt"],
        ),
        "CELERY_BROKER_SSL_CA_CERTS",
        "plaintext amqp://",
    )


def test_missing_ca_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.crt")
    refused(
        env(f"amqps://app:{ENCODED}@h1/fleet", BROKER_SSL_CA_CERTS=missing),
        "CELERY_BROKER_SSL_CA_CERTS",
        "does not exist",
    )


def test_mutual_tls_files(pem: dict[str, str]) -> None:
    s = load(
        env(
            "amqps://app:pw@h1/fleet",
            BROKER_SSL_CA_CERTS=pem["ca_crt"],
            BROKER_SSL_CERTFILE=pem["client_crt"],
            BROKER_SSL_KEYFILE=pem["client_key"],
        )
    )
    assert s["broker_use_ssl"]["certfile"] == pem["client_crt"]
    assert s["broker_use_ssl"]["keyfile"] == pem["client_key"]
    refused(
        env("amqps://app:pw@h1/fleet", BROKER_SSL_KEYFILE=pem["client_key"]),
        "CELERY_BROKER_SSL_KEYFILE",
        "CERTFILE",
    )


def test_unknown_tls_key_is_refused(pem: dict[str, str]) -> None:
    refused(
        env("amqps://app:pw@h1/fleet", BROKER_SSL_CA_CERT=pem["ca_crt"]),
        "CELERY_BROKER_SSL_CA_CERT",
        "did you mean CELERY_BROKER_SSL_CA_CERTS",
    )
    refused(
        env("amqps://app:pw@h1/fleet", BROKER_USE_SSL='{"ca_cert": "x"}'),
        "CELERY_BROKER_SSL_CA_CERT",
    )


def test_weak_verification_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = load(env("amqps://app:pw@h1/fleet", BROKER_SSL_CERT_REQS="none"))
    assert s["broker_use_ssl"] == {"cert_reqs": ssl.CERT_NONE}  # no name to check, no SNI
    assert any("man-in-the-middle" in r.getMessage() for r in caplog.records)
    s = load(env("amqps://app:pw@h1/fleet", BROKER_SSL_CHECK_HOSTNAME="false"))
    assert s["broker_use_ssl"] == {"cert_reqs": ssl.CERT_REQUIRED}
    refused(
        env("amqps://app:pw@h1/fleet", BROKER_SSL_CERT_REQS="sometimes"),
        "CELERY_BROKER_SSL_CERT_REQS",
    )


@pytest.mark.parametrize(
    "backend",
    [
        f"amqps://app:{ENCODED}@h1:5671/fleet",
        f"amqp://app:{ENCODED}@h1:5672/fleet",
        "rpc://",
        None,  # unset: the default would be the broker's URL
    ],
)
def test_amqp_result_backend_is_refused(backend: str | None) -> None:
    environment = env(f"amqps://app:{ENCODED}@h1/fleet")
    del environment["CELERY_RESULT_BACKEND"]
    if backend is not None:
        environment["CELERY_RESULT_BACKEND"] = backend
    refused(environment, "CELERY_RESULT_BACKEND", "broker only", "rediss://")


def test_amqp_result_backend_is_refused_with_a_redis_broker() -> None:
    environment = {
        "CELERY_BROKER_URL": "rediss://:pw@h:6379/0",
        "CELERY_RESULT_BACKEND": f"amqps://app:{ENCODED}@h1/fleet",
    }
    refused(environment, "CELERY_RESULT_BACKEND", "broker only")


def test_results_disabled_and_sentinel_backend_are_fine() -> None:
    s = load(env("amqps://app:pw@h1/fleet") | {"CELERY_RESULT_BACKEND": "disabled"})
    assert s["result_backend"] is None
    s = load(
        env("amqps://app:pw@h1/fleet")
        | {
            "CELERY_RESULT_BACKEND": "sentinel://:pw@s1:26379/1;sentinel://:pw@s2:26379/1",
            "CELERY_SENTINEL_MASTER_NAME": "main",
        }
    )
    assert s["result_backend_transport_options"]["master_name"] == "main"


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"CELERY_VISIBILITY_TIMEOUT": "7200"}, "CELERY_VISIBILITY_TIMEOUT"),
        ({"CELERY_BROKER_SSL": "true"}, "CELERY_BROKER_SSL"),
        ({"CELERY_FLEET_RELIABLE_FETCH": "true"}, "CELERY_FLEET_RELIABLE_FETCH"),
        ({"CELERY_FLEET_BEAT_LOCK": "true"}, "CELERY_FLEET_BEAT_LOCK"),
        ({"CELERY_BROKER_WAIT_REPLICAS": "1"}, "CELERY_BROKER_WAIT_REPLICAS"),
        (
            {"CELERY_BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": 60}'},
            "CELERY_BROKER_TRANSPORT_OPTIONS",
        ),
        ({"CELERY_BROKER_TRANSPORT": "redis"}, "CELERY_BROKER_TRANSPORT"),
    ],
)
def test_redis_only_settings_are_refused(extra: dict[str, str], variable: str) -> None:
    refused(
        env("amqps://app:pw@h1/fleet") | extra, variable, "unset" if "FLEET" in variable else ""
    )


def test_transport_options_are_merged_and_heartbeat_overridable() -> None:
    s = load(
        env(
            "amqps://app:pw@h1/fleet",
            BROKER_TRANSPORT_OPTIONS='{"confirm_publish": true, "read_timeout": 30}',
            BROKER_HEARTBEAT="30",
        )
    )
    assert s["broker_transport_options"] == {"confirm_publish": True, "read_timeout": 30}
    assert s["broker_heartbeat"] == 30


def test_long_tasks_warn_about_consumer_timeout(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        load(env("amqps://app:pw@h1/fleet"))
    assert not [r for r in caplog.records if "consumer_timeout" in r.getMessage()]
    with caplog.at_level(logging.WARNING):
        load(env("amqps://app:pw@h1/fleet", TASK_TIME_LIMIT="3600", TASK_SOFT_TIME_LIMIT="3500"))
    assert [r for r in caplog.records if "consumer_timeout" in r.getMessage()]


def test_masked_output_hides_every_password() -> None:
    s = load(env(f"amqps://app:{ENCODED}@h1/fleet;amqps://app:{ENCODED}@h2/fleet"))
    text = json.dumps(masked(s), default=str)
    assert_no_secret(text)
    assert "amqps://app:***@h1:5671/fleet;amqps://app:***@h2:5671/fleet" in text


def test_is_amqp() -> None:
    for url in ("amqps://h", "rediss://h;amqp://h", "pyamqp://h"):
        assert is_amqp(url), url
    for url in ("rediss://h", "sentinel://a;sentinel://b", "socket:///r.sock"):
        assert not is_amqp(url), url


def run_cli(tmp_path: Path, lines: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return cli.settings(cli.write_env(tmp_path / "celery.env", lines))


def test_cli_masks_amqp_passwords_in_output_and_errors(tmp_path: Path) -> None:
    good = run_cli(tmp_path, env(f"amqps://app:{ENCODED}@h1/fleet"))
    assert good.returncode == 0, good.stderr
    printed: dict[str, Any] = json.loads(good.stdout)
    assert printed["broker_url"] == "amqps://app:***@h1:5671/fleet"
    assert printed["broker_use_ssl"]["cert_reqs"] == "CERT_REQUIRED"
    for broker in (
        f"amqps://app:{ENCODED}@h1:99999/fleet",
        f"amqp://app:{ENCODED}@h1/fleet",
        f"amqps://app:{ENCODED}@h1/a;amqps://app:{ENCODED}@h2/b",
    ):
        bad = run_cli(tmp_path, env(broker))
        assert bad.returncode == 2, bad.stderr
        output = bad.stdout + bad.stderr
        assert "CELERY_BROKER_URL" in output
        assert_no_secret(output)


def test_doctor_checks_every_node_of_an_amqp_failover_list(tmp_path: Path) -> None:
    """Nobody listens on either node: one finding per node (TLS and login), an error for
    all of them down, exit 2, no traceback, no password; what is not checked on AMQP is
    said. The real RabbitMQ: tests/integration/test_doctor_amqp.py."""
    first, second = free_port(), free_port()
    broker = f"amqps://app:{ENCODED}@127.0.0.1:{first}/fleet;amqps://127.0.0.1:{second}/fleet"
    env_file = cli.write_env(
        tmp_path / "celery.env", {"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": BACKEND}
    )
    done = cli.run("doctor", "--env-file", str(env_file), "--timeout", "2", "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert_no_secret(done.stdout + done.stderr)
    results = {(r["check"], r["status"]) for r in json.loads(done.stdout)}
    for port in (first, second):
        assert (f"tls 127.0.0.1:{port}", "finding") in results
        assert (f"amqp 127.0.0.1:{port}", "finding") in results
    assert ("amqp", "error") in results
    assert ("not checked on AMQP", "ok") in results
    assert not any(check in ("beat", "workers", "replication") for check, _ in results)
