"""Wrong credentials and wrong certificates are refused quickly, with an error that says why.

Both sides are checked: a client publishing (what a web process sees) and a worker
starting (what an operator reads in the journal). "Quickly" is seconds, not a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from kombu.exceptions import OperationalError

from harness import envs
from harness.redis_procs import RedisFleet
from harness.worker import MakeClient, StartWorker

CLIENT_LIMIT = 10.0  # s until the client's publish fails
WORKER_LIMIT = 20.0  # s until the worker's log says why it cannot connect
BACKEND_LIMIT = 40.0  # s until a result backend that refuses us gives up (it retries)


@dataclass
class Refusal:
    env: dict[str, str]
    says: tuple[str, ...]  # one of these must be in the error


def wrong_password(fleet: RedisFleet) -> Refusal:
    node = fleet.server("tls")
    env = {
        "CELERY_BROKER_URL": envs.url(fleet, node, 0, password="not-the-password"),
        **envs.tls(fleet),
    }
    return Refusal(env, ("WRONGPASS", "invalid username-password pair"))


def wrong_ca(fleet: RedisFleet) -> Refusal:
    node = fleet.server("tls")
    env = {
        "CELERY_BROKER_URL": envs.url(fleet, node, 0),
        "CELERY_BROKER_SSL_CA_CERTS": str(fleet.pki.other_ca),
    }
    return Refusal(env, ("certificate verify failed",))


def expired_server_certificate(fleet: RedisFleet) -> Refusal:
    node = fleet.server("expired", cert=fleet.pki.expired)
    env = {"CELERY_BROKER_URL": envs.url(fleet, node, 0), **envs.tls(fleet)}
    return Refusal(env, ("certificate has expired",))


def certificate_without_ip_san(fleet: RedisFleet) -> Refusal:
    """The Sentinel trap (redis-py issue 3629): the name the client dials is an IP address,
    the certificate names only a host, and hostname checking is on by default."""
    node = fleet.server("dns-only", cert=fleet.pki.dns_only)
    env = {"CELERY_BROKER_URL": envs.url(fleet, node, 0), **envs.tls(fleet)}
    return Refusal(env, ("IP address mismatch", "doesn't match", "certificate verify failed"))


def missing_client_certificate(fleet: RedisFleet) -> Refusal:
    node = fleet.server("mtls", mtls=True)
    env = {"CELERY_BROKER_URL": envs.url(fleet, node, 0), **envs.tls(fleet)}
    return Refusal(env, ("certificate required", "Connection reset", "Connection closed", "EOF"))


def wrong_sentinel_password(fleet: RedisFleet) -> Refusal:
    primary = fleet.server("p1")
    fleet.sentinels(primary, count=3)
    env = {**envs.sentinel(fleet), "CELERY_SENTINEL_PASSWORD": "not-the-password"}
    return Refusal(env, ("WRONGPASS", "invalid username-password pair", "No master found"))


REFUSALS: dict[str, Callable[[RedisFleet], Refusal]] = {
    "wrong-password": wrong_password,
    "wrong-ca": wrong_ca,
    "expired-server-cert": expired_server_certificate,
    "cert-without-ip-san": certificate_without_ip_san,
    "mtls-without-client-cert": missing_client_certificate,
    "wrong-sentinel-password": wrong_sentinel_password,
}


def chain(exc: BaseException) -> str:
    """The message of an exception and of every exception it was raised from."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("case", list(REFUSALS))
def test_broker_refuses_quickly_with_a_clear_error(
    case: str, redis_fleet: RedisFleet, start_worker: StartWorker, celery_client: MakeClient
) -> None:
    refusal = REFUSALS[case](redis_fleet)

    # A web process publishing (no result backend, so the broker is what answers).
    client = celery_client({**refusal.env, "CELERY_RESULT_BACKEND": "disabled"})
    started = time.monotonic()
    with pytest.raises(OperationalError) as failure:
        client.send_task("fleet.add", args=(1, 1))
    elapsed = time.monotonic() - started
    assert elapsed < CLIENT_LIMIT, f"publish took {elapsed:.1f} s to fail"
    assert any(word in str(failure.value) for word in refusal.says), chain(failure.value)

    # A worker starting: its log says why, within seconds, and it never says ready.
    worker = start_worker(refusal.env, wait=False)
    deadline = time.monotonic() + WORKER_LIMIT
    while not any(word in worker.log() for word in refusal.says):
        assert time.monotonic() < deadline, f"worker log does not say why:\n{worker.log_tail()}"
        time.sleep(0.2)
    assert " ready." not in worker.log()


@pytest.mark.timeout(90)
def test_result_backend_refusal_names_the_cause(
    redis_fleet: RedisFleet, celery_client: MakeClient
) -> None:
    """A wrong password on the result backend. Celery retries backend errors (the
    failover-friendly ``result_backend_always_retry``), so this is not instant, but it is
    bounded and the cause travels with the error."""
    refusal = wrong_password(redis_fleet)
    client = celery_client(refusal.env)
    started = time.monotonic()
    with pytest.raises(Exception) as failure:  # noqa: PT011  (Celery raises RuntimeError)
        client.send_task("fleet.add", args=(1, 1))
    elapsed = time.monotonic() - started
    assert elapsed < BACKEND_LIMIT, f"took {elapsed:.1f} s to fail"
    assert any(word in chain(failure.value) for word in refusal.says), chain(failure.value)


def test_certificate_without_ip_san_works_once_hostname_check_is_off(
    redis_fleet: RedisFleet, celery_client: MakeClient
) -> None:
    """The documented way out of the IP-SAN trap keeps CA verification on."""
    node = redis_fleet.server("dns-only", cert=redis_fleet.pki.dns_only)
    env = {
        "CELERY_BROKER_URL": envs.url(redis_fleet, node, 0),
        "CELERY_BROKER_SSL_CHECK_HOSTNAME": "false",
        **envs.tls(redis_fleet),
    }
    client = celery_client(env)
    with client.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
    assert client.backend.client.ping()
