"""`celery-fleet doctor` with RabbitMQ as the broker: a real TLS RabbitMQ node
(tests/harness/rabbitmq.py), a real TLS Redis as the result backend, a real worker.

The doctor runs as the timer's unit runs it (``celery-fleet doctor --env-file``, its own
process). The harness' certificates live 2 days, so every ``tls`` check is a finding (expiry
below 30 days): the healthy run exits 1 with those findings only, and everything else ok.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client.parser import text_string_to_metric_families

from celery_fleet import doctor
from celery_fleet.doctor_amqp import NOT_CHECKED
from harness import cli, envs
from harness.pki import Pki
from harness.ports import free_port
from harness.rabbitmq import APP_USER, HOST, VHOST, RabbitNode
from harness.redis_procs import RedisFleet, env_without_secrets
from harness.worker import StartWorker

INTEGRATION = Path(__file__).resolve().parent
EXPIRY = "certificate expires in 1 days (renew: below 30)"
WRONG_PASSWORD = "not-the-app-password-4711"


def node_url(port: int, password: str) -> str:
    return f"amqps://{APP_USER}:{quote(password, safe='')}@{HOST}:{port}/{VHOST}"


def environment(rabbit: RabbitNode, fleet: RedisFleet) -> dict[str, str]:
    results = fleet.server("results")
    return {
        "CELERY_BROKER_URL": node_url(rabbit.port, rabbit.password),
        "CELERY_RESULT_BACKEND": envs.url(fleet, results, 1),
        "CELERY_BROKER_SSL_CA_CERTS": str(fleet.pki.ca),
        "CELERY_REDIS_BACKEND_SSL_CA_CERTS": str(fleet.pki.ca),
    }


def run_doctor(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str, Any]:
    """Exit status, all output, and the --json results (None when there are none)."""
    env_file = cli.write_env(tmp_path / "celery.env", env)
    process_env = {**env_without_secrets(), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = cli.run(
        "doctor", "--env-file", str(env_file), "--timeout", "5", "--json", *args, env=process_env
    )
    assert "Traceback" not in done.stderr, done.stderr
    parsed = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, done.stdout + done.stderr, parsed


def by_check(results: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for r in results:
        out.setdefault(r["check"], []).append(r)
    return out


def test_doctor_checks_rabbitmq_backend_and_a_real_worker(
    rabbit: RabbitNode,
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    tmp_path: Path,
    record_property: Any,
) -> None:
    env = environment(rabbit, redis_fleet)
    worker = start_worker(env, app="amqp_app", pythonpath=[INTEGRATION])
    results_node = next(n for n in redis_fleet.nodes if n.kind == "redis")
    amqp_at, redis_at = f"{HOST}:{rabbit.port}", f"{HOST}:{results_node.port}"
    metrics_file = tmp_path / "celery-fleet-doctor.prom"

    began = time.monotonic()
    status, output, _ = run_doctor(
        tmp_path, env, "--expect-workers", worker.nodename, "--metrics-file", str(metrics_file)
    )
    record_property("doctor --metrics-file over amqps (s)", round(time.monotonic() - began, 1))
    assert status == 0, output  # the file was written
    status, output, results = run_doctor(tmp_path, env, "--expect-workers", worker.nodename)
    checks = by_check(results)
    assert rabbit.password not in output
    assert redis_fleet.secrets.app not in output

    not_ok = [r for r in results if r["status"] != "ok"]
    assert not_ok == [
        {"check": f"tls {amqp_at}", "status": "finding", "detail": f"TLSv1.3, {EXPIRY}"},
        {"check": f"tls {redis_at}", "status": "finding", "detail": f"TLSv1.3, {EXPIRY}"},
    ], output
    assert status == 1  # the two expiry findings only
    assert checks[f"amqp {amqp_at}"][0]["detail"] == f"login as {APP_USER} on vhost 'fleet'"
    assert checks[f"worker {worker.nodename}"][0]["detail"] == "pong"
    assert checks[f"auth {redis_at}"][0]["detail"] == "refuses unauthenticated clients"
    # The role's ACL gives the app user no INFO: authenticated (PING) is what is checked.
    backend = checks[f"result backend {redis_at}"][0]["detail"]
    assert backend.startswith("app user authenticated"), backend
    assert "beat liveness" in checks[NOT_CHECKED][0]["detail"]
    assert "config" in checks
    # Nothing of the Redis broker's checks: no beat, no Sentinel, no replication.
    assert not {"beat", "replication", "sentinel agreement"} & set(checks)

    text = metrics_file.read_text()
    assert rabbit.password not in text
    samples = {
        tuple(s.labels.values()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[(f"amqp {amqp_at}",)] == 1
    assert samples[(f"tls {amqp_at}",)] == 0  # expiry below 30 days
    assert samples[(f"worker {worker.nodename}",)] == 1
    assert samples[("doctor",)] == 1
    assert samples[(str(redis_fleet.pki.ca),)] > time.time()  # the CA file's expiry

    # Heartbeats through the broker (what check_workers falls back on for a busy worker)
    # arrive over AMQP too.
    dep = doctor.Deployment(env, 5.0)
    from celery import Celery

    app = Celery("heartbeats", set_as_current=False)
    app.conf.update(dep.settings)
    began = time.monotonic()
    assert worker.nodename in doctor._heartbeats(app, {worker.nodename}, 10.0)
    record_property("first heartbeat over amqps (s)", round(time.monotonic() - began, 1))


def test_wrong_app_password_is_a_failed_login_without_the_password(
    rabbit: RabbitNode, redis_fleet: RedisFleet, tmp_path: Path
) -> None:
    env = environment(rabbit, redis_fleet)
    env["CELERY_BROKER_URL"] = node_url(rabbit.port, WRONG_PASSWORD)
    status, output, results = run_doctor(tmp_path, env)
    assert status == 2, output
    checks = by_check(results)
    login = checks[f"amqp {HOST}:{rabbit.port}"][0]
    assert login["status"] == "finding"
    assert f"login as {APP_USER} on vhost 'fleet' failed" in login["detail"]
    assert "ACCESS_REFUSED" in login["detail"]
    assert checks["amqp"][0]["status"] == "error"
    assert WRONG_PASSWORD not in output
    assert rabbit.password not in output


def test_a_ca_that_did_not_sign_the_node_fails_verification(
    rabbit: RabbitNode, redis_fleet: RedisFleet, pki: Pki, tmp_path: Path
) -> None:
    env = environment(rabbit, redis_fleet)
    env["CELERY_BROKER_SSL_CA_CERTS"] = str(pki.other_ca)
    status, output, results = run_doctor(tmp_path, env)
    assert status == 2, output
    checks = by_check(results)
    where = f"{HOST}:{rabbit.port}"
    assert checks[f"tls {where}"][0]["status"] == "finding"
    assert "CERTIFICATE_VERIFY_FAILED" in checks[f"tls {where}"][0]["detail"]
    assert "CERTIFICATE_VERIFY_FAILED" in checks[f"amqp {where}"][0]["detail"]
    assert rabbit.password not in output


def test_a_node_down_is_a_finding_and_all_down_an_error(
    rabbit: RabbitNode, redis_fleet: RedisFleet, tmp_path: Path
) -> None:
    """A port nothing listens on is what a stopped node looks like to a client."""
    env = environment(rabbit, redis_fleet)
    down = free_port()
    env["CELERY_BROKER_URL"] = (
        f"{node_url(down, rabbit.password)};amqps://{HOST}:{rabbit.port}/{VHOST}"
    )
    status, output, results = run_doctor(tmp_path, env)
    checks = by_check(results)
    assert status == 1, output
    assert checks[f"amqp {HOST}:{down}"][0]["status"] == "finding"
    assert "failed" in checks[f"amqp {HOST}:{down}"][0]["detail"]
    assert checks[f"amqp {HOST}:{rabbit.port}"][0]["status"] == "ok"
    assert "amqp" not in checks
    assert rabbit.password not in output

    env["CELERY_BROKER_URL"] = node_url(down, rabbit.password)
    status, output, results = run_doctor(tmp_path, env)
    assert status == 2, output
    checks = by_check(results)
    assert checks["amqp"][0]["status"] == "error"
    assert "workers not checked" in checks["amqp"][0]["detail"]
    assert "workers" not in checks
    assert rabbit.password not in output
