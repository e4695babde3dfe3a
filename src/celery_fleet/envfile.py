"""Read the KEY=value env files that systemd (EnvironmentFile=) and compose (env_file:) read."""

from __future__ import annotations

import shlex
from pathlib import Path


class EnvFileError(ValueError):
    pass


def read(path: str | Path) -> dict[str, str]:
    """Parse ``KEY=value`` lines; ``#`` comments, blank lines, optional ``export`` and quotes."""
    env: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvFileError(f"cannot read env file {path}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise EnvFileError(f"{path}:{number}: expected KEY=value, got {line[:40]!r}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            try:
                parts = shlex.split(value)
            except ValueError:
                raise EnvFileError(f"{path}:{number}: unbalanced quotes in {key}") from None
            value = parts[0] if parts else ""
        env[key] = value
    return env
