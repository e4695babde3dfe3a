"""celery-with-env (roles/celery/templates/celery-with-env.j2), rendered as the role renders it
and run for real: the env file configures the app, never which code runs (root may start the
script; supervisor does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import render

TEMPLATE = Path(__file__).resolve().parents[2] / "roles/celery/templates/celery-with-env.j2"
VENV = Path(sys.executable).parent.parent
LOADER_KEYS = {
    "PATH": "/tmp/evil-bin",
    "LD_PRELOAD": "/tmp/evil.so",
    "LD_LIBRARY_PATH": "/tmp/evil-lib",
    "PYTHONPATH": "/tmp/evil-py",
    "PYTHONSTARTUP": "/tmp/evil.py",
}


def run(tmp_path: Path, lines: dict[str, str]) -> tuple[dict[str, str], str]:
    """Run ``celery-with-env FILE -- env``; the environment the command got, and stderr."""
    script = tmp_path / "celery-with-env"
    script.write_text(
        render.render_file(
            TEMPLATE,
            role="celery",
            variables={"celery_venv": str(VENV), "ansible_managed": "test"},
            role_vars=True,
        )
    )
    env_file = tmp_path / "celery.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    done = subprocess.run(
        [sys.executable, str(script), str(env_file), "--", "env"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
        timeout=60,
    )
    got = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return got, done.stderr


def test_loader_variables_from_the_env_file_are_ignored(tmp_path: Path) -> None:
    got, stderr = run(tmp_path, {**LOADER_KEYS, "CELERY_BROKER_URL": "rediss://h/0"})
    assert got["CELERY_BROKER_URL"] == "rediss://h/0"
    assert got["PATH"] == f"{VENV}/bin:/usr/bin:/bin"
    for key, value in LOADER_KEYS.items():
        assert value not in got.get(key, ""), (key, got.get(key))
        if key != "PATH":
            assert f"ignoring {key} from" in stderr, stderr


def test_the_app_settings_pass_unchanged(tmp_path: Path) -> None:
    lines = {"CELERY_TASK_QUEUES": "default,mail", "CELERY_X": '{"a": [1, 2]}'}
    got, stderr = run(tmp_path, lines)
    assert {k: got[k] for k in lines} == lines
    assert "ignoring" not in stderr
