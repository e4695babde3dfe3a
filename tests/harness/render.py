"""Render the shipped config templates the way the roles do, for processes on loopback.

``render("redis.conf.j2", role="redis", variables={...})`` loads ``roles/<role>/defaults/
main.yml``, lays ``variables`` over it (the host-specific inputs an inventory would give:
ports, paths, addresses, passwords, ``replicaof``) and renders ``templates/<name>`` with
Ansible's own templating engine (``ansible.template.Templar``, ansible-core 2.19). So the
integration tests, the fault suite and ``make bench`` start redis-server and redis-sentinel
from the very redis.conf, users.acl and sentinel.conf a deployment gets: a changed
template or role default changes what the tests run against, and no config text is
written in Python.

Why ``Templar`` and not a bare ``jinja2.Environment`` with Ansible's filter plugins: in
ansible-core 2.19 several core filters (``default``, ``map``, ``select``, ...) replace
Jinja's and only understand Ansible's own undefined markers, and the role defaults refer to
each other (``redis_acl_file: "{{ redis_conf_dir }}/users.acl"``). ``Templar`` resolves
those references lazily, as a play does, so defaults that need facts or inventory groups
(``redis_primary``) are never touched unless a template uses them. Every string that comes
from the defaults or from ``variables`` is marked trusted (2.19 renders only trusted
templates), exactly what a role's defaults file is to Ansible.

``ansible_managed`` is supplied (Ansible's default text). Everything else a template reads
is a role input documented in the role's ``meta/argument_specs.yml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
ROLES = REPO / "roles"
ANSIBLE_MANAGED = "Ansible managed"


@cache
def _defaults(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of role variables")
    return data


def role_defaults(role: str, roles: Path = ROLES) -> dict[str, Any]:
    """The role's ``defaults/main.yml`` as written (``{{ }}`` references unresolved), on top
    of the defaults of the roles it depends on (``meta/main.yml``), as Ansible sees them."""
    merged: dict[str, Any] = {}
    for dependency in _dependencies(roles / role / "meta" / "main.yml"):
        merged.update(role_defaults(dependency, roles))
    path = roles / role / "defaults" / "main.yml"
    if path.exists():
        merged.update(_defaults(path))
    return merged


@cache
def _dependencies(path: Path) -> tuple[str, ...]:
    if not path.exists():
        return ()
    meta = yaml.safe_load(path.read_text()) or {}
    return tuple(d if isinstance(d, str) else d["role"] for d in meta.get("dependencies") or [])


def _trusted(value: Any) -> Any:
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, Mapping):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_trusted(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def resolve(role: str, variables: Mapping[str, Any], name: str, *, roles: Path = ROLES) -> Any:
    """One variable of ``role`` as the templates see it (defaults resolved, overrides on top)."""
    return _templar(role, variables, roles).template(trust_as_template("{{ " + name + " }}"))


def _templar(role: str, variables: Mapping[str, Any], roles: Path) -> Templar:
    context = {
        "ansible_managed": ANSIBLE_MANAGED,
        **role_defaults(role, roles),
        **variables,
    }
    return Templar(loader=DataLoader(), variables=_trusted(context))


def render(
    template: str,
    *,
    role: str,
    variables: Mapping[str, Any],
    templates: Path = TEMPLATES,
    roles: Path = ROLES,
) -> str:
    """``templates/<template>`` rendered with ``role``'s defaults overridden by ``variables``."""
    return render_file(templates / template, role=role, variables=variables, roles=roles)


def render_file(
    path: Path,
    *,
    role: str,
    variables: Mapping[str, Any],
    roles: Path = ROLES,
    role_vars: bool = False,
) -> str:
    """Any shipped template (``systemd/...`` too) as the template module renders it: the
    collection's filter plugins loaded, includes found next to the file; with ``role_vars`` the
    role's ``vars/main.yml`` (its internals) over the defaults, as in a play."""
    _load_filter_plugins(roles)
    context = dict(variables)
    if role_vars:
        context = {**_defaults(roles / role / "vars" / "main.yml"), **context}
    templar = _templar(role, context, roles)
    templar = templar.copy_with_new_env(
        searchpath=[str(path.parent)], available_variables=templar.available_variables
    )
    return str(templar.template(trust_as_template(path.read_text())))


@cache
def _load_filter_plugins(roles: Path) -> None:
    """What ansible-playbook does with ansible.cfg's collections_path: the checkout is the
    collection celery_fleet.fleet, so its filters (``celery_fleet.fleet.*``) resolve."""
    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader([str(roles.parent / "collections")])
