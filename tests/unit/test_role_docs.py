"""docs/roles/ROLE.md carries the inputs table that tools/role_docs.py writes from the role's
meta/argument_specs.yml: a spec changed without `make docs` fails here."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from harness import modules

ROOT = Path(__file__).resolve().parents[2]


def _tool() -> ModuleType:
    return modules.load(ROOT / "tools" / "role_docs.py")


role_docs = _tool()


@pytest.mark.parametrize("role", role_docs.ROLES)
def test_inputs_table_matches_the_argument_specs(role: str) -> None:
    path = ROOT / "docs" / "roles" / f"{role}.md"
    page = path.read_text()
    assert page.count(role_docs.BEGIN) == 1
    assert page.count(role_docs.END) == 1
    assert role_docs.render(page, role_docs.table(role), path) == page, (
        f"{path.relative_to(ROOT)} is stale: run `make docs`"
    )


@pytest.mark.parametrize("role", role_docs.ROLES)
def test_every_input_says_what_it_does(role: str) -> None:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    vague = []
    for entry, body in specs["argument_specs"].items():
        options: dict[str, Any] = body.get("options", {})
        for name, spec in options.items():
            text = spec.get("description", "")
            text = " ".join(text) if isinstance(text, list) else str(text)
            if len(text) < 10 or "see docs/" in text.lower():
                vague.append(f"{entry}: {name}: {text!r}")
    assert vague == []


def test_markers_are_required(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no <!-- BEGIN INPUTS"):
        role_docs.render("# Role\n", "table", tmp_path / "x.md")
