"""celery_fleet.settings: every URL form, the TLS dicts, Sentinel options, defaults."""

from __future__ import annotations

import json
import logging
import ssl
from typing import Any

import pytest

from celery_fleet.settings import (
    LONGEST_VAR,
    PRODUCTION_DEFAULTS,
    VISIBILITY_MARGIN,
    django_settings,
    load,
    masked,
    publish_urls,
)


def env(**kw: str) -> dict[str, str]:
    return {f"CELERY_{k}": v for k, v in kw.items()}


def test_plain_redis_with_password_and_derived_backend() -> None:
    s = load(env(BROKER_URL="redis://:s3cret@redis.internal:6380/2"))
    assert s["broker_url"] == "redis://:s3cret@redis.internal:6380/2"
    assert s["result_backend"] == "redis://:s3cret@redis.internal:6380/3"
    assert s["broker_use_ssl"] is False
    assert "redis_backend_use_ssl" not in s


def test_acl_user_in_url_is_kept_and_percent_encoding_survives() -> None:
    s = load(env(BROKER_URL="redis://app:p%40ss%3Aw@h:6379/0", RESULT_BACKEND="redis://app:x@h/5"))
    assert s["broker_url"] == "redis://app:p%40ss%3Aw@h:6379/0"
    assert s["result_backend"] == "redis://app:x@h:6379/5"


def test_rediss_without_options_verifies_certificates(caplog: pytest.LogCaptureFixture) -> None:
    # Kombu alone would fall back to CERT_NONE here (with only a warning).
    s = load(env(BROKER_URL="rediss://:pw@h:6379/0"))
    assert s["broker_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert s["broker_use_ssl"]["ssl_check_hostname"] is True
    assert s["redis_backend_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_rediss_query_parameters_move_into_the_ssl_dicts(pem: dict[str, str]) -> None:
    url = (
        "rediss://:pw@vandelay.com:6379/1?ssl_cert_reqs=CERT_REQUIRED"
        f"&ssl_ca_certs={pem['ca_crt']}&ssl_certfile={pem['client_crt']}"
        f"&ssl_keyfile={pem['client_key']}"
    )
    s = load(env(BROKER_URL=url, RESULT_BACKEND=url))
    assert s["broker_url"] == "rediss://:pw@vandelay.com:6379/1"
    assert s["result_backend"] == "rediss://:pw@vandelay.com:6379/1"
    for key in ("broker_use_ssl", "redis_backend_use_ssl"):
        assert s[key] == {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_ca_certs": pem["ca_crt"],
            "ssl_certfile": pem["client_crt"],
            "ssl_keyfile": pem["client_key"],
            "ssl_check_hostname": True,
        }


def test_separate_env_ssl_settings_and_backend_inherits(pem: dict[str, str]) -> None:
    s = load(
        env(
            BROKER_URL="rediss://h:6379/0",
            RESULT_BACKEND="rediss://h:6379/1",
            BROKER_SSL_CA_CERTS=pem["ca_crt"],
            BROKER_SSL_CERTFILE=pem["client_crt"],
            BROKER_SSL_KEYFILE=pem["client_key"],
            BROKER_SSL_CHECK_HOSTNAME="false",
        )
    )
    assert s["broker_use_ssl"]["ssl_certfile"] == pem["client_crt"]
    assert s["broker_use_ssl"]["ssl_check_hostname"] is False
    assert s["redis_backend_use_ssl"] == s["broker_use_ssl"]


def test_backend_has_its_own_tls_when_given(pem: dict[str, str]) -> None:
    s = load(
        env(
            BROKER_URL="rediss://h:6379/0",
            RESULT_BACKEND="rediss://other:6379/1",
            BROKER_SSL_CA_CERTS=pem["ca_crt"],
            REDIS_BACKEND_SSL_CA_CERTS=pem["client_crt"],
        )
    )
    assert s["redis_backend_use_ssl"]["ssl_ca_certs"] == pem["client_crt"]


def test_celery_json_dicts_are_accepted(pem: dict[str, str]) -> None:
    s = load(
        env(
            BROKER_URL="rediss://h/0",
            BROKER_USE_SSL=json.dumps(
                {"ssl_cert_reqs": "CERT_REQUIRED", "ssl_ca_certs": pem["ca_crt"]}
            ),
        )
    )
    assert s["broker_use_ssl"]["ssl_ca_certs"] == pem["ca_crt"]


@pytest.mark.parametrize(
    ("url", "rendered"),
    [
        (
            "socket:///run/redis/redis.sock?db=2",
            "redis+socket:///run/redis/redis.sock?virtual_host=2",
        ),
        (
            "unix:///run/redis/redis.sock?virtual_host=3",
            "redis+socket:///run/redis/redis.sock?virtual_host=3",
        ),
        (
            "redis+socket://:pw@/run/r.sock?virtual_host=1",
            "redis+socket://:pw@/run/r.sock?virtual_host=1",
        ),
    ],
)
def test_unix_sockets_use_the_spelling_both_libraries_accept(url: str, rendered: str) -> None:
    s = load(env(BROKER_URL=url, RESULT_BACKEND=url))
    assert s["broker_url"] == rendered
    assert s["result_backend"] == rendered


def test_sentinel_with_tls_everywhere_and_separate_credentials(pem: dict[str, str]) -> None:
    s = load(
        env(
            BROKER_URL="sentinel://app:datapw@10.0.0.1:26379/0;sentinel://10.0.0.2:26379/0;"
            "sentinel://10.0.0.3:26379/0",
            SENTINEL_MASTER_NAME="fleet",
            SENTINEL_PASSWORD="sentinelpw",
            SENTINEL_MIN_OTHER_SENTINELS="1",
            BROKER_SSL_CA_CERTS=pem["ca_crt"],
            BROKER_SSL_CERTFILE=pem["client_crt"],
            BROKER_SSL_KEYFILE=pem["client_key"],
        )
    )
    assert s["broker_url"].count("sentinel://app:datapw@") == 3
    assert s["result_backend"].endswith("10.0.0.3:26379/1")
    for key in ("broker_transport_options", "result_backend_transport_options"):
        opts = s[key]
        assert opts["master_name"] == "fleet"
        assert opts["min_other_sentinels"] == 1
        kw = opts["sentinel_kwargs"]
        assert kw["password"] == "sentinelpw"  # the Sentinels' own, not the data nodes'
        assert kw["ssl"] is True  # celery#8016: without it the Sentinel hop is plaintext
        assert kw["ssl_ca_certs"] == pem["ca_crt"]
        assert kw["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        assert kw["socket_timeout"] == 1.0
    # TLS to the data nodes (Sentinel URLs carry no scheme for it): explicit dicts.
    assert s["broker_use_ssl"]["ssl_ca_certs"] == pem["ca_crt"]
    assert s["redis_backend_use_ssl"]["ssl_ca_certs"] == pem["ca_crt"]


def test_sentinel_plaintext_is_an_explicit_choice() -> None:
    s = load(env(BROKER_URL="sentinel://h:26379", SENTINEL_MASTER_NAME="m", BROKER_SSL="false"))
    assert s["broker_use_ssl"] is False
    assert "ssl" not in s["broker_transport_options"]["sentinel_kwargs"]
    assert "redis_backend_use_ssl" not in s


def test_production_defaults_and_overrides() -> None:
    s = load(env(BROKER_URL="redis://h/0"))
    for key in ("task_acks_late", "task_reject_on_worker_lost"):
        assert s[key] is True
    # Opt-in extras, off as in Celery: they cost throughput and guarantee nothing.
    for key in (
        "task_track_started",
        "task_send_sent_event",
        "worker_send_task_events",
        "result_extended",
    ):
        assert s[key] is False
    assert s["result_compression"] is None
    assert s["accept_content"] == ["json"]
    assert s["worker_prefetch_multiplier"] == 1
    # task_time_limit (900) + 300: a running task is never redelivered
    assert s["broker_transport_options"]["visibility_timeout"] == 1200
    assert s["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert [q.name for q in s["task_queues"]] == ["default"]
    s = load(
        env(
            BROKER_URL="redis://h/0",
            TASK_ACKS_LATE="false",
            TASK_TIME_LIMIT="120",
            TASK_SOFT_TIME_LIMIT="100",
            WORKER_MAX_TASKS_PER_CHILD="50",
            RESULT_EXPIRES="60",
            TASK_QUEUES="default, critical ,batch",
            TASK_ROUTES='{"tasks.send_email": {"queue": "critical"}}',
            VISIBILITY_TIMEOUT="7200",
            REDIS_MAX_CONNECTIONS="20",
            REDIS_SOCKET_TIMEOUT="5",
            REDIS_SOCKET_CONNECT_TIMEOUT="2",
            REDIS_RETRY_ON_TIMEOUT="no",
            BROKER_POOL_LIMIT="4",
            BROKER_CONNECTION_MAX_RETRIES="none",
            WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS="true",
            ACCEPT_CONTENT="json,msgpack",
            WORKER_SEND_TASK_EVENTS="true",
            TASK_SEND_SENT_EVENT="yes",
            TASK_TRACK_STARTED="1",
            RESULT_EXTENDED="true",
            RESULT_COMPRESSION="gzip",
        )
    )
    assert s["task_acks_late"] is False
    assert (s["task_time_limit"], s["task_soft_time_limit"]) == (120, 100)
    assert s["worker_max_tasks_per_child"] == 50
    assert [q.name for q in s["task_queues"]] == ["default", "critical", "batch"]
    assert s["task_routes"] == {"tasks.send_email": {"queue": "critical"}}
    opts = s["broker_transport_options"]
    assert opts["visibility_timeout"] == 7200
    assert opts["max_connections"] == 20
    assert (opts["socket_timeout"], opts["socket_connect_timeout"]) == (5.0, 2.0)
    assert opts["retry_on_timeout"] is False
    assert s["redis_max_connections"] == 20
    assert s["broker_pool_limit"] == 4
    assert s["broker_connection_max_retries"] is None
    assert s["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert s["accept_content"] == ["json", "msgpack"]
    for key in (
        "task_track_started",
        "task_send_sent_event",
        "worker_send_task_events",
        "result_extended",
    ):
        assert s[key] is True
    assert s["result_compression"] == "gzip"
    assert set(PRODUCTION_DEFAULTS) <= set(s)


def test_result_backend_can_be_disabled() -> None:
    s = load(env(BROKER_URL="redis://h/0", RESULT_BACKEND="disabled"))
    assert s["result_backend"] is None
    assert s["task_ignore_result"] is True
    assert "result_compression" not in s  # Celery warns for a disabled backend otherwise


def test_visibility_timeout_follows_the_time_limit() -> None:
    s = load(env(BROKER_URL="redis://h/0", TASK_TIME_LIMIT="60", TASK_SOFT_TIME_LIMIT="50"))
    assert s["broker_transport_options"]["visibility_timeout"] == 360


def test_unix_socket_backend_has_no_keepalive() -> None:
    s = load(env(BROKER_URL="redis://h/0", RESULT_BACKEND="socket:///run/r.sock?db=1"))
    assert s["redis_socket_keepalive"] is False


def test_sentinel_clients_do_not_retry_each_sentinel() -> None:
    s = load(env(BROKER_URL="sentinel://h:26379", SENTINEL_MASTER_NAME="m", BROKER_SSL="no"))
    retry = s["broker_transport_options"]["sentinel_kwargs"]["retry"]
    assert retry.get_retries() == 0


def test_normalised_urls_are_published_to_the_environment() -> None:
    # Celery reads CELERY_BROKER_URL/CELERY_RESULT_BACKEND from os.environ first.
    raw = env(BROKER_URL="socket:///run/r.sock?db=0", RESULT_BACKEND="disabled")
    environ = dict(raw)
    publish_urls(load(raw), environ)
    assert environ["CELERY_BROKER_URL"] == "redis+socket:///run/r.sock?virtual_host=0"
    assert "CELERY_RESULT_BACKEND" not in environ


@pytest.mark.parametrize("level", ["none", "CERT_NONE", "optional", "ssl.CERT_OPTIONAL"])
def test_weak_verification_is_possible_but_named_as_a_risk(
    level: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = load(env(BROKER_URL="rediss://h/0", BROKER_SSL_CERT_REQS=level))
    assert s["broker_use_ssl"]["ssl_cert_reqs"] in (ssl.CERT_NONE, ssl.CERT_OPTIONAL)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("man-in-the-middle" in w and "CELERY_BROKER_SSL_CERT_REQS" in w for w in warnings)
    if "NONE" in level.upper():
        assert s["broker_use_ssl"]["ssl_check_hostname"] is False


def test_visibility_timeout_below_time_limit_warns(caplog: pytest.LogCaptureFixture) -> None:
    load(env(BROKER_URL="redis://h/0", VISIBILITY_TIMEOUT="600", TASK_TIME_LIMIT="900"))
    assert any(
        "runs twice" in r.getMessage() or "run twice" in r.getMessage() for r in caplog.records
    )


def test_django_names() -> None:
    s = django_settings(env(BROKER_URL="redis://h/0"))
    assert s["CELERY_BROKER_URL"] == "redis://h:6379/0"
    assert s["CELERY_TASK_ACKS_LATE"] is True


def _walk(value: Any) -> str:
    return json.dumps(masked(value), default=str)


def test_masked_output_has_no_password(pem: dict[str, str]) -> None:
    s = load(
        env(
            BROKER_URL="sentinel://u:datapw1@h1:26379;sentinel://u:datapw1@h2:26379",
            RESULT_BACKEND="rediss://:backendpw2@h:6379/1",
            SENTINEL_MASTER_NAME="m",
            SENTINEL_PASSWORD="sentinelpw3",
            BROKER_SSL_CA_CERTS=pem["ca_crt"],
        )
    )
    text = _walk(s)
    for secret in ("datapw1", "backendpw2", "sentinelpw3"):
        assert secret not in text
    assert "u:***@h1" in text


def test_the_longest_pool_time_limit_sets_the_default_visibility_timeout() -> None:
    # A pool with --time-limit 3300 on a host whose setting says 900: the default visibility
    # timeout follows the pool, so a task still running is never delivered again.
    s = load(env(BROKER_URL="redis://h/0", TASK_TIME_LIMIT="900") | {LONGEST_VAR: "3300"})
    assert s["broker_transport_options"]["visibility_timeout"] == 3300 + VISIBILITY_MARGIN
    s = load(env(BROKER_URL="redis://h/0", TASK_TIME_LIMIT="900"))
    assert s["broker_transport_options"]["visibility_timeout"] == 900 + VISIBILITY_MARGIN


def test_an_explicit_visibility_timeout_below_a_pool_limit_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    load(env(BROKER_URL="redis://h/0", VISIBILITY_TIMEOUT="3000") | {LONGEST_VAR: "3300"})
    assert any(LONGEST_VAR + "=3300" in r.getMessage() for r in caplog.records)
