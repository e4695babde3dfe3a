"""The roles install from anywhere: `ansible-galaxy collection build` packs the collection
celery_fleet.fleet (galaxy.yml), it installs offline into a temporary path, and roles
applied from there by their full name run real tasks: preflights that pass and one that
fails naming the variable, and the shared templates (templates/, systemd/) rendered by role
redis in check mode. The checkout is out of reach: the run uses an empty ansible.cfg, an
empty roles path and only the temporary collections path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GOOD = "Xk3-f9Qz_2LmPa7wR0tY"
REDIS_PASSWORDS = {
    "redis_admin_password": GOOD + "a",
    "redis_app_password": GOOD + "b",
    "redis_monitor_password": GOOD + "c",
    "redis_deadletter_password": GOOD + "i",
    "redis_replication_password": GOOD + "d",
    "redis_sentinel_auth_password": GOOD + "e",
}
ROLES = ["celery", "flower", "pki", "redis", "redis_sentinel"]
# What the tarball may hold at its top; everything else of the checkout stays out.
TOP = {
    "CHANGELOG.md",
    "FILES.json",
    "LICENSE",
    "MANIFEST.json",
    "README.md",
    "docs",
    "examples",
    "meta",
    "plugins",
    "roles",
    "systemd",
    "templates",
}


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing next to {sys.executable}: run `make setup` (ansible-core)")
    return str(path)


def _env(tmp: Path) -> dict[str, str]:
    """Ansible sees the temporary collections path only, never the checkout's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    (tmp / "empty.cfg").write_text("[defaults]\n")
    (tmp / "no-roles").mkdir(exist_ok=True)
    return {
        **env,
        "ANSIBLE_CONFIG": str(tmp / "empty.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(tmp / "collections"),
        "ANSIBLE_ROLES_PATH": str(tmp / "no-roles"),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
    }


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=tmp,
        env=_env(tmp),
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tarball, workdir): the collection built from the checkout, installed into workdir."""
    tmp = tmp_path_factory.mktemp("collection")
    galaxy = _tool("ansible-galaxy")
    build = _run(tmp, galaxy, "collection", "build", "--output-path", str(tmp / "dist"), str(ROOT))
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = (tmp / "dist").glob("celery_fleet-fleet-*.tar.gz")
    # --offline: the dependencies (ansible.posix, community.*) are those the ansible package
    # installed next to ansible-core; nothing is fetched.
    collections = str(tmp / "collections")
    install = _run(
        tmp, galaxy, "collection", "install", "--offline", "-p", collections, str(tarball)
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return tarball, tmp


def _playbook(tmp: Path, name: str, plays: list[dict[str, Any]], *args: str) -> str:
    hosts = {"node1": {"fleet_address": "127.0.0.1"}}
    inventory = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
            "children": {
                group: {"hosts": hosts}
                for group in ["redis", "sentinel", "celery_workers", "celery_beat"]
            },
        }
    }
    (tmp / "hosts.yml").write_text(json.dumps(inventory))
    (tmp / name).write_text(yaml.safe_dump(plays, sort_keys=False))
    result = _run(tmp, _tool("ansible-playbook"), "-i", "hosts.yml", name, *args)
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}"


def test_galaxy_version_follows_pyproject() -> None:
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == ("celery_fleet", "fleet")
    assert galaxy["version"] == pyproject["project"]["version"]


def test_one_license_everywhere() -> None:
    """The package, the collection and each role say the same license, the one LICENSE holds."""
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (license_id,) = galaxy["license"]
    assert pyproject["project"]["license"] == license_id
    assert license_id == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    for meta in sorted((ROOT / "roles").glob("*/meta/main.yml")):
        assert yaml.safe_load(meta.read_text())["galaxy_info"]["license"] == license_id, meta


def test_the_tarball_holds_roles_templates_and_nothing_private(built: tuple[Path, Path]) -> None:
    tarball, _ = built
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert {name.split("/")[0] for name in names} <= TOP, sorted(names)
    for name in names:
        assert not re.search(r"\.(key|pem|log)$|(^|/)(\.venv|tests|\.pki|\.env)(/|$)", name), name
    for needed in [
        "meta/runtime.yml",
        "plugins/filter/fleet.py",
        "plugins/filter/monitoring.py",
        "templates/redis.conf.j2",
        "templates/celery.env.j2",
        "systemd/celery-worker@.service.j2",
        "examples/demo_app/app.py",
        "LICENSE",
        *[f"roles/{role}/tasks/main.yml" for role in ROLES],
        *[f"roles/{role}/meta/argument_specs.yml" for role in ROLES],
    ]:
        assert needed in names, needed


def test_ansible_finds_only_the_installed_collection(built: tuple[Path, Path]) -> None:
    _, tmp = built
    listed = _run(tmp, _tool("ansible-galaxy"), "collection", "list", "celery_fleet.fleet")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    paths = re.findall(r"^# (\S+)", listed.stdout, flags=re.MULTILINE)
    assert paths == [str(tmp / "collections" / "ansible_collections")], listed.stdout


def test_roles_run_from_the_installed_collection(built: tuple[Path, Path]) -> None:
    _, tmp = built
    pki = tmp / "pki"
    for path in [
        "ca/ca.pem",
        "ca-bundle.pem",
        "certs/celery.pem",
        "certs/celery.key",
        "tls/server.pem",
    ]:
        (pki / path).parent.mkdir(parents=True, exist_ok=True)
        (pki / path).write_text("not a real certificate: preflight only looks for the file\n")
    (tmp / "wheelhouse").mkdir(exist_ok=True)
    (tmp / "wheelhouse" / "requirements.txt").write_text("celery-fleet\n")
    tls = {
        "redis_tls_cert_file": str(pki / "tls/server.pem"),
        "redis_tls_key_file": str(pki / "tls/server.pem"),
        "redis_tls_ca_cert_file": str(pki / "ca/ca.pem"),
    }
    plays = [
        {
            "name": "Apply the roles by their full name",
            "hosts": "all",
            "gather_facts": False,
            "vars": {
                "fleet_no_log": False,
                "pki_local_dir": str(pki),
                "fleet_wheelhouse": str(tmp / "wheelhouse"),
                **REDIS_PASSWORDS,
                **tls,
            },
            "tasks": [
                {
                    "name": "Check the Celery inputs (role celery, default celery_app_path)",
                    "ansible.builtin.include_role": {
                        "name": "celery_fleet.fleet.celery",
                        "tasks_from": "preflight",
                    },
                },
                {
                    "name": "Show where the controller files were found",
                    "ansible.builtin.debug": {
                        "msg": "FOUND {{ _celery_controller_files.results"
                        " | map(attribute='item') | to_json }}"
                    },
                },
                {
                    "name": "Check the Redis inputs (the collection's password filter)",
                    "ansible.builtin.include_role": {
                        "name": "celery_fleet.fleet.redis",
                        "tasks_from": "preflight",
                    },
                },
                {
                    "name": "Render the Redis files from the shared templates (check mode)",
                    "ansible.builtin.include_role": {
                        "name": "celery_fleet.fleet.redis",
                        "tasks_from": "configure",
                    },
                    "vars": {
                        "redis_current_primary_address": "127.0.0.1",
                        "redis_current_primary_port": 6379,
                        "redis_conf_dir": str(tmp / "etc-redis"),
                        "redis_data_dir": str(tmp / "var-lib-redis"),
                    },
                },
                {
                    "name": "Stop before the handlers (no systemd here)",
                    "ansible.builtin.meta": "end_play",
                },
            ],
        }
    ]
    out = _playbook(tmp, "good.yml", plays, "--check", "--diff")
    assert out.startswith("rc=0"), out
    found = json.loads(re.search(r"FOUND (\[.*?\])", out.replace("\\", ""))[1])  # type: ignore[index]
    app = {item["var"]: Path(item["path"]).resolve() for item in found}["celery_app_path"]
    assert app == tmp / "collections/ansible_collections/celery_fleet/fleet/examples/demo_app"
    # redis.conf, users.acl and the systemd drop-in come from templates/ and systemd/ of the
    # installed collection (the diff of check mode shows what would be written).
    for line in ["+tls-port 6379", "+port 0", "+user celery on", "+LimitNOFILE=65535"]:
        assert line in out, out
    assert not (tmp / "etc-redis").exists()


def test_a_bad_input_fails_naming_the_variable(built: tuple[Path, Path]) -> None:
    _, tmp = built
    weak = "CHANGE_ME-admin-password"
    plays = [
        {
            "hosts": "redis",
            "gather_facts": False,
            "vars": {**REDIS_PASSWORDS, "redis_admin_password": weak, "fleet_no_log": False},
            "tasks": [
                {
                    "name": "Check the Redis inputs",
                    "ansible.builtin.include_role": {
                        "name": "celery_fleet.fleet.redis",
                        "tasks_from": "preflight",
                    },
                }
            ],
        }
    ]
    out = _playbook(tmp, "bad.yml", plays)
    assert not out.startswith("rc=0"), out
    assert "redis_admin_password looks like a placeholder" in out, out
    assert weak not in out
