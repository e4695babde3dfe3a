"""Flower's basic auth through a password rotation, on a real Flower: role flower's
flower.env (its task's content rendered with the role's defaults and vars) is handed to a
Flower 2.2 process as its unit would (EnvironmentFile=, read back by
celery_fleet.envfile). While flower_basic_auth_password_previous is set, the new and the
previous password both open the API and any other is refused (401); once it is "" again,
the previous one is refused too (docs/operations.md, "Rotate a password")."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from celery_fleet import envfile
from harness import ports, render

ROOT = Path(__file__).resolve().parents[2]
CONFIGURE = ROOT / "roles" / "flower" / "tasks" / "configure.yml"
NEW = "New-flower-pass-7Qd2xK9m"
OLD = "Old-flower-pass-3Hs8wL1p"
# Flower starts in about 2 s here; 15 under CI's two lanes, twice that.
START_TIMEOUT = 30


def flower_env(tmp_path: Path, previous: str) -> dict[str, str]:
    """flower.env as role flower writes it, read back the way the unit's EnvironmentFile is."""
    task = next(
        t
        for t in yaml.safe_load(CONFIGURE.read_text())
        if t.get("name") == "configure | Render flower.env (basic auth)"
    )
    template = tmp_path / "flower.env.j2"
    template.write_text(task["ansible.builtin.copy"]["content"])
    rendered = tmp_path / "flower.env"
    rendered.write_text(
        render.render_file(
            template,
            role="flower",
            role_vars=True,
            variables={
                "flower_basic_auth_password": NEW,
                "flower_basic_auth_password_previous": previous,
            },
        )
    )
    env: dict[str, str] = envfile.read(rendered)
    return env


@contextmanager
def flower(env: dict[str, str]) -> Iterator[str]:
    """A real Flower with that environment; its base URL. No broker: the API answers anyway."""
    port = ports.free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "--broker=redis://127.0.0.1:1/0",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.monotonic()
        while True:
            assert process.poll() is None, f"Flower exited with {process.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() - started < START_TIMEOUT, "Flower did not listen"
                time.sleep(0.2)
        print(f"Flower listened after {time.monotonic() - started:.1f} s")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def status(url: str, password: str) -> int:
    login = base64.b64encode(f"admin:{password}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310
        f"{url}/api/workers", headers={"Authorization": f"Basic {login}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_both_passwords_open_flower_during_a_rotation(tmp_path: Path) -> None:
    env = flower_env(tmp_path, previous=OLD)
    assert env["FLOWER_BASIC_AUTH"] == f"admin:{NEW},admin:{OLD}"
    with flower(env) as url:
        assert status(url, NEW) == 200
        assert status(url, OLD) == 200
        assert status(url, "Other-flower-pass-5Tg6yU0v") == 401


def test_the_previous_password_is_refused_once_the_rotation_ends(tmp_path: Path) -> None:
    env = flower_env(tmp_path, previous="")
    assert env["FLOWER_BASIC_AUTH"] == f"admin:{NEW}"
    with flower(env) as url:
        assert status(url, NEW) == 200
        assert status(url, OLD) == 401
