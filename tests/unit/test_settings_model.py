"""celery_fleet.settings.build: the typed, frozen Settings, and load() as its dict adapter."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

import celery_fleet
from celery_fleet.settings import BeatLock, SettingsError, build, load, masked

SENTINELS = "sentinel://app:datapw@10.0.0.1:26379/0;sentinel://10.0.0.2:26379/0"


SENTINEL_TLS = {
    "CELERY_BROKER_URL": SENTINELS,
    "CELERY_SENTINEL_MASTER_NAME": "fleet",
    "CELERY_SENTINEL_PASSWORD": "sentinelpw",
    "CELERY_BROKER_SSL_CA_CERTS": "{ca_crt}",
    "CELERY_BROKER_SSL_CERTFILE": "{client_crt}",
    "CELERY_BROKER_SSL_KEYFILE": "{client_key}",
    "CELERY_FLEET_RELIABLE_FETCH": "true",
    "CELERY_FLEET_BEAT_LOCK": "true",
    "CELERY_FLEET_BEAT_LOCK_TTL": "12",
}
UNIX_SOCKET = {
    "CELERY_BROKER_URL": "socket:///run/redis/redis.sock?db=2",
    "CELERY_TASK_QUEUES": "default,critical",
    "CELERY_FLEET_LOG_FORMAT": "text",
    "CELERY_FLEET_LONGEST_TIME_LIMIT": "3000",
}
AMQPS = {
    "CELERY_BROKER_URL": "amqps://app:pw@h1:5671/fleet",
    "CELERY_BROKER_SSL_CA_CERTS": "{ca_crt}",
    "CELERY_RESULT_BACKEND": "rediss://app:backendpw@r1:6379/1",
}
NO_RESULTS = {
    "CELERY_BROKER_URL": "rediss://:s3cret@r1:6380/0?ssl_ca_certs={ca_crt}",
    "CELERY_RESULT_BACKEND": "disabled",
    "CELERY_VISIBILITY_TIMEOUT": "7200",
}


def filled(template: dict[str, str], pem: dict[str, str]) -> dict[str, str]:
    """The template with the test's PEM files ({ca_crt}, ...) filled in."""
    return {k: v.format(**pem) for k, v in template.items()}


def sentinel_tls(pem: dict[str, str]) -> dict[str, str]:
    return filled(SENTINEL_TLS, pem)


# env -> the typed fields it must give (the rest is checked against celery() below).
CASES: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "sentinel+tls": (
        SENTINEL_TLS,
        {
            "queues": ("default",),
            "visibility_timeout": 1200,  # task_time_limit 900 + 300
            "longest_time_limit": 900,
            "reliable_fetch": True,
            "broker_transport": "celery_fleet.transport:SentinelTransport",
            "beat_lock": BeatLock(enabled=True, ttl=12.0),
            "log_format": "json",
        },
    ),
    "unix socket": (
        UNIX_SOCKET,
        {
            "queues": ("default", "critical"),
            "visibility_timeout": 3300,
            "longest_time_limit": 3000,
            "reliable_fetch": False,
            "broker_transport": None,
            "beat_lock": BeatLock(enabled=False, ttl=30.0),
            "log_format": "text",
        },
    ),
    "amqps": (
        AMQPS,
        {"visibility_timeout": None, "longest_time_limit": None, "reliable_fetch": False},
    ),
    "results disabled": (
        NO_RESULTS,
        {"result_backend": None, "backend_tls": None, "visibility_timeout": 7200},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_typed_fields_agree_with_the_celery_dict(case: str, pem: dict[str, str]) -> None:
    template, expected = CASES[case]
    environment = filled(template, pem)
    settings = build(environment)
    for name, value in expected.items():
        assert getattr(settings, name) == value, name
    celery = settings.celery()
    assert celery == load(environment)
    assert settings.broker_url == celery["broker_url"]
    assert settings.result_backend == celery["result_backend"]
    assert settings.queues == tuple(q.name for q in celery["task_queues"])
    assert settings.broker_transport == celery.get("broker_transport")
    options = celery["broker_transport_options"]
    assert settings.visibility_timeout == options.get("visibility_timeout")
    assert settings.broker_tls.enabled is bool(celery["broker_use_ssl"])
    if settings.backend_tls is not None:
        assert settings.backend_tls.enabled is ("redis_backend_use_ssl" in celery)


def test_sentinel_backend_inherits_the_broker_tls(pem: dict[str, str]) -> None:
    settings = build(sentinel_tls(pem))
    assert settings.broker_tls.enabled
    assert settings.broker_tls.ca_certs == pem["ca_crt"]
    assert settings.backend_tls == settings.broker_tls
    assert settings.result_backend is not None
    assert settings.result_backend.endswith("10.0.0.2:26379/1")
    assert settings.celery()["redis_backend_use_ssl"] == settings.broker_tls.redis_kwargs()


def test_settings_are_frozen(pem: dict[str, str]) -> None:
    settings = build(sentinel_tls(pem))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.broker_url = "redis://elsewhere/0"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.values["broker_url"] = "redis://elsewhere/0"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.beat_lock.ttl = 1.0  # type: ignore[misc]


def test_celery_hands_out_copies(pem: dict[str, str]) -> None:
    settings = build(sentinel_tls(pem))
    first = settings.celery()
    first["broker_transport_options"]["visibility_timeout"] = 1
    first["accept_content"].append("pickle")
    second = settings.celery()
    assert second["broker_transport_options"]["visibility_timeout"] == 1200
    assert second["accept_content"] == ["json"]


def test_repr_shows_no_password(pem: dict[str, str]) -> None:
    text = repr(build(sentinel_tls(pem)))
    assert text.startswith("Settings(")
    for secret in ("datapw", "sentinelpw"):
        assert secret not in text
    assert "reliable_fetch=True" in text


def test_masked_works_on_the_adapter(pem: dict[str, str]) -> None:
    printed = str(masked(build(sentinel_tls(pem)).celery()))
    assert "datapw" not in printed
    assert "sentinelpw" not in printed


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({}, "CELERY_BROKER_URL"),
        ({"CELERY_BROKER_URL": "redis://h/0", "CELERY_TASK_QUEUES": "a:b"}, "CELERY_TASK_QUEUES"),
        ({"CELERY_BROKER_URL": SENTINELS}, "CELERY_SENTINEL_MASTER_NAME"),
        ({"CELERY_BROKER_URL": "redis://h/0", "CELERY_BROKR_URL": "x"}, "CELERY_BROKR_URL"),
        (
            {"CELERY_BROKER_URL": "redis://h/0", "CELERY_FLEET_BEAT_LOCK_TTL": "1"},
            "CELERY_FLEET_BEAT_LOCK_TTL",
        ),
        (
            {"CELERY_BROKER_URL": "amqps://a:b@h1/v", "CELERY_RESULT_BACKEND": "rpc://"},
            "CELERY_RESULT_BACKEND",
        ),
    ],
)
def test_build_and_load_refuse_alike(environment: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as built:
        build(environment)
    with pytest.raises(SettingsError) as loaded:
        load(environment)
    assert built.value.variable == loaded.value.variable == variable
    assert str(built.value) == str(loaded.value)


def test_install_with_the_typed_settings_writes_the_urls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What celeryconfig does besides the settings, as one call (Celery reads these two
    # variables from os.environ before any configuration object).
    monkeypatch.setenv("CELERY_BROKER_URL", "socket:///run/redis/redis.sock?db=2")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "disabled")
    settings = build(os.environ)
    celery_fleet.install(settings=settings)
    assert os.environ["CELERY_BROKER_URL"] == settings.broker_url
    assert settings.broker_url.startswith("redis+socket:///run/redis/redis.sock")
    assert "CELERY_RESULT_BACKEND" not in os.environ
