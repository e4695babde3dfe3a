"""Real ``celery beat`` subprocesses, configured by their environment only (like
``harness.worker``): ``celery -A <module> beat`` with its own schedule file and log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .redis_procs import env_without_secrets
from .worker import message

START_TIMEOUT = 45.0
STOP_TIMEOUT = 30.0


class BeatError(RuntimeError):
    """beat did not start or did not stop; the message carries its log."""


@dataclass
class Beat:
    """One beat process; ``env`` holds the CELERY_* settings, nothing else leaks in."""

    app: str
    env: Mapping[str, str]
    folder: Path
    pythonpath: Sequence[Path] = ()
    name: str = field(default_factory=lambda: f"beat-{uuid.uuid4().hex[:8]}")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def logfile(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "beat was never launched"
        return self.proc.pid

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(self.folder / f"{self.name}-schedule"),
        ]

    def start(self) -> Beat:
        """Start without waiting (``wait_for_log`` says when it got somewhere)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = env_without_secrets()
        paths = [str(p) for p in self.pythonpath]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
                start_new_session=True,
            )
        return self

    def messages(self) -> list[str]:
        try:
            text = self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [message(line) for line in text.splitlines()]

    def wait_for_log(self, text: str, timeout: float = START_TIMEOUT) -> float:
        """Wait until a log message contains ``text``; the time it took."""
        start = time.monotonic()
        while not any(text in m for m in self.messages()):
            if self.proc is not None and self.proc.poll() is not None:
                raise BeatError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            if time.monotonic() - start > timeout:
                raise BeatError(
                    f"{self.name}: no {text!r} after {timeout:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.1)
        return time.monotonic() - start

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (beat saves its schedule and exits), as systemd stops it."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BeatError(f"{self.name} ignored SIGTERM:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL (the host died)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
