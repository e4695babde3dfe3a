"""A real RabbitMQ node on loopback: a plain process (no systemd), TLS listener only.

``RabbitNode.start(folder, pki)`` runs Debian's ``rabbitmq-server`` with its own node name,
data, log and config folders, Erlang cookie (``HOME``) and epmd port, all under
``folder``: nothing of the package's own node (``/var/lib/rabbitmq``) is used. The config
(rabbitmq.conf, new-style; https://www.rabbitmq.com/docs/configure) has no plaintext
listener (``listeners.tcp = none``), one TLS listener with the test CA's server
certificate, and the distribution port and epmd bound to 127.0.0.1. The node gets one
vhost and one user with rights on that vhost only; ``guest`` is deleted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .pki import Pki
from .ports import free_port
from .redis_procs import env_without_secrets

HOST = "127.0.0.1"
SBIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves, not Debian's su wrapper
VHOST = "fleet"
APP_USER = "fleet_app"
# Measured on this 2-core machine: ~3.5-5 s to "started" with nothing else running.
# More than twice that for a loaded machine (two CI lanes side by side).
START_TIMEOUT = 60.0
CTL_TIMEOUT = 30.0

CONFIG = """\
listeners.tcp = none
listeners.ssl.1 = {host}:{port}
ssl_options.cacertfile = {ca}
ssl_options.certfile = {cert}
ssl_options.keyfile = {key}
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
loopback_users.guest = true
log.console = false
log.file.level = info
"""


class RabbitError(RuntimeError):
    """The node did not start, or a rabbitmqctl command failed; carries the log tail."""


@dataclass
class RabbitNode:
    folder: Path
    port: int
    dist_port: int
    epmd_port: int
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    name: str = field(default_factory=lambda: f"fleet-{uuid.uuid4().hex[:8]}@localhost")
    proc: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0  # seconds from launch to "started", measured

    @classmethod
    def start(cls, folder: Path, pki: Pki, *, timeout: float = START_TIMEOUT) -> RabbitNode:
        """Launch, wait for the node to finish booting, create the vhost and the user."""
        for attempt in range(3):  # a candidate port may be taken meanwhile (ports.py)
            node = cls(folder / f"try{attempt}", free_port(), free_port(), free_port())
            try:
                node._launch(pki, timeout)
            except RabbitError:
                node.close()
                if "eaddrinuse" not in node.log_tail().lower() or attempt == 2:
                    raise
                continue
            node._provision()
            return node
        raise AssertionError("unreachable")

    # -- environment -------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = env_without_secrets()
        env.update(
            HOME=str(self.folder / "home"),  # the Erlang cookie of this node and its CLI
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_MNESIA_BASE=str(self.folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.folder / "log"),
            RABBITMQ_CONFIG_FILE=str(self.folder / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.folder / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.folder / "rabbit.pid"),
            RABBITMQ_CONF_ENV_FILE=str(self.folder / "rabbitmq-env.conf"),  # none: not /etc
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS=HOST,
        )
        return env

    def _launch(self, pki: Pki, timeout: float) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.folder / "rabbitmq.conf").write_text(
            CONFIG.format(
                host=HOST,
                port=self.port,
                ca=pki.ca,
                cert=pki.server.cert,
                key=pki.server.key,
            )
        )
        (self.folder / "enabled_plugins").write_text("[].\n")
        began = time.monotonic()
        with (self.folder / "server.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [str(SBIN / "rabbitmq-server")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.folder,
                start_new_session=True,
            )
        pidfile = str(self.folder / "rabbit.pid")
        deadline = began + timeout
        while True:
            left = deadline - time.monotonic()
            if self.proc.poll() is not None:
                raise RabbitError(f"rabbitmq-server exited with {self.proc.returncode}")
            if left <= 0:
                raise RabbitError(f"rabbitmq node not started after {timeout:.0f} s")
            done = self._ctl_run(["wait", "--timeout", str(int(max(left, 1))), pidfile], left)
            if done.returncode == 0:
                break
            time.sleep(0.2)
        self.started_in = time.monotonic() - began

    def _provision(self) -> None:
        self.ctl("add_vhost", VHOST)
        self.ctl("add_user", APP_USER, stdin=self.password)  # not on a command line
        # Rights on its own vhost only; no tags (no management, no policies).
        self.ctl("set_permissions", "-p", VHOST, APP_USER, ".*", ".*", ".*")
        self.ctl("delete_user", "guest")

    # -- control -------------------------------------------------------------------------
    def _ctl_run(
        self, args: list[str], timeout: float, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [str(SBIN / "rabbitmqctl"), "-q", "-n", self.name, *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=self.env(),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "rabbitmqctl timed out")

    def ctl(self, *args: str, stdin: str | None = None, timeout: float = CTL_TIMEOUT) -> str:
        """``rabbitmqctl -n <node> <args>``; its output, or RabbitError."""
        done = self._ctl_run(list(args), timeout, stdin)
        if done.returncode != 0:
            raise RabbitError(
                f"rabbitmqctl {args[0]} failed ({done.returncode}): {done.stderr.strip()}\n"
                f"{self.log_tail()}"
            )
        return done.stdout

    def diagnostics(self, *args: str) -> str:
        done = subprocess.run(
            [str(SBIN / "rabbitmq-diagnostics"), "-q", "-n", self.name, *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=CTL_TIMEOUT,
        )
        if done.returncode != 0:
            raise RabbitError(f"rabbitmq-diagnostics {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def close(self) -> None:
        """Stop the node (rabbitmqctl stop, then SIGKILL of its process group) and its
        own epmd."""
        if self.proc is not None and self.proc.poll() is None:
            self._ctl_run(["stop"], 20)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # epmd daemonises away from the node's process group; it is ours (own port).
        subprocess.run(
            ["epmd", "-port", str(self.epmd_port), "-kill"],
            capture_output=True,
            env=self.env(),
            timeout=10,
            check=False,
        )

    def log_tail(self, lines: int = 30) -> str:
        logs = [*sorted((self.folder / "log").glob("*.log")), self.folder / "server.out"]
        text = []
        for path in logs:
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(text)
