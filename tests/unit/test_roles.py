"""Each role's meta/argument_specs.yml documents exactly the variables its defaults set.

Ansible validates role arguments against argument_specs; a default missing from the spec
goes unchecked, and a spec entry without a default or a `required` flag is a typo or dead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict), path
    return data


# Roles with tasks have inputs.
TASK_ROLES = sorted(p.parent.parent.name for p in ROLES.glob("*/tasks/main.yml"))


@pytest.mark.parametrize("role", TASK_ROLES)
def test_argument_specs_match_the_defaults(role: str) -> None:
    values = _load(ROLES / role / "defaults" / "main.yml")
    defaults = set(values)
    assert defaults, f"{role}: no defaults"
    entry = _load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]
    options: dict[str, Any] = entry.get("options", {})
    required = {name for name, spec in options.items() if spec.get("required")}
    assert defaults - set(options) == set(), "defaults without an argument spec"
    assert set(options) - defaults - required == set(), "specs with neither default nor required"
    # A default written in the spec too must be the same value.
    differ = {
        name: (options[name]["default"], values[name])
        for name in defaults & set(options)
        if "default" in options[name] and options[name]["default"] != values[name]
    }
    assert differ == {}, "spec default != defaults/main.yml"
