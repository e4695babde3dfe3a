"""Real ``redis-server`` and ``redis-sentinel`` processes on loopback, for tests.

A ``RedisFleet`` owns a folder and every process it starts there. Data nodes are TLS-only
by default (``port 0``, ``tls-port N``, TLS 1.2+, ``tls-replication yes``), with ACL users
(``default`` off; ``app`` without ``@dangerous``; ``replicator``; ``sentinel``; ``admin``
for the harness itself) or a single ``requirepass``. Sentinels run on TLS with their own
``requirepass`` and authenticate to the data nodes as the ``sentinel`` user.

Readiness is always asked of the process (PING over TLS with redis-py, replication link
up, Sentinels that see each other), never waited for with a fixed sleep. Ports are picked
at random and a start that loses the race for its port is retried on a new one.

The same helpers serve the integration, fault and benchmark suites: ``primary()``,
``kill(node)``, ``stop(node)``, ``restart(node)``, ``wait_for_failover(old)``.
"""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from .pki import CertPair, Pki
from .ports import free_port

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
T = TypeVar("T")


class Listen(enum.Enum):
    """How a data node accepts clients."""

    TLS = "tls"  # port 0, tls-port N: the production form
    TCP = "tcp"  # plaintext port N (only for the redis:// URL form)
    UNIX = "unix"  # unix socket only, no TCP port at all


class Auth(enum.Enum):
    ACL = "acl"  # ACL users, default user off
    REQUIREPASS = "requirepass"  # the default user with one password


@dataclass(frozen=True)
class Secrets:
    """Every password of a fleet, random per fleet."""

    app: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    admin: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    replication: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    sentinel_user: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    sentinels: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    sentinel_app: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    sentinel_peer: str = field(default_factory=lambda: secrets.token_urlsafe(18))


# Least privilege, as the roles deploy it. The app user is what Celery gets.
APP_USER = "app"
APP_ACL = "~* &* +@all -@dangerous"
# Sentinels with ACL users: what a client (redis-py's Sentinel) needs to find the primary.
SENTINEL_APP_USER = "sentinel-app"
SENTINEL_APP_ACL = (
    "resetchannels &__sentinel__:* -@all +ping +hello +auth +client|setname "
    "+sentinel|masters +sentinel|master +sentinel|get-master-addr-by-name "
    "+sentinel|sentinels +sentinel|replicas +sentinel|slaves +subscribe"
)
SENTINEL_ACL = (
    "allchannels +multi +slaveof +ping +exec +subscribe +config|rewrite +role "
    "+publish +info +client|setname +client|kill +script|kill"
)


class ProcessError(RuntimeError):
    """A process did not start or did not become ready; the message carries its log."""


@dataclass
class Node:
    """One redis-server or redis-sentinel process (alive or not) and how to reach it."""

    name: str
    kind: str  # "redis" | "sentinel"
    folder: Path
    listen: Listen
    port: int  # 0 for a unix-socket-only node
    mtls: bool
    auth: Auth
    unixsocket: Path | None = None
    cert: CertPair | None = None  # the server certificate; None: the PKI's server cert
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.folder / f"{self.kind}.conf"

    @property
    def logfile(self) -> Path:
        return self.folder / f"{self.kind}.log"

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def __repr__(self) -> str:  # no secrets, no paths: short in assertion messages
        where = self.unixsocket if self.listen is Listen.UNIX else f"{HOST}:{self.port}"
        state = "up" if self.alive else "down"
        return f"<{self.kind} {self.name} {self.listen.value} {where} {state}>"


class RedisFleet:
    """Starts, stops and inspects Redis processes under one folder; ``close()`` kills all."""

    def __init__(self, folder: Path, pki: Pki, secrets_: Secrets | None = None) -> None:
        self.folder = folder
        self.pki = pki
        self.secrets = secrets_ or Secrets()
        self.nodes: list[Node] = []
        self._scratch: list[Path] = []
        self.master_name = "fleet"
        folder.mkdir(parents=True, exist_ok=True)

    # --- data nodes ------------------------------------------------------------------
    def server(
        self,
        name: str,
        *,
        listen: Listen = Listen.TLS,
        auth: Auth = Auth.ACL,
        mtls: bool = False,
        replica_of: Node | None = None,
        cert: CertPair | None = None,
        extra: str = "",
    ) -> Node:
        """Start a redis-server and wait until it answers (and replicates, for a replica)."""
        node = Node(
            name=name,
            kind="redis",
            folder=self.folder / name,
            listen=listen,
            port=0,
            mtls=mtls,
            auth=auth,
            cert=cert,
        )
        node.folder.mkdir(parents=True, exist_ok=True)
        node.folder.chmod(0o700)
        if listen is Listen.UNIX:
            # sun_path holds 107 bytes: pytest's tmp folders can be longer than that.
            short = Path(tempfile.mkdtemp(prefix="cf-sock-"))
            self._scratch.append(short)
            node.unixsocket = short / "redis.sock"

        def write_conf() -> None:
            node.conf.write_text(self._server_conf(node, replica_of, extra))
            node.conf.chmod(0o600)

        self._start(node, write_conf)
        if replica_of is not None:
            self.wait_for(
                lambda: self.info(node, "replication").get("master_link_status") == "up",
                f"{node!r} to sync from {replica_of!r}",
            )
        return node

    def _server_conf(self, node: Node, replica_of: Node | None, extra: str) -> str:
        s = self.secrets
        lines = [
            "daemonize no",
            f"dir {node.folder}",
            f"logfile {node.logfile}",
            'save ""',
            "appendonly no",
            "repl-diskless-sync-delay 0",  # a replica syncs at once, not after 5 s
            "protected-mode yes",
            f"bind {HOST}",
        ]
        if node.listen is Listen.TLS:
            lines += ["port 0", f"tls-port {node.port}", *self._tls_lines(node)]
        elif node.listen is Listen.TCP:
            lines += [f"port {node.port}"]
        else:
            lines += ["port 0", f"unixsocket {node.unixsocket}", "unixsocketperm 700"]
        if node.auth is Auth.ACL:
            lines += [
                "user default off",
                f"user admin on >{s.admin} ~* &* +@all",
                f"user {APP_USER} on >{s.app} {APP_ACL}",
                f"user replicator on >{s.replication} +psync +replconf +ping",
                f"user sentinel on >{s.sentinel_user} {SENTINEL_ACL}",
                "masteruser replicator",
                f"masterauth {s.replication}",
            ]
        else:
            lines += [f"requirepass {s.app}", f"masterauth {s.app}"]
        if replica_of is not None:
            lines += [f"replicaof {HOST} {replica_of.port}"]
        return "\n".join([*lines, extra, ""])

    def _tls_lines(self, node: Node) -> list[str]:
        cert = node.cert or self.pki.server
        return [
            f"tls-cert-file {cert.cert}",
            f"tls-key-file {cert.key}",
            f"tls-ca-cert-file {self.pki.ca}",
            f"tls-auth-clients {'yes' if node.mtls else 'no'}",
            "tls-replication yes",
            'tls-protocols "TLSv1.2 TLSv1.3"',
        ]

    # --- Sentinels ---------------------------------------------------------------------
    def sentinels(
        self,
        primary: Node,
        *,
        count: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 6000,
        mtls: bool = False,
        auth: Auth = Auth.REQUIREPASS,
    ) -> list[Node]:
        """Start ``count`` Sentinels monitoring ``primary``; wait until they see each other
        and every replica, so that a failover can happen as soon as this returns.
        ``auth``: one ``requirepass``, or ACL users (``default`` off, ``admin`` for the
        harness, ``sentinel-app`` for clients, ``sentinel-peer`` between Sentinels)."""
        started = []
        for i in range(count):
            node = Node(
                name=f"sentinel-{i + 1}",
                kind="sentinel",
                folder=self.folder / f"sentinel-{i + 1}",
                listen=Listen.TLS,
                port=0,
                mtls=mtls,
                auth=auth,
            )
            node.folder.mkdir(parents=True, exist_ok=True)
            node.folder.chmod(0o700)

            def write_conf(node: Node = node) -> None:
                node.conf.write_text(
                    self._sentinel_conf(node, primary, quorum, down_after_ms, failover_timeout_ms)
                )
                node.conf.chmod(0o600)

            self._start(node, write_conf)
            started.append(node)
        replicas = len(self.replicas_of(primary))

        def settled() -> bool:
            for node in started:
                master: Any = self._sentinel_client(node).sentinel_master(self.master_name)
                if int(master["num-other-sentinels"]) < count - 1:
                    return False
                if int(master["num-slaves"]) < replicas:
                    return False
            return True

        self.wait_for(settled, f"{count} Sentinels to discover each other and {replicas} replicas")
        return started

    def _sentinel_conf(
        self, node: Node, primary: Node, quorum: int, down_after_ms: int, failover_ms: int
    ) -> str:
        s, name = self.secrets, self.master_name
        lines = [
            "daemonize no",
            f"dir {node.folder}",
            f"logfile {node.logfile}",
            f"bind {HOST}",
            "port 0",
            f"tls-port {node.port}",
            *self._tls_lines(node),
            *(
                [
                    "user default off",
                    f"user admin on >{s.sentinels} allchannels +@all",
                    f"user {SENTINEL_APP_USER} on >{s.sentinel_app} {SENTINEL_APP_ACL}",
                    f"user sentinel-peer on >{s.sentinel_peer} allchannels +@all",
                    "sentinel sentinel-user sentinel-peer",
                    f"sentinel sentinel-pass {s.sentinel_peer}",
                ]
                if node.auth is Auth.ACL
                else [f"requirepass {s.sentinels}"]
            ),
            f"sentinel monitor {name} {HOST} {primary.port} {quorum}",
            f"sentinel down-after-milliseconds {name} {down_after_ms}",
            f"sentinel failover-timeout {name} {failover_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        if primary.auth is Auth.ACL:
            lines += [
                f"sentinel auth-user {name} sentinel",
                f"sentinel auth-pass {name} {s.sentinel_user}",
            ]
        else:
            lines += [f"sentinel auth-pass {name} {s.app}"]
        return "\n".join([*lines, ""])

    # --- process control ---------------------------------------------------------------
    def _start(
        self, node: Node, write_conf: Callable[[], None], *, keep_port: bool = False
    ) -> None:
        binary = "redis-sentinel" if node.kind == "sentinel" else "redis-server"
        attempts = 1 if keep_port else 5
        for attempt in range(attempts):
            if node.listen is not Listen.UNIX and not keep_port:
                node.port = free_port(HOST)
            if not keep_port:
                write_conf()
                node.logfile.unlink(missing_ok=True)
            node.proc = subprocess.Popen(
                [binary, str(node.conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if node not in self.nodes:
                self.nodes.append(node)
            try:
                self.wait_for(lambda: self._answers(node), f"{node!r} to answer PING")
                return
            except ProcessError:
                in_use = "Address already in use" in node.log_tail(50)
                self._signal(node, signal.SIGKILL)
                if not in_use or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _answers(self, node: Node) -> bool:
        if not node.alive:
            raise ProcessError(
                f"{node!r} exited (code {node.proc and node.proc.returncode}):\n{node.log_tail()}"
            )
        try:
            return bool(self.client(node, timeout=1.0).ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def kill(self, node: Node) -> None:
        """SIGKILL: the host died. Nothing is flushed, no client is told."""
        self._signal(node, signal.SIGKILL)

    def stop(self, node: Node) -> None:
        """SIGTERM: a clean shutdown (redis-server closes its clients)."""
        self._signal(node, signal.SIGTERM)

    def restart(self, node: Node) -> None:
        """Start a stopped node again on the same port with its (possibly rewritten) config."""
        if node.alive:
            self.stop(node)
        self._start(node, lambda: None, keep_port=True)

    def _signal(self, node: Node, sig: signal.Signals) -> None:
        proc = node.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def close(self) -> None:
        for node in self.nodes:
            self._signal(node, signal.SIGKILL)
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)

    def logs(self, lines: int = 20) -> str:
        """The tail of every node's log, for a failing test's report."""
        return "\n".join(f"--- {n!r}\n{n.log_tail(lines)}" for n in self.nodes)

    # --- clients and questions -----------------------------------------------------------
    def tls_kwargs(self, *, client_cert: bool = False) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "ssl": True,
            "ssl_ca_certs": str(self.pki.ca),
            "ssl_cert_reqs": "required",
        }
        if client_cert:
            kwargs["ssl_certfile"] = str(self.pki.client.cert)
            kwargs["ssl_keyfile"] = str(self.pki.client.key)
        return kwargs

    def client(self, node: Node, *, timeout: float = 5.0, **overrides: Any) -> redis.Redis:
        """A redis-py client with the node's admin rights (the Sentinels' password)."""
        kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if node.kind == "sentinel":
            return self._sentinel_client(node, **kwargs, **overrides)
        if node.auth is Auth.ACL:
            kwargs.update(username="admin", password=self.secrets.admin)
        else:
            kwargs.update(password=self.secrets.app)
        if node.listen is Listen.UNIX:
            kwargs["unix_socket_path"] = str(node.unixsocket)
        else:
            kwargs.update(host=HOST, port=node.port)
            if node.listen is Listen.TLS:
                kwargs.update(self.tls_kwargs(client_cert=node.mtls))
                if node.cert is not None:
                    # A deliberately bad server certificate (expired, wrong names) is the
                    # test's subject, not the harness's: its own admin link skips the check.
                    kwargs.update(ssl_cert_reqs="none", ssl_check_hostname=False)
        kwargs.update(overrides)
        return redis.Redis(**kwargs)

    def _sentinel_client(self, node: Node, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 2.0)
        kwargs.setdefault("socket_connect_timeout", 2.0)
        return redis.Redis(
            host=HOST,
            port=node.port,
            username="admin" if node.auth is Auth.ACL else None,
            password=self.secrets.sentinels,
            decode_responses=True,
            **self.tls_kwargs(client_cert=node.mtls),
            **kwargs,
        )

    def info(self, node: Node, section: str) -> dict[str, Any]:
        try:
            return dict(self.client(node, timeout=1.0).info(section))
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return {}

    def role(self, node: Node) -> str | None:
        """``master`` / ``slave`` as the node itself says, or None if it does not answer."""
        value = self.info(node, "replication").get("role")
        return str(value) if value else None

    def replicas_of(self, primary: Node) -> list[Node]:
        return [
            n
            for n in self.nodes
            if n.kind == "redis"
            and n is not primary
            and n.alive
            and self.info(n, "replication").get("master_port") == primary.port
        ]

    def by_address(self, host: str, port: int) -> Node:
        for node in self.nodes:
            if node.kind == "redis" and node.port == int(port) and host in (HOST, "localhost"):
                return node
        raise LookupError(f"no data node of this fleet at {host}:{port}")

    def sentinel_nodes(self, *, alive: bool = True) -> list[Node]:
        return [n for n in self.nodes if n.kind == "sentinel" and (n.alive or not alive)]

    def primary(self) -> Node:
        """The data node the (live) Sentinels name as primary; they must agree."""
        answers: set[tuple[str, int]] = set()
        for sentinel in self.sentinel_nodes():
            client = self._sentinel_client(sentinel)
            reply: Any = client.sentinel_get_master_addr_by_name(self.master_name)
            if not reply:
                raise LookupError(f"{sentinel!r} knows no primary named {self.master_name}")
            answers.add((str(reply[0]), int(reply[1])))
        if len(answers) != 1:
            raise AssertionError(f"Sentinels disagree on the primary: {sorted(answers)}")
        return self.by_address(*answers.pop())

    def wait_for_failover(self, old: Node, timeout: float = 30.0) -> Node:
        """Wait until every live Sentinel names a new primary that says it is a master."""

        def promoted() -> Node | None:
            try:
                new = self.primary()
            except (AssertionError, redis.RedisError, OSError, LookupError):
                return None
            if new is old or self.role(new) != "master":
                return None
            return new

        return self.wait_for(promoted, f"a failover away from {old!r}", timeout=timeout)

    def wait_for(
        self, check: Callable[[], T | None], what: str, timeout: float = START_TIMEOUT
    ) -> T:
        """Poll ``check`` until it returns something truthy; fail with the logs otherwise."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            try:
                result = check()
            except ProcessError:
                raise
            except (redis.RedisError, OSError):
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)


@contextlib.contextmanager
def fleet(folder: Path, pki: Pki) -> Iterator[RedisFleet]:
    """A ``RedisFleet`` whose processes are all killed on exit, whatever happened."""
    f = RedisFleet(folder, pki)
    try:
        yield f
    finally:
        f.close()


def env_without_secrets() -> dict[str, str]:
    """The minimal process environment for child processes (no CELERY_* leaking in)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k in keep}
