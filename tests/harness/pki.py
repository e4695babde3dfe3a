"""A throwaway certificate authority, generated at test time (no key is ever committed).

``Pki.create(folder)`` writes a CA, a server certificate for loopback (SANs ``localhost``,
``127.0.0.1`` and ``::1``: Sentinel hands out IP addresses and redis-py 6+ checks them), a
client certificate for mutual TLS, a second, unrelated CA with its own server certificate
(for wrong-CA tests) and an expired server certificate. Private keys are written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Every file of the throwaway PKI; paths are absolute."""

    folder: Path
    ca: Path  # the CA that signed server/client/expired
    server: CertPair  # serverAuth + clientAuth (Redis uses it for replication as a client)
    client: CertPair  # clientAuth only: what an app presents for mutual TLS
    expired: CertPair  # signed by ``ca`` but no longer valid
    other_ca: Path  # unrelated CA: trusting it must make every handshake fail
    other_server: CertPair  # a server certificate signed by ``other_ca``
    dns_only: CertPair  # SAN localhost only: what a Sentinel-announced IP fails against

    @classmethod
    def create(cls, folder: Path) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        now = dt.datetime.now(dt.UTC)
        ca_key, ca_cert = _ca("celery-fleet test CA", now)
        other_key, other_cert = _ca("unrelated test CA", now)
        ca = _write_cert(folder / "ca.crt", ca_cert)
        other_ca = _write_cert(folder / "other-ca.crt", other_cert)
        server = _leaf(folder, "server", ca_key, ca_cert, now, server=True)
        client = _leaf(folder, "client", ca_key, ca_cert, now, server=False)
        expired = _leaf(
            folder,
            "expired",
            ca_key,
            ca_cert,
            now - dt.timedelta(days=30),
            server=True,
            days=1,
        )
        other_server = _leaf(folder, "other-server", other_key, other_cert, now, server=True)
        dns_only = _leaf(folder, "dns-only", ca_key, ca_cert, now, server=True, ips=())
        return cls(folder, ca, server, client, expired, other_ca, other_server, dns_only)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "celery-fleet tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca(common_name: str, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    folder: Path,
    stem: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    start: dt.datetime,
    *,
    server: bool,
    days: int = 2,
    ips: tuple[str, ...] = LOOPBACK_IPS,
) -> CertPair:
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{stem}.test"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in LOOPBACK_NAMES]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return CertPair(
        cert=_write_cert(folder / f"{stem}.crt", cert),
        key=_write_key(folder / f"{stem}.key", key),
    )


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    path.chmod(0o600)
    return path
