"""Real ``celery worker`` subprocesses, configured by their environment only.

The worker runs ``celery -A <module> worker`` where the module does nothing but
``app.config_from_object("celery_fleet.celeryconfig")``: everything it knows about Redis
comes from the ``CELERY_*`` variables handed to it, exactly as in production. Readiness is
the worker's own "ready." log message (in a JSON line or a text one); ``stop()`` sends
SIGTERM (warm shutdown) and waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery

from .redis_procs import env_without_secrets

START_TIMEOUT = 45.0
# A warm shutdown can take 30 s with nothing wrong: a prefork child whose last result the
# parent has not read yet waits for it up to 300 x 0.1 s before it exits (billiard's
# Worker._ensure_messages_consumed, GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT), while the
# parent already waits in Pool.join. Seen here once in six runs of a warm shutdown right
# after a burst of tasks. Twice that, plus margin for a loaded machine.
STOP_TIMEOUT = 75.0


class WorkerError(RuntimeError):
    """The worker did not start, or did not stop; the message carries its log."""


@dataclass
class Worker:
    """One worker process. ``env`` holds the CELERY_* settings (nothing else is passed
    on but PATH/HOME/locale and ``pythonpath``, so the parent's environment cannot leak)."""

    app: str  # the -A argument, e.g. "fleet_app"
    env: Mapping[str, str]
    folder: Path
    pythonpath: Sequence[Path] = ()
    pool: str = "prefork"
    concurrency: int = 2
    queues: Sequence[str] = ()
    extra_args: Sequence[str] = ("--without-mingle", "--without-gossip")
    name: str = field(default_factory=lambda: f"h1-{uuid.uuid4().hex[:8]}")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def logfile(self) -> Path:
        return self.folder / f"worker-{self.name}.log"

    @property
    def nodename(self) -> str:
        return f"{self.name}@{os.uname().nodename}"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "--hostname",
            f"{self.name}@%h",
            "--pool",
            self.pool,
            "--concurrency",
            str(self.concurrency),
            "--loglevel",
            "INFO",
            *self.extra_args,
        ]
        if self.queues:
            cmd += ["--queues", ",".join(self.queues)]
        return cmd

    def process_env(self) -> dict[str, str]:
        env = env_without_secrets()
        paths = [str(p) for p in self.pythonpath]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        return env

    def launch(self) -> None:
        """Start the process without waiting (for tests of a worker that must not start)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.process_env(),
                cwd=self.folder,
                start_new_session=True,
            )

    def start(self, timeout: float = START_TIMEOUT) -> Worker:
        """Start and wait for "<name>@host ready." in the log."""
        self.launch()
        marker = f"{self.name}@"
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            text = self.log()
            if any(
                marker in line and message(line).rstrip().endswith("ready.")
                for line in text.splitlines()
            ):
                return self
            if self.proc is not None and self.proc.poll() is not None:
                raise WorkerError(
                    f"worker {self.name} exited with {self.proc.returncode} before it was "
                    f"ready:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.3)
        self.kill()
        raise WorkerError(f"worker {self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; its exit code."""
        assert self.proc is not None, "worker was never launched"
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Warm shutdown (SIGTERM: finish running tasks, then exit); kill if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)  # the main process only, as systemd would
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise WorkerError(
                f"worker {self.name} ignored SIGTERM for {timeout:.0f} s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the worker and its pool children (the host died)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def message(line: str) -> str:
    """The message of one log line: a JSON line's ``message`` (the default format, see
    celery_fleet.logs), else the line itself (CELERY_FLEET_LOG_FORMAT=text)."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                return str(record.get("message", ""))
    return line


# The shapes of the integration fixtures ``start_worker`` and ``celery_client``.
StartWorker = Callable[..., Worker]
MakeClient = Callable[[Mapping[str, str]], Celery]
