"""Real ``redis-server`` and ``redis-sentinel`` processes on loopback, for tests.

A ``RedisFleet`` owns a folder and every process it starts there. Every config file is the
shipped template rendered with the shipped role defaults (``harness.render``): redis.conf
and users.acl from ``templates/redis.conf.j2`` and ``templates/users.acl.j2`` with
``roles/redis/defaults``, sentinel.conf from ``templates/sentinel.conf.j2`` with
``roles/redis_sentinel/defaults``. The harness gives only what an inventory gives per host
(ports, paths, addresses, certificates, passwords, ``replicaof``) plus these test choices:

- no persistence (``redis_appendonly: false``, ``redis_save: []``) and
  ``repl-diskless-sync-delay 0`` (``redis_extra_config``) so that a replica syncs at once;
- ``supervised no`` and the log in the node's folder; client certificates only when a test
  asks for mutual TLS (``mtls=True``; the role's default is ``redis_tls_auth_clients: yes``);
- ``Listen.TCP`` (a plaintext port, only for the ``redis://`` URL form) is not something the
  role offers: ``redis_extra_config`` appends ``port N`` and ``tls-port 0``, and Redis takes
  the last occurrence of a directive. ``Listen.UNIX`` uses the role's ``redis_unixsocket``
  input and turns the TLS port off the same way.

So data nodes are TLS-only by default, with the role's ACL users (``default`` off;
``APP_USER`` for Celery without ``@dangerous``/``@admin``; ``replication``; ``sentinel``;
``monitor``; ``deadletter``, the dead-letter operator; ``admin`` for the harness itself) or
the role's ``requirepass`` mode. Sentinels run on TLS with the role's ACL users (``default``
off; the administrator, which the harness and the Sentinels themselves use; the
discover-only client user Celery gets; ``MONITOR_USER`` with the data nodes' monitor
password, read-only, for the exporter) and log in to the data nodes as the role's
``sentinel`` user.

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

from . import render
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

    app: str = field(default_factory=lambda: secrets.token_urlsafe(18))  # also requirepass
    admin: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    monitor: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    deadletter: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    replication: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    sentinel_user: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    sentinels: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    sentinel_app: str = field(default_factory=lambda: secrets.token_urlsafe(18))


# The user names the roles deploy (role defaults, not copies): Celery logs in as APP_USER.
_REDIS = render.role_defaults("redis")
APP_USER: str = _REDIS["redis_app_user"]
ADMIN_USER: str = _REDIS["redis_admin_user"]
MONITOR_USER: str = _REDIS["redis_monitor_user"]
DEADLETTER_USER: str = _REDIS["redis_deadletter_user"]
# Sentinels: the administrator (the harness, and each Sentinel on the others) and the
# discover-only client user that Celery gets (role redis_sentinel's defaults).
_SENTINEL = render.role_defaults("redis_sentinel")
SENTINEL_ADMIN_USER: str = _SENTINEL["redis_sentinel_admin_user"]
SENTINEL_APP_USER: str = _SENTINEL["redis_sentinel_client_user"]
# The timings the role ships (down-after 5 s, failover-timeout 60 s): every suite fails over
# the way a deployment does. Shorter ones caused double failovers under CI load (Sentinel
# restarts its link to a just-promoted primary and flags it down when no PONG comes back
# within down-after; docs/benchmarks.md), so a test that passes its own must say why.
SENTINEL_DOWN_AFTER_MS = int(_SENTINEL["redis_sentinel_down_after_milliseconds"])
SENTINEL_FAILOVER_TIMEOUT_MS = int(_SENTINEL["redis_sentinel_failover_timeout"])
# Kill -> new primary: 6.6-8.5 s measured under load (down-after included). A promotion the
# replica never confirms is abandoned after failover-timeout and retried two timeouts after
# the vote (seen once in the fault suite): down-after + 2 x failover-timeout, plus margin.
FAILOVER_WAIT = 2 * (SENTINEL_DOWN_AFTER_MS + 2 * SENTINEL_FAILOVER_TIMEOUT_MS) / 1000


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

    def __init__(
        self,
        folder: Path,
        pki: Pki,
        secrets_: Secrets | None = None,
        *,
        templates: Path = render.TEMPLATES,
    ) -> None:
        """``templates``: where the config templates come from (a test may render from a
        modified copy); the role defaults always come from roles/."""
        self.folder = folder
        self.templates = templates
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
        variables: dict[str, Any] | None = None,
    ) -> Node:
        """Start a redis-server and wait until it answers (and replicates, for a replica).
        ``variables``: role redis inputs over the harness's (e.g. ``redis_appendonly``)."""
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
            config = self._server_vars(node, replica_of) | (variables or {})
            if node.auth is Auth.ACL:
                acl_file = Path(render.resolve("redis", config, "redis_acl_file"))
                self._write(acl_file, "users.acl.j2", "redis", config)
            self._write(node.conf, "redis.conf.j2", "redis", config)

        self._start(node, write_conf)
        if replica_of is not None:
            self.wait_for(
                lambda: self.info(node, "replication").get("master_link_status") == "up",
                f"{node!r} to sync from {replica_of!r}",
            )
        return node

    def rewrite_acl(self, node: Node, variables: dict[str, Any]) -> Path:
        """Render users.acl again for a running ACL node with role redis inputs over the
        harness's (e.g. a rotated password); return the file. Nothing is applied: the test
        applies it as the role does (roles/redis/files/redis-acl-apply)."""
        config = self._server_vars(node, None) | variables
        acl_file = Path(render.resolve("redis", config, "redis_acl_file"))
        self._write(acl_file, "users.acl.j2", "redis", config)
        return acl_file

    def _write(self, path: Path, template: str, role: str, variables: dict[str, Any]) -> None:
        path.write_text(
            render.render(template, role=role, variables=variables, templates=self.templates)
        )
        path.chmod(0o600)

    def _tls_vars(self, node: Node, prefix: str) -> dict[str, Any]:
        cert = node.cert or self.pki.server
        return {
            f"{prefix}_tls_cert_file": cert.cert,
            f"{prefix}_tls_key_file": cert.key,
            f"{prefix}_tls_ca_cert_file": self.pki.ca,
            f"{prefix}_tls_auth_clients": "yes" if node.mtls else "no",
        }

    def _server_vars(self, node: Node, replica_of: Node | None) -> dict[str, Any]:
        """Role redis inputs for this node: what an inventory would say about the host."""
        s = self.secrets
        extra: dict[str, Any] = {"repl-diskless-sync-delay": 0}  # sync at once, not after 5 s
        if node.listen is Listen.TCP:
            extra |= {"port": node.port, "tls-port": 0}
        elif node.listen is Listen.UNIX:
            extra |= {"tls-port": 0}
        return {
            "redis_address": HOST,
            "redis_bind": [HOST],
            "redis_port": node.port,
            "redis_unixsocket": node.unixsocket or "",
            "redis_conf_dir": node.folder,
            "redis_data_dir": node.folder,
            "redis_pid_file": node.folder / "redis.pid",
            "redis_log_file": node.logfile,
            "redis_supervised": "no",
            **self._tls_vars(node, "redis"),
            "redis_auth_mode": node.auth.value,
            "redis_requirepass": s.app,
            "redis_admin_password": s.admin,
            "redis_app_password": s.app,
            "redis_monitor_password": s.monitor,
            "redis_deadletter_password": s.deadletter,
            "redis_replication_password": s.replication,
            "redis_sentinel_auth_password": s.sentinel_user,
            "redis_replicaof_host": HOST if replica_of is not None else "",
            "redis_replicaof_port": replica_of.port if replica_of is not None else 0,
            "redis_appendonly": False,
            "redis_save": [],
            "redis_extra_config": extra,
        }

    # --- Sentinels ---------------------------------------------------------------------
    def sentinels(
        self,
        primary: Node,
        *,
        count: int = 3,
        quorum: int = 2,
        down_after_ms: int = SENTINEL_DOWN_AFTER_MS,
        failover_timeout_ms: int = SENTINEL_FAILOVER_TIMEOUT_MS,
        mtls: bool = False,
        auth: Auth = Auth.REQUIREPASS,
    ) -> list[Node]:
        """Start ``count`` Sentinels monitoring ``primary``, with the role's timings unless
        given; wait until they see each other and every replica, so that a failover can
        happen as soon as this returns.
        Sentinels always run the role's ACL users (``default`` off): the administrator
        ``SENTINEL_ADMIN_USER`` and the discover-only ``SENTINEL_APP_USER``; ``auth`` is
        recorded on the nodes only."""
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
                config = self._sentinel_vars(
                    node, primary, quorum, down_after_ms, failover_timeout_ms
                )
                self._write(node.conf, "sentinel.conf.j2", "redis_sentinel", config)

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

    def _sentinel_vars(
        self, node: Node, primary: Node, quorum: int, down_after_ms: int, failover_ms: int
    ) -> dict[str, Any]:
        """Role redis_sentinel inputs for this Sentinel."""
        s = self.secrets
        # ACL data nodes: the role's sentinel user (its default name); requirepass data
        # nodes: no user, their one password (as the role documents).
        login = (
            {"redis_sentinel_auth_password": s.sentinel_user}
            if primary.auth is Auth.ACL
            else {"redis_sentinel_auth_user": "", "redis_sentinel_auth_password": s.app}
        )
        return {
            "inventory_hostname": node.name,  # redis_sentinel_myid derives from it
            "redis_sentinel_address": HOST,
            "redis_sentinel_bind": [HOST],
            "redis_sentinel_port": node.port,
            "redis_sentinel_conf_dir": node.folder,
            "redis_sentinel_dir": node.folder,
            "redis_sentinel_pid_file": node.folder / "sentinel.pid",
            "redis_sentinel_log_file": node.logfile,
            "redis_sentinel_supervised": "no",
            **self._tls_vars(node, "redis_sentinel"),
            "redis_sentinel_password": s.sentinels,
            "redis_sentinel_client_password": s.sentinel_app,
            # The inventory's one redis_monitor_password: the Sentinels' monitoring user
            # (role monitoring's exporter) defaults to it, as on the data nodes.
            "redis_monitor_password": s.monitor,
            "redis_master_name": self.master_name,
            "redis_sentinel_primary_host": HOST,
            "redis_sentinel_primary_port": primary.port,
            "redis_sentinel_quorum": quorum,
            "redis_sentinel_down_after_milliseconds": down_after_ms,
            "redis_sentinel_failover_timeout": failover_ms,
            **login,
        }

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
            kwargs.update(username=ADMIN_USER, password=self.secrets.admin)
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
            username=SENTINEL_ADMIN_USER,
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

    def wait_for_failover(self, old: Node, timeout: float = FAILOVER_WAIT) -> Node:
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

    def sentinels_trust(self, primary: Node) -> bool:
        """Every live Sentinel names ``primary`` and flags it plain ``master`` (not
        subjectively or objectively down, no failover in progress)."""
        for sentinel in self.sentinel_nodes():
            master: Any = self._sentinel_client(sentinel).sentinel_master(self.master_name)
            if (str(master["ip"]), int(master["port"])) != primary.address:
                return False
            flags = master["flags"]
            if (flags if isinstance(flags, set) else set(flags.split(","))) != {"master"}:
                return False
        return True

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
def fleet(folder: Path, pki: Pki, *, templates: Path = render.TEMPLATES) -> Iterator[RedisFleet]:
    """A ``RedisFleet`` whose processes are all killed on exit, whatever happened."""
    f = RedisFleet(folder, pki, templates=templates)
    try:
        yield f
    finally:
        f.close()


def env_without_secrets() -> dict[str, str]:
    """The minimal process environment for child processes (no CELERY_* leaking in)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k in keep}
