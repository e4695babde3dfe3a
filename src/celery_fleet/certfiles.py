"""The certificate files a deployment's settings point at, and when each one expires.

``paths(settings)`` lists the CA bundles and client certificates of the broker, the result
backend and the Sentinels (``broker_use_ssl``, ``redis_backend_use_ssl`` and
``broker_transport_options["sentinel_kwargs"]``, as ``celery_fleet.settings.load`` builds
them from ``CELERY_BROKER_SSL_*``, ``CELERY_REDIS_BACKEND_SSL_*``, the URLs' ``ssl_*`` query
and the ``*_USE_SSL`` JSON). ``not_after(path)`` reads a PEM file with ``cryptography`` and
returns the earliest notAfter in it: a CA bundle is as good as its first certificate to
expire. Private keys are never opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography import x509

# redis-py's SSLConnection arguments, and the ssl.SSLContext ones py-amqp takes.
CERT_KEYS = ("ssl_ca_certs", "ssl_certfile", "ca_certs", "certfile")


class CertificateFileError(Exception):
    """A file that should hold PEM certificates does not (or cannot be read)."""


def paths(settings: Mapping[str, Any]) -> list[str]:
    """Every certificate file the settings name, each once, sorted."""
    sides: list[Any] = [
        settings.get("broker_use_ssl"),
        settings.get("redis_backend_use_ssl"),
        (settings.get("broker_transport_options") or {}).get("sentinel_kwargs"),
    ]
    found = {
        str(side[key])
        for side in sides
        if isinstance(side, Mapping)
        for key in CERT_KEYS
        if side.get(key)
    }
    return sorted(found)


def not_after(path: str) -> datetime:
    """The earliest notAfter (UTC) of the PEM certificates in ``path``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CertificateFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateFileError(f"{path} holds no PEM certificate") from None
    return min(cert.not_valid_after_utc for cert in certs)
