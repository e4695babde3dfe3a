"""`celery-fleet doctor --metrics-file` against a real Redis (the role's TLS config with
mutual TLS, ACL users): the file holds a verdict per check, the run's time and the expiry
of the CA and client certificate the env file names; prometheus_client's parser and
`promtool check metrics` accept it; no password reaches it; the run exits 0 although
checks are red (the timer stays green, the metrics carry the findings)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from celery_fleet import beat, metrics
from harness import envs
from harness.redis_procs import HOST, RedisFleet, env_without_secrets

DOCTOR = (sys.executable, "-m", "celery_fleet.cli", "doctor")


def test_metrics_file_from_a_real_redis(redis_fleet: RedisFleet, tmp_path: Path) -> None:
    node = redis_fleet.server("mtls", mtls=True)
    pki = redis_fleet.pki
    env = {
        "CELERY_BROKER_URL": envs.url(redis_fleet, node, 0),
        "CELERY_RESULT_BACKEND": envs.url(redis_fleet, node, 1),
        **envs.tls(redis_fleet, "BROKER", client_cert=True),
        **envs.tls(redis_fleet, "REDIS_BACKEND", client_cert=True),
    }
    env_file = tmp_path / "celery.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    # One beat alive (its liveness key, as celery_fleet.beat keeps it): that check is green.
    redis_fleet.client(node).set(beat.KEY_PREFIX + "beat-host", "1", ex=120)
    out = tmp_path / "celery-fleet-doctor.prom"
    started = time.time()
    done = subprocess.run(
        [*DOCTOR, "--env-file", str(env_file), "--timeout", "2", "--metrics-file", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**env_without_secrets(), "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no worker answered" in done.stdout  # red, and still exit 0
    text = out.read_text()
    assert out.stat().st_mode & 0o777 == 0o644
    assert redis_fleet.secrets.app not in text + done.stdout + done.stderr

    samples: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = next(iter(sample.labels.values()), "")
            samples.setdefault(sample.name, {})[label] = sample.value
    port = f"{HOST}:{node.port}"
    checks = samples[metrics.CHECK_OK]
    assert checks[f"redis {port}"] == 1
    assert checks[f"auth {port}"] == 1
    # The harness' certificates live 2 days: the handshake works, the expiry is a finding.
    assert checks[f"tls {port}"] == 0
    assert "certificate expires in 1 days (renew: below 30)" in done.stdout
    assert checks["beat"] == 1
    assert checks["workers"] == 0
    assert checks["doctor"] == 1
    assert checks[f"certificate {pki.ca}"] == 1
    assert started <= samples[metrics.LAST_RUN][""] <= time.time()
    expiry = samples[metrics.CERT_EXPIRY]
    for path in (pki.ca, pki.client.cert):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        assert expiry[str(path)] == cert.not_valid_after_utc.timestamp()
    assert str(pki.client.key) not in expiry

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run .ci/bootstrap.sh", pytrace=False)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
