"""A CA rollover under load (runs after test_partition.py, before test_restore.py; the nodes
keep the inventory's settings). `playbooks/ca-rollover.yml` runs its three steps, each a
controller step and a converge, while a writer appends through the Sentinels with a new TLS
connection per write (every write is a handshake that verifies the node's certificate, and
the node verifies the writer's). docs/operations.md, "Rolling the CA over".

- begin: every node and Sentinel trusts the old and the next CA (their ca.pem is the
  bundle) and still serves its old certificate;
- switch: every node and Sentinel serves a certificate of the new CA (a client that trusts
  only the old CA is refused: the certificates really changed), and a client certificate of
  the old CA is still let in;
- finish: the bundle is the new CA alone and that old client certificate is refused.

Throughout: no acknowledged write lost, no write refused for TLS, no password in the output.
"""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import fleet
import pytest
import redis
from test_ha import MASTER, Writer, primaries_seen

NODES = fleet.hosts_in("redis")
PORTS = (6379, 26379)  # each node's Redis and Sentinel
ROLLOVER = fleet.PROJECT_DIR / "playbooks" / "ca-rollover.yml"
PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


def verified_with(node: str, port: int, ca: Path) -> bool:
    """The TLS handshake with ``node:port`` verifies against ``ca`` alone (the fleet's
    current client certificate presented)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(*fleet.client_cert("celery"))
    with socket.create_connection((fleet.address(node), port), timeout=5) as sock:
        try:
            with context.wrap_socket(sock, server_hostname=fleet.address(node)):
                return True
        except ssl.SSLCertVerificationError:
            return False


def app_client(node: str, identity: Path) -> redis.Redis:
    """The app user on ``node``, presenting ``identity`` (one PEM file with the client
    certificate and its key, so that a host's copy is replaced in one rename)."""
    gv = fleet.group_vars()
    return redis.Redis(
        host=fleet.address(node),
        port=6379,
        username=gv.get("redis_app_user", "celery"),
        password=gv["redis_app_password"],
        ssl=True,
        ssl_ca_certs=fleet.ca_file(),
        ssl_certfile=str(identity),
        socket_timeout=5,
        socket_connect_timeout=5,
    )


def deploy_identity(identity: Path) -> None:
    """What a converge does on a worker: the controller's current celery certificate and key
    in place of the old ones (one file, renamed over it)."""
    cert, key = fleet.client_cert("celery")
    staged = identity.with_suffix(".new")
    staged.write_text(Path(cert).read_text() + Path(key).read_text())
    staged.replace(identity)


def logs_in_with(node: str, identity: Path) -> bool:
    """The app user logs in to ``node`` with this client certificate (TLS 1.3: the node's
    verdict on it arrives with the first reply, not the handshake)."""
    client = app_client(node, identity)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def deployed_bundle(node: str) -> str:
    return fleet.docker("exec", node, "cat", "/etc/redis/tls/ca.pem")


@pytest.mark.timeout(4 * fleet.CONVERGE_TEST_TIMEOUT)
def test_the_ca_rolls_over_in_three_steps_while_clients_keep_writing(tmp_path: Path) -> None:
    pki = fleet.pki_dir()
    old_ca = tmp_path / "old-ca.pem"
    shutil.copy(pki / "ca" / "ca.pem", old_ca)
    old_identity = tmp_path / "old-celery.pem"
    deploy_identity(old_identity)
    assert all(verified_with(n, p, old_ca) for n in NODES for p in PORTS)
    # The writer's certificate is replaced after the switch's converge, as the workers' is
    # by that converge (role celery), not while the controller is issuing it.
    identity = tmp_path / "writer.pem"
    deploy_identity(identity)
    writer = Writer("mol:ha:ca-rollover", lambda node: app_client(node, identity))
    writer.start()
    try:
        for step in ("begin", "switch", "finish"):
            result = fleet.converge(["-e", f"pki_rollover_step={step}"], playbook=ROLLOVER)
            assert result.returncode == 0, result.stdout[-4000:]
            for password in fleet.passwords():
                assert password not in result.stdout + result.stderr
            bundle = (pki / "ca-bundle.pem").read_text()
            assert all(deployed_bundle(n) == bundle for n in NODES), step
            new_ca = pki / "ca" / "ca.pem"
            if step == "begin":
                assert bundle.count(PEM_BEGIN) == 2
                assert all(verified_with(n, p, old_ca) for n in NODES for p in PORTS)
            elif step == "switch":
                assert bundle.count(PEM_BEGIN) == 2
                assert new_ca.read_text() != old_ca.read_text()
                assert all(verified_with(n, p, new_ca) for n in NODES for p in PORTS)
                assert not any(verified_with(n, p, old_ca) for n in NODES for p in PORTS)
                assert all(logs_in_with(n, old_identity) for n in NODES)
                deploy_identity(identity)
            else:
                assert bundle.strip() == new_ca.read_text().strip()
                assert not (pki / "ca-previous").exists()
                assert len(list(pki.glob("ca-retired-*.pem"))) == 1
                assert not any(logs_in_with(n, old_identity) for n in NODES)
                assert all(logs_in_with(n, identity) for n in NODES)
    finally:
        writer.stop.set()
        writer.join(30)

    primary = next(a for a in primaries_seen().values() if a)
    node = next(n for n in NODES if fleet.address(n) == primary)
    stored = {int(v) for v in fleet.app(node).lrange("mol:ha:ca-rollover", 0, -1)}
    lost = [v for v in writer.acked if v not in stored]
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:20]}"
    assert len(writer.acked) > 100, len(writer.acked)
    tls = [f for f in writer.failures if "SSL" in f or "certificate" in f.lower()]
    assert not tls, tls[:5]
    print(
        f"CA rollover: {len(writer.acked)} writes, longest gap {writer.longest_gap():.1f} s, "
        f"{writer.errors} retried: {writer.failures[:5]}"
    )
    fleet.wait_for_quorum(NODES, MASTER, "the CA rollover")
