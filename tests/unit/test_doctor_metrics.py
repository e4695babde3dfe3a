"""`celery-fleet doctor --metrics-file`: certificate expiry read from real PEM files
(celery_fleet.certfiles), the text exposition (celery_fleet.metrics) parsed by
prometheus_client's parser and accepted by `promtool check metrics`, the atomic write, and
the command's exit status and secrecy, run as the real command."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from celery_fleet import certfiles, metrics
from celery_fleet.doctor import Result
from celery_fleet.doctor_amqp import NOT_CHECKED
from celery_fleet.settings import load
from harness.ports import free_port

SECRET = "s3cret-Pa55word"


def make_cert(path: Path, days: float, *, append: bool = False) -> dt.datetime:
    """A real self-signed certificate valid for ``days``; returns its notAfter (UTC)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"expires in {days} days")])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    with path.open("ab" if append else "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert.not_valid_after_utc


def families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{metric name: {sorted labels: value}}, by prometheus_client's own (strict) parser."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def promtool_accepts(text: str) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed: run .ci/bootstrap.sh", pytrace=False)
    done = subprocess.run(
        [tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- certificate files -----------------------------------------------------------------


def test_not_after_is_the_earliest_certificate_of_a_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    make_cert(bundle, 10)
    soon = make_cert(bundle, 2, append=True)
    make_cert(bundle, 30, append=True)
    assert certfiles.not_after(str(bundle)) == soon


def test_not_after_refuses_a_file_without_a_certificate(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(certfiles.CertificateFileError, match="holds no PEM certificate"):
        certfiles.not_after(str(key))
    with pytest.raises(certfiles.CertificateFileError, match="cannot read"):
        certfiles.not_after(str(tmp_path / "missing.pem"))


def test_paths_are_the_certificates_the_settings_name_never_the_keys(tmp_path: Path) -> None:
    files = {n: tmp_path / n for n in ("ca.pem", "client.pem", "client.key", "backend-ca.pem")}
    for path in files.values():
        path.write_text("only opened by the settings, never parsed here\n")
    env = {
        "CELERY_BROKER_URL": "rediss://app:pw@127.0.0.1:6379/0",
        "CELERY_RESULT_BACKEND": "rediss://app:pw@127.0.0.1:6379/1",
        "CELERY_BROKER_SSL_CA_CERTS": str(files["ca.pem"]),
        "CELERY_BROKER_SSL_CERTFILE": str(files["client.pem"]),
        "CELERY_BROKER_SSL_KEYFILE": str(files["client.key"]),
        "CELERY_REDIS_BACKEND_SSL_CA_CERTS": str(files["backend-ca.pem"]),
    }
    assert certfiles.paths(load(env)) == sorted(
        str(files[n]) for n in ("ca.pem", "client.pem", "backend-ca.pem")
    )


def test_paths_include_the_sentinels_tls_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder\n")
    env = {
        "CELERY_BROKER_URL": "sentinel://app:pw@127.0.0.1:26379/0",
        "CELERY_SENTINEL_MASTER_NAME": "fleet",
        "CELERY_SENTINEL_SSL": "true",
        "CELERY_BROKER_SSL_CA_CERTS": str(ca),
    }
    settings = load(env)
    assert settings["broker_transport_options"]["sentinel_kwargs"]["ssl_ca_certs"] == str(ca)
    assert certfiles.paths(settings) == [str(ca)]


# --- the exposition --------------------------------------------------------------------


def test_a_check_is_ok_only_when_all_its_results_are() -> None:
    results = [
        Result("redis a:1", "ok", "primary"),
        Result("redis a:1", "finding", "replica behind"),
        Result("beat", "ok", "one beat"),
        Result("redis", "error", "no Sentinel answered"),
    ]
    assert metrics.verdicts(results) == {"redis a:1": False, "beat": True, "redis": False}


def test_the_exposition_parses_and_promtool_accepts_it() -> None:
    checks = {"config": True, "worker default@w1": False, 'odd "name" \\ here\n': True}
    expiry = {"/etc/celery-fleet/tls/ca.pem": 1_900_000_000.0}
    text = metrics.exposition(checks, expiry, 1_800_000_000.25)
    parsed = families(text)
    assert parsed[metrics.CHECK_OK] == {
        (("check", "config"),): 1.0,
        (("check", "worker default@w1"),): 0.0,
        (("check", 'odd "name" \\ here\n'),): 1.0,
    }
    assert parsed[metrics.LAST_RUN] == {(): 1_800_000_000.25}
    assert parsed[metrics.CERT_EXPIRY] == {(("path", "/etc/celery-fleet/tls/ca.pem"),): 1.9e9}
    promtool_accepts(text)


def test_no_certificate_family_without_certificates() -> None:
    text = metrics.exposition({"doctor": False}, {}, 1.0)
    assert metrics.CERT_EXPIRY not in text
    promtool_accepts(text)


# --- the atomic write ------------------------------------------------------------------


def test_write_replaces_the_file_world_readable_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    target = tmp_path / "celery-fleet-doctor.prom"
    target.write_text("old\n")
    old_umask = os.umask(0o077)  # the units' UMask=0077: the file must still be 0644
    try:
        metrics.write(target, "new\n")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_failed_write_says_which_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "in-the-way.prom"
    target.mkdir()  # rename onto a folder fails after the temporary file is written
    with pytest.raises(metrics.MetricsFileError, match=r"in-the-way\.prom"):
        metrics.write(target, "text\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_the_file_name_must_end_in_prom(tmp_path: Path) -> None:
    with pytest.raises(metrics.MetricsFileError, match=r"must end in \.prom"):
        metrics.check_path(tmp_path / "doctor.txt")
    with pytest.raises(metrics.MetricsFileError, match="does not exist"):
        metrics.check_path(tmp_path / "missing" / "doctor.prom")


# --- the command -----------------------------------------------------------------------


def doctor(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery_fleet.cli", "doctor", "--env-file", str(env_file), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("CELERY_")},
    )


def test_bad_settings_are_a_red_metric_not_a_failed_run(tmp_path: Path) -> None:
    env_file = tmp_path / "celery.env"
    env_file.write_text(
        f"CELERY_BROKER_URL=rediss://app:{SECRET}@127.0.0.1:6379/0\n"
        f"CELERY_BROKER_SSL_CA_CERTS={tmp_path / 'missing-ca.pem'}\n"
    )
    out = tmp_path / "celery-fleet-doctor.prom"
    done = doctor(env_file, "--metrics-file", str(out))
    assert done.returncode == 0, done.stderr
    assert "CELERY_BROKER_SSL_CA_CERTS" in done.stderr  # the reason, for the journal
    text = out.read_text()
    assert SECRET not in text
    assert SECRET not in done.stdout + done.stderr
    parsed = families(text)
    assert parsed[metrics.CHECK_OK] == {(("check", "doctor"),): 0.0}
    assert set(parsed) == {metrics.CHECK_OK, metrics.LAST_RUN}
    promtool_accepts(text)
    # Without --metrics-file the same run is "cannot check", as before.
    assert doctor(env_file).returncode == 2


def amqp_env_file(tmp_path: Path, ca: Path) -> tuple[Path, int, int]:
    """An AMQP deployment whose broker and result backend ports nobody listens on."""
    broker, backend = free_port(), free_port()
    env_file = tmp_path / "celery.env"
    env_file.write_text(
        f"CELERY_BROKER_URL=amqps://app:{SECRET}@127.0.0.1:{broker}/fleet\n"
        f"CELERY_RESULT_BACKEND=rediss://app:{SECRET}@127.0.0.1:{backend}/1\n"
        f"CELERY_BROKER_SSL_CA_CERTS={ca}\nCELERY_REDIS_BACKEND_SSL_CA_CERTS={ca}\n"
    )
    return env_file, broker, backend


def test_certificates_are_exported_even_when_the_doctor_cannot_check(tmp_path: Path) -> None:
    # The settings load (so the certificate is read), then the doctor cannot go on: the
    # Flower credentials file it was given does not exist.
    ca = tmp_path / "ca.pem"
    not_after = make_cert(ca, 3)
    env_file, _, _ = amqp_env_file(tmp_path, ca)
    out = tmp_path / "celery-fleet-doctor.prom"
    missing = tmp_path / "missing-flower.auth"
    done = doctor(env_file, "--metrics-file", str(out), "--flower-auth-file", str(missing))
    assert done.returncode == 0, done.stderr
    assert "missing-flower.auth" in done.stderr  # the reason, for the journal
    text = out.read_text()
    assert SECRET not in text
    parsed = families(text)
    assert parsed[metrics.CERT_EXPIRY] == {(("path", str(ca)),): not_after.timestamp()}
    assert parsed[metrics.CHECK_OK] == {
        (("check", "doctor"),): 0.0,
        (("check", f"certificate {ca}"),): 1.0,
    }
    promtool_accepts(text)


def test_an_amqp_deployment_down_is_red_in_the_metrics_file(tmp_path: Path) -> None:
    """Every AMQP node and the result backend get their verdicts; nothing answers, so they
    are 0, and the doctor itself ran (1). The real nodes: tests/integration."""
    ca = tmp_path / "ca.pem"
    not_after = make_cert(ca, 3)
    env_file, broker, backend = amqp_env_file(tmp_path, ca)
    out = tmp_path / "celery-fleet-doctor.prom"
    done = doctor(env_file, "--metrics-file", str(out), "--timeout", "2")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    text = out.read_text()
    assert SECRET not in text + done.stdout + done.stderr
    parsed = families(text)
    assert parsed[metrics.CERT_EXPIRY] == {(("path", str(ca)),): not_after.timestamp()}
    checks = {dict(labels)["check"]: value for labels, value in parsed[metrics.CHECK_OK].items()}
    assert checks == {
        "doctor": 1.0,
        f"certificate {ca}": 1.0,
        "config": 1.0,
        f"tls 127.0.0.1:{broker}": 0.0,
        f"amqp 127.0.0.1:{broker}": 0.0,
        "amqp": 0.0,
        f"tls 127.0.0.1:{backend}": 0.0,
        f"auth 127.0.0.1:{backend}": 0.0,
        f"result backend 127.0.0.1:{backend}": 0.0,
        NOT_CHECKED: 1.0,
    }
    promtool_accepts(text)
    # Without --metrics-file: no node reachable at all is "cannot check".
    assert doctor(env_file, "--timeout", "2").returncode == 2


def test_an_unusable_metrics_file_is_refused_before_checking(tmp_path: Path) -> None:
    env_file = tmp_path / "celery.env"
    env_file.write_text("CELERY_BROKER_URL=redis://127.0.0.1:1/0\n")
    done = doctor(env_file, "--metrics-file", str(tmp_path / "doctor.txt"))
    assert done.returncode == 2
    assert "must end in .prom" in done.stderr
    assert done.stdout == ""
