"""No secret of the fleet appears in the deployment's output or in the nodes' journals.

Runs last (file order), so the journals and the scenario's -vv Ansible log hold the
converge, idempotence, the tests' restarts and test_rolling.py's converge. The secrets are
read from the scenario's inventory (molecule/base.yml + molecule/fleet/molecule.yml), not
copied here.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fleet
import pytest

NODES = [p["name"] for p in fleet.platforms()]


def _secret_values(value: Any, key: str = "") -> Iterator[str]:
    """Every value under a key that names a password or secret, nested lists/dicts too
    (redis_extra_acl_users: [{name, password, rules}])."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _secret_values(v, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _secret_values(item, key)
    elif value and any(word in key.lower() for word in ("password", "secret", "token")):
        yield str(value)


def secrets() -> list[str]:
    found = sorted(set(_secret_values(fleet.group_vars())))
    # base.yml's six Redis/Sentinel passwords and Flower's two: a parsing slip fails here.
    assert len(found) >= 8, f"only {len(found)} secrets found in the inventory"
    return found


def forms(secret: str) -> list[str]:
    """The secret as it could leak: plain, URL-quoted, and inside an HTTP basic-auth header
    for the users the fleet gives it to."""
    users = ("admin", "celery", "flower", "monitor", "replication", "sentinel")
    encoded = [base64.b64encode(f"{u}:{secret}".encode()).decode() for u in users]
    return sorted({secret, quote(secret, safe=""), *encoded})


def leaks(text: str) -> list[str]:
    """Which secrets (by inventory position, never by value) occur in text."""
    return [
        f"secret #{i} ({'plain' if form == secret else 'encoded'})"
        for i, secret in enumerate(secrets())
        for form in forms(secret)
        if form in text
    ]


def ansible_log() -> str:
    """What every playbook of the scenario printed at -vv (molecule.yml: log_path and
    log_verbosity in the scenario's ansible.cfg): molecule's converge and idempotence and
    the tests' own converges, task results included. This run's only: prepare.yml empties
    the file first."""
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible-vv.log"
    assert path.is_file(), f"{path} missing: molecule.yml's log_path not applied?"
    return path.read_text(errors="replace")


def test_the_deployment_printed_no_secret_at_verbosity_2() -> None:
    output = ansible_log()
    found = leaks(output)  # first: the failure messages below print the output
    assert not found, f"secrets in the scenario's -vv Ansible log: {found}"
    # Not an empty or foreign log passing by accident: the converge, the idempotence step and
    # test_rolling.py's converge of playbooks/celery.yml each ended with a recap (prepare.yml,
    # which emptied the log, a fourth), ...
    assert output.count("PLAY RECAP") >= 3, "fewer than three playbook runs in the log"
    assert "Render celery.env" in output
    # ... and it holds -vv task results: the secret ones are hidden by no_log.
    assert "censored" in output


def journal(node: str) -> list[str]:
    """Every entry of every unit (and sudo's) on the node, as plain lines."""
    text = subprocess.run(
        ["docker", "exec", node, "journalctl", "--no-pager", "-o", "cat"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # Not an empty journal passing by accident: the fleet's services logged here.
    assert "celery" in text
    assert "redis" in text.lower()
    return text.splitlines()


def sudo_env_line(line: str) -> bool:
    """sudo's log of a become command line that carries a task's `environment:`
    (Ansible prefixes it: ``COMMAND=/bin/sh -c '... ; NAME=value /usr/bin/python3'``)."""
    return "COMMAND=" in line and "BECOME-SUCCESS" in line


@pytest.mark.parametrize("node", NODES)
def test_the_journal_holds_no_secret_outside_sudo_command_lines(node: str) -> None:
    everything = journal(node)
    assert any(sudo_env_line(line) for line in everything), "no become line: sudo not logged?"
    lines = [line for line in everything if not sudo_env_line(line)]
    found = leaks("\n".join(lines))
    assert not found, f"secrets in the journal of {node}: {found}"


# Found by this test: roles passed redis-cli's password as `environment: REDISCLI_AUTH`;
# with become, Ansible puts environment variables on the sudo command line and sudo logs that
# line (ps shows it meanwhile). The role now gives it on stdin (redis-cli --askpass).
@pytest.mark.parametrize("node", NODES)
def test_sudo_command_lines_in_the_journal_hold_no_secret(node: str) -> None:
    lines = [line for line in journal(node) if sudo_env_line(line)]
    found = leaks("\n".join(lines))
    assert not found, f"secrets in sudo's command lines on {node}: {found}"
