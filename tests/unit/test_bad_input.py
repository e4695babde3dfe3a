"""Every bad input fails at load time with the variable's name and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from celery_fleet.settings import SettingsError, check_file, load


def env(**kw: str) -> dict[str, str]:
    return {f"CELERY_{k}": v for k, v in kw.items()}


def fails(variable: str, *words: str, **kw: str) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        load(env(**kw))
    assert info.value.variable == variable
    message = str(info.value)
    assert message.startswith(variable)
    for word in words:
        assert word in message, message
    return info.value


def test_broker_url_missing() -> None:
    fails("CELERY_BROKER_URL", "not set", "rediss://")


def test_ssl_query_with_plain_redis_url() -> None:
    fails(
        "CELERY_BROKER_URL", "rediss://", BROKER_URL="redis://h:6379/0?ssl_cert_reqs=CERT_REQUIRED"
    )


def test_ssl_env_with_plain_redis_url(pem: dict[str, str]) -> None:
    fails(
        "CELERY_REDIS_BACKEND_SSL_CA_CERTS",
        "plaintext",
        "rediss://",
        BROKER_URL="redis://h/0",
        RESULT_BACKEND="redis://h/1",
        REDIS_BACKEND_SSL_CA_CERTS=pem["ca_crt"],
    )


@pytest.mark.parametrize(
    "url",
    [
        "sentinel://h1:26379,h2:26379",
        "sentinel://h1:26379,sentinel://h2:26379",
    ],
)
def test_sentinel_hosts_joined_by_commas(url: str) -> None:
    fails("CELERY_BROKER_URL", "';'", BROKER_URL=url, SENTINEL_MASTER_NAME="m")


def test_sentinel_without_master_name() -> None:
    fails(
        "CELERY_SENTINEL_MASTER_NAME",
        "sentinel monitor",
        BROKER_URL="sentinel://h1:26379;sentinel://h2:26379",
    )


def test_sentinel_url_with_ssl_query() -> None:
    fails(
        "CELERY_RESULT_BACKEND",
        "CELERY_REDIS_BACKEND_SSL_",
        BROKER_URL="redis://h/0",
        SENTINEL_MASTER_NAME="m",
        RESULT_BACKEND="sentinel://h1:26379/1?ssl_cert_reqs=required",
    )


def test_min_other_sentinels_impossible() -> None:
    fails(
        "CELERY_SENTINEL_MIN_OTHER_SENTINELS",
        "lower it",
        BROKER_URL="sentinel://h1:26379;sentinel://h2:26379",
        SENTINEL_MASTER_NAME="m",
        SENTINEL_MIN_OTHER_SENTINELS="2",
        BROKER_SSL="false",
    )


@pytest.mark.parametrize("value", ["CERT_MAYBE", "2", "strict"])
def test_unknown_cert_reqs(value: str) -> None:
    fails(
        "CELERY_BROKER_SSL_CERT_REQS",
        "required",
        BROKER_URL="rediss://h/0",
        BROKER_SSL_CERT_REQS=value,
    )


def test_unknown_cert_reqs_in_url() -> None:
    fails(
        "CELERY_BROKER_SSL_CERT_REQS",
        "not a certificate requirement",
        BROKER_URL="rediss://h/0?ssl_cert_reqs=CERT_SOMETIMES",
    )


@pytest.mark.parametrize("kind", ["CA_CERTS", "CERTFILE", "KEYFILE"])
def test_missing_tls_file(kind: str, pem: dict[str, str], tmp_path: Path) -> None:
    extra = {"BROKER_SSL_CERTFILE": pem["client_crt"]} if kind == "KEYFILE" else {}
    fails(
        f"CELERY_BROKER_SSL_{kind}",
        "does not exist",
        BROKER_URL="rediss://h/0",
        **extra,
        **{f"BROKER_SSL_{kind}": str(tmp_path / "nope.pem")},
    )


def test_unreadable_tls_file(pem: dict[str, str]) -> None:
    """Checked for real: as root, in a child process that drops to uid 65534."""
    if os.getuid() != 0:
        os.chmod(pem["ca_crt"], 0)
        with pytest.raises(SettingsError, match="not readable"):
            check_file("CELERY_BROKER_SSL_CA_CERTS", pem["ca_crt"])
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, run the check, report through the pipe
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            check_file("CELERY_BROKER_SSL_CA_CERTS", pem["ca_crt"])
            os.write(write, b"accepted")
        except SettingsError as exc:
            os.write(write, str(exc).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    message = os.read(read, 4096).decode()
    assert message.startswith("CELERY_BROKER_SSL_CA_CERTS")
    assert "not readable" in message
    assert "0600" in message


def test_key_without_cert(pem: dict[str, str]) -> None:
    fails(
        "CELERY_BROKER_SSL_KEYFILE",
        "CELERY_BROKER_SSL_CERTFILE",
        BROKER_URL="rediss://h/0",
        BROKER_SSL_KEYFILE=pem["client_key"],
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TASK_TIME_LIMIT", "fifteen minutes"),
        ("REDIS_MAX_CONNECTIONS", "2.5"),
        ("REDIS_SOCKET_TIMEOUT", "5s"),
        ("VISIBILITY_TIMEOUT", "1h"),
        ("SENTINEL_SOCKET_TIMEOUT", "fast"),
    ],
)
def test_not_a_number(name: str, value: str) -> None:
    kw = {"BROKER_URL": "sentinel://h:26379", "SENTINEL_MASTER_NAME": "m", "BROKER_SSL": "no"}
    fails(f"CELERY_{name}", "number", **kw, **{name: value})


def test_not_a_boolean() -> None:
    fails(
        "CELERY_TASK_ACKS_LATE", "true or false", BROKER_URL="redis://h/0", TASK_ACKS_LATE="maybe"
    )


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("RESULT_BACKEND_USE_SSL", "CELERY_REDIS_BACKEND_USE_SSL"),
        ("TASK_SEND_SENT_SIGNAL", "CELERY_TASK_SEND_SENT_EVENT"),
        ("TASK_ACK_LATE", "CELERY_TASK_ACKS_LATE"),
        ("BROKER_SSL_CA_CERT", "CELERY_BROKER_SSL_CA_CERTS"),
        ("ALWAYS_EAGER", "CELERY_TASK_ALWAYS_EAGER"),
        ("FROBNICATE", "docs/settings.md"),
    ],
)
def test_typos_and_non_settings(name: str, hint: str) -> None:
    fails(f"CELERY_{name}", hint, BROKER_URL="redis://h/0", **{name: "x"})


def test_soft_limit_not_below_hard_limit() -> None:
    fails(
        "CELERY_TASK_SOFT_TIME_LIMIT",
        "below",
        BROKER_URL="redis://h/0",
        TASK_SOFT_TIME_LIMIT="900",
        TASK_TIME_LIMIT="900",
    )


def test_scheme_that_is_not_redis() -> None:
    fails(
        "CELERY_RESULT_BACKEND",
        "rediss://",
        BROKER_URL="redis://h/0",
        RESULT_BACKEND="db+postgresql://x",
    )


def test_error_messages_never_carry_the_password() -> None:
    err = fails("CELERY_BROKER_URL", BROKER_URL="redis://:topsecret@h:notaport/0")
    assert "topsecret" not in str(err)


def test_deployment_variables_are_not_mistaken_for_settings() -> None:
    load(env(BROKER_URL="redis://h/0", APP="proj", FLEET_POOL="default", CONFIG_MODULE="x"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ACCEPT_CONTENT", "json,pickle"),
        ("ACCEPT_CONTENT", '["json", "application/x-python-serialize"]'),
        ("RESULT_ACCEPT_CONTENT", "json,yaml"),
        ("TASK_SERIALIZER", "pickle"),
        ("RESULT_SERIALIZER", "yaml"),
    ],
)
def test_unsafe_serializers_are_refused(name: str, value: str) -> None:
    fails(
        f"CELERY_{name}",
        "run code",
        "CELERY_FLEET_ALLOW_UNSAFE_SERIALIZERS",
        BROKER_URL="rediss://:pw@h:6379/0",
        **{name: value},
    )


def test_unsafe_serializers_with_the_opt_in_warn(caplog: pytest.LogCaptureFixture) -> None:
    settings = load(
        {
            **env(BROKER_URL="rediss://:pw@h:6379/0", ACCEPT_CONTENT="json,pickle"),
            "CELERY_FLEET_ALLOW_UNSAFE_SERIALIZERS": "true",
        }
    )
    assert settings["accept_content"] == ["json", "pickle"]
    assert "CELERY_ACCEPT_CONTENT includes pickle" in caplog.text
