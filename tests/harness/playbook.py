"""Run ansible-playbook from this checkout as a user's controller would: the venv's
ansible-playbook, the repository's ansible.cfg (roles, the collection's filters), no colour.
For the unit tests that run a role's tasks against localhost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook ARGS`` from the repository root; never raises on its exit status."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"},
        check=False,
        timeout=timeout,
    )
