"""Run ``celery-fleet`` (``python -m celery_fleet.cli``) as a deployment's unit would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``celery-fleet ARGS...`` with this interpreter: exit code and output, never raises.
    ``env``: the whole process environment (default: this one)."""
    return subprocess.run(
        [sys.executable, "-m", "celery_fleet.cli", *args],
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        check=False,
        timeout=60,
    )


def settings(env_file: Path) -> subprocess.CompletedProcess[str]:
    """``celery-fleet settings --env-file ENV_FILE``."""
    return run("settings", "--env-file", str(env_file))


def write_env(path: Path, lines: Mapping[str, str]) -> Path:
    """Write ``KEY=value`` lines to ``path`` (values as given, unquoted) and return it."""
    path.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
    return path
