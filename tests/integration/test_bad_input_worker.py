"""Bad input stops a real worker at start, with the variable named, before any connection.

The unit tests (tests/unit/test_bad_input.py) cover every check of the settings module;
this proves the same errors reach an operator through ``celery worker`` itself: the
process exits at once, non-zero, and its output names the variable, instead of a worker
that starts and fails deep inside Kombu at the first publish.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.worker import StartWorker

NOWHERE = "127.0.0.1:1"  # nothing listens: a worker that got this far would hang retrying


def bad_inputs(tmp: Path) -> dict[str, tuple[dict[str, str], str]]:
    """id -> (env, variable the error must name)."""
    ca = tmp / "ca.crt"
    ca.write_text("not parsed: the worker must stop before\n")
    key = tmp / "client.key"
    key.write_text("placeholder\n")
    key.chmod(0o600)
    rediss = f"rediss://app:pw@{NOWHERE}/0"
    return {
        "ssl-options-on-redis-url": (
            {"CELERY_BROKER_URL": f"redis://:pw@{NOWHERE}/0?ssl_cert_reqs=required"},
            "CELERY_BROKER_URL",
        ),
        "sentinel-hosts-joined-by-commas": (
            {
                "CELERY_BROKER_URL": "sentinel://127.0.0.1:1,127.0.0.1:2",
                "CELERY_SENTINEL_MASTER_NAME": "fleet",
            },
            "CELERY_BROKER_URL",
        ),
        "sentinel-without-master-name": (
            {"CELERY_BROKER_URL": "sentinel://127.0.0.1:1;sentinel://127.0.0.1:2"},
            "CELERY_SENTINEL_MASTER_NAME",
        ),
        "unknown-cert-reqs": (
            {"CELERY_BROKER_URL": rediss, "CELERY_BROKER_SSL_CERT_REQS": "CERT_MAYBE"},
            "CELERY_BROKER_SSL_CERT_REQS",
        ),
        "missing-ca-file": (
            {"CELERY_BROKER_URL": rediss, "CELERY_BROKER_SSL_CA_CERTS": str(tmp / "nope.crt")},
            "CELERY_BROKER_SSL_CA_CERTS",
        ),
        "key-without-cert": (
            {
                "CELERY_BROKER_URL": rediss,
                "CELERY_BROKER_SSL_CA_CERTS": str(ca),
                "CELERY_BROKER_SSL_KEYFILE": str(key),
            },
            "CELERY_BROKER_SSL_KEYFILE",
        ),
        "not-a-number": (
            {"CELERY_BROKER_URL": rediss, "CELERY_VISIBILITY_TIMEOUT": "1h"},
            "CELERY_VISIBILITY_TIMEOUT",
        ),
        "result-backend-use-ssl-typo": (
            {"CELERY_BROKER_URL": rediss, "CELERY_RESULT_BACKEND_USE_SSL": "true"},
            "CELERY_REDIS_BACKEND_USE_SSL",  # the suggestion, next to the wrong name
        ),
    }


CASES = [
    "ssl-options-on-redis-url",
    "sentinel-hosts-joined-by-commas",
    "sentinel-without-master-name",
    "unknown-cert-reqs",
    "missing-ca-file",
    "key-without-cert",
    "not-a-number",
    "result-backend-use-ssl-typo",
]


@pytest.mark.parametrize("case", CASES)
def test_worker_refuses_bad_input_at_start(
    case: str, tmp_path: Path, start_worker: StartWorker
) -> None:
    env, variable = bad_inputs(tmp_path)[case]
    worker = start_worker(env, wait=False)
    started = time.monotonic()
    code = worker.wait(timeout=30)
    elapsed = time.monotonic() - started
    log = worker.log()
    assert code != 0, log
    assert variable in log, log
    assert "SettingsError" in log, log
    assert elapsed < 15, f"took {elapsed:.1f} s to fail"
