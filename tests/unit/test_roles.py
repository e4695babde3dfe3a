"""Each role's meta/argument_specs.yml documents exactly the variables its defaults set.

Ansible validates role arguments against argument_specs; a default missing from the spec
goes unchecked, and a spec entry without a default or a `required` flag is a typo or dead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict), path
    return data


# Roles with inputs (fleet_common has no tasks, only the inputs the Redis roles share).
INPUT_ROLES = sorted(p.parent.parent.name for p in ROLES.glob("*/defaults/main.yml"))


@pytest.mark.parametrize("role", INPUT_ROLES)
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


def _declared(role: str) -> set[str]:
    """Every variable a role declares: its defaults and every entry point's spec."""
    names = set(_load(ROLES / role / "defaults" / "main.yml"))
    specs = _load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]
    for entry in specs.values():
        names |= set(entry.get("options") or {})
    return names


def test_every_input_has_one_owner() -> None:
    """A variable declared by two roles has two defaults and two descriptions that drift
    apart; a shared input lives in fleet_common, which the roles that read it depend on."""
    owners: dict[str, list[str]] = {}
    for role in INPUT_ROLES:
        for name in _declared(role):
            owners.setdefault(name, []).append(role)
    shared = {name: roles for name, roles in owners.items() if len(roles) > 1}
    assert shared == {}, "declared by more than one role; move them to roles/fleet_common"


def test_roles_that_read_a_shared_input_depend_on_fleet_common() -> None:
    shared = set(_load(ROLES / "fleet_common" / "defaults" / "main.yml"))
    for role in INPUT_ROLES:
        if role == "fleet_common":
            continue
        text = "".join(p.read_text() for p in (ROLES / role).rglob("*.yml"))
        text += "".join(p.read_text() for p in (ROLES / role).rglob("*.j2"))
        # A read with its own fallback (`| default(...)`) needs no dependency.
        used = {name for name in shared if re.search(rf"\b{name}\b(?!\s*\|\s*default\()", text)}
        meta = _load(ROLES / role / "meta" / "main.yml")
        if used:
            assert "fleet_common" in (meta.get("dependencies") or []), (role, sorted(used))
