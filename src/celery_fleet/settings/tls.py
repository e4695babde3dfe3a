"""TLS for one side (broker or result backend): ``<side>_SSL*``, the URL's ``ssl_*`` query
and Celery's own ``*_USE_SSL`` JSON dict, checked once and handed to redis-py."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .. import urls
from .parse import SettingsError, check_file, parse_bool, parse_json

log = logging.getLogger("celery_fleet.settings")

CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}


@dataclass(frozen=True)
class Tls:
    """TLS options for one side (broker or result backend)."""

    enabled: bool
    cert_reqs: str = "required"
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True

    def redis_kwargs(self) -> dict[str, Any]:
        """The ``ssl_*`` keyword arguments of redis-py's SSLConnection."""
        return {
            "ssl_cert_reqs": CERT_REQS[self.cert_reqs],
            "ssl_ca_certs": self.ca_certs,
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_check_hostname": self.check_hostname,
        }


def tls_for(env: Mapping[str, str], prefix: str, url: urls.RedisUrl, inherit: Tls | None) -> Tls:
    """TLS for one side from ``<prefix>_SSL*``, the URL's ssl_* query and the JSON dict."""
    side = {
        "ssl_" + k[len(prefix) + 5 :].lower(): v
        for k, v in env.items()
        if k.startswith(prefix + "_SSL_")
    }
    use_ssl_var = prefix + "_USE_SSL"
    if env.get(use_ssl_var):
        for key, value in parse_json(use_ssl_var, env[use_ssl_var], dict).items():
            key = "ssl_" + key.removeprefix("ssl_")
            side.setdefault(key, str(value))
    for key, value in url.ssl_query.items():
        if key in side and side[key] != value:
            raise SettingsError(
                f"{prefix}_{key.upper()}",
                f"conflicts with {key}={value!r} in the URL; keep one of the two",
            )
        side[key] = value

    enabled_var = f"{prefix}_SSL"
    if url.scheme == "rediss":
        enabled = True
    elif url.scheme == "sentinel":
        default = inherit.enabled if inherit else True
        raw = env.get(enabled_var)
        enabled = parse_bool(enabled_var, raw) if raw is not None else default
    else:
        enabled = False
    if not enabled:
        if side and url.scheme in ("redis", "socket"):
            names = ", ".join(sorted(f"{prefix}_{k.upper()}" for k in side))
            raise SettingsError(
                names.split(", ")[0],
                f"TLS options ({names}) with a plaintext {url.scheme}:// URL; use rediss:// "
                "(or sentinel:// with TLS), or remove them",
            )
        return Tls(enabled=False)

    if inherit is not None and inherit.enabled and not side:
        return inherit  # one set of certificates for both sides, checked once
    base = Tls(enabled=True)
    raw_reqs = side.pop("ssl_cert_reqs", None)
    if raw_reqs is not None:
        reqs = raw_reqs.strip().lower().removeprefix("ssl.").removeprefix("cert_")
        if reqs not in CERT_REQS:
            raise SettingsError(
                f"{prefix}_SSL_CERT_REQS",
                f"{raw_reqs!r} is not a certificate requirement; use required (default), "
                "or optional/none only if you accept man-in-the-middle attacks",
            )
        base = replace(base, cert_reqs=reqs)
    raw_check = side.pop("ssl_check_hostname", None)
    fields = {k.removeprefix("ssl_"): v for k, v in side.items()}
    unknown = set(fields) - {"ca_certs", "certfile", "keyfile"}
    if unknown:
        bad = f"{prefix}_SSL_{sorted(unknown)[0].upper()}"
        raise SettingsError(
            bad,
            "is not a TLS option; use _CA_CERTS, _CERTFILE, _KEYFILE, "
            "_CERT_REQS or _CHECK_HOSTNAME",
        )
    tls = replace(
        base,
        ca_certs=fields.get("ca_certs", base.ca_certs),
        certfile=fields.get("certfile", base.certfile),
        keyfile=fields.get("keyfile", base.keyfile),
    )
    if raw_check is not None:
        tls = replace(tls, check_hostname=parse_bool(f"{prefix}_SSL_CHECK_HOSTNAME", raw_check))
    if tls.cert_reqs == "none":
        if raw_check is not None and tls.check_hostname:
            raise SettingsError(
                f"{prefix}_SSL_CHECK_HOSTNAME",
                "hostname checking needs certificate verification; drop CERT_REQS=none",
            )
        tls = replace(tls, check_hostname=False)
    if tls.cert_reqs != "required":
        log.warning(
            "%s_SSL_CERT_REQS=%s: the server certificate is %s, so anyone on the path can "
            "impersonate the server and read every task and result (man-in-the-middle). Use "
            "required with %s_SSL_CA_CERTS unless you accept that risk.",
            prefix,
            tls.cert_reqs,
            "not verified" if tls.cert_reqs == "none" else "verified only if presented",
            prefix,
        )
    if tls.keyfile and not tls.certfile:
        raise SettingsError(
            f"{prefix}_SSL_KEYFILE",
            f"a client key without a certificate; set {prefix}_SSL_CERTFILE too",
        )
    for attr in ("ca_certs", "certfile", "keyfile"):
        check_file(f"{prefix}_SSL_{attr.upper()}", getattr(tls, attr))
    return tls
