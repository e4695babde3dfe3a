"""Write the inputs table of each docs/roles/ROLE.md from roles/ROLE/meta/argument_specs.yml.

Only the text between the two marker comments is rewritten; the rest of each page is prose.
`make docs` runs it; tests/unit/test_role_docs.py fails when a page is stale.

    python tools/role_docs.py            # rewrite the pages
    python tools/role_docs.py --check    # exit 1 and name the stale pages
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = (
    "fleet_common",
    "pki",
    "redis",
    "redis_sentinel",
    "rabbitmq",
    "celery",
    "flower",
    "monitoring",
)
BEGIN = "<!-- BEGIN INPUTS (generated from meta/argument_specs.yml: make docs) -->"
END = "<!-- END INPUTS -->"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping")
    return data


def _cell(text: str) -> str:
    """One table cell: a single line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _prose(text: str) -> str:
    """A cell of prose: also escape what Markdown would read as emphasis or HTML."""
    return _cell(text).replace("*", "\\*").replace("<", "\\<")


def _code(text: str) -> str:
    ticks = "``" if "`" in text else "`"
    pad = " " if ticks == "``" else ""
    return f"{ticks}{pad}{_cell(text)}{pad}{ticks}"


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return _code("true" if value else "false")
    if isinstance(value, str):
        # Quote strings that YAML would read as something else: "0", "yes", "".
        tag = yaml.resolver.Resolver().resolve(yaml.ScalarNode, value, (True, False))
        return _code(value) if tag == "tag:yaml.org,2002:str" else _code(f'"{value}"')
    if isinstance(value, int | float):
        return _code(str(value))
    flow = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    return _code(flow.strip())


def _description(spec: dict[str, Any]) -> str:
    text = spec.get("description", "")
    if isinstance(text, list):
        text = " ".join(text)
    text = str(text)
    if spec.get("choices"):
        choices = ", ".join(_default(choice) for choice in spec["choices"])
        return f"{_prose(text)} Choices: {choices}."
    return _prose(text)


def _type(spec: dict[str, Any]) -> str:
    name = str(spec.get("type", "str"))  # Ansible's default type
    if spec.get("elements"):
        name += f" of {spec['elements']}"
    return name


def table(role: str, root: Path = ROOT) -> str:
    """The generated block of one role, markers included."""
    specs = _load(root / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    defaults = _load(root / "roles" / role / "defaults" / "main.yml")
    lines = [
        BEGIN,
        "| Variable | Type | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for name, spec in specs["main"].get("options", {}).items():
        if "default" in spec:
            default = _default(spec["default"])
        elif spec.get("required"):
            default = "required"
        elif name in defaults:
            default = _default(defaults[name])
        else:
            default = "none"
        lines.append(f"| `{name}` | {_type(spec)} | {default} | {_description(spec)} |")
    for entry, body in specs.items():
        if entry == "main":
            continue
        names = ", ".join(f"`{name}`" for name in body.get("options", {}))
        what = _prose(str(body.get("short_description", ""))).rstrip(".")
        lines += ["", f"`tasks_from: {entry}`: {what}. Reads {names}."]
    lines.append(END)
    return "\n".join(lines)


def render(page: str, block: str, path: Path) -> str:
    """The page with its generated block replaced."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block")
    return page[:start] + block + page[end + len(END) :]


def stale(root: Path = ROOT, write: bool = False) -> list[Path]:
    """Pages whose block differs from the specs (rewritten when write is true)."""
    out = []
    for role in ROLES:
        path = root / "docs" / "roles" / f"{role}.md"
        page = path.read_text()
        new = render(page, table(role, root), path)
        if new != page:
            out.append(path)
            if write:
                path.write_text(new)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale pages")
    args = parser.parse_args(argv)
    changed = stale(write=not args.check)
    for path in changed:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(ROOT)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
