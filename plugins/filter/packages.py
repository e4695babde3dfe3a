"""Debian package versions of the Redis roles (redis, redis_sentinel).

- ``fleet_debian_version_problem(value, name)``: "" when ``value`` is "" (keep what is
  installed) or one Debian version string (``[epoch:]upstream[-revision]``, Debian Policy
  5.6.12, e.g. ``5:7.0.15-1~deb12u10``), else what is wrong, starting with ``name``. No
  wildcard, space or ``=``: the value is appended to ``package=`` in the apt run.
- ``fleet_redis_package_plan(dpkg_lines, wanted, pin, family)``: what the role's apt run
  installs. Debian's ``redis`` source package builds ``redis-server``, ``redis-sentinel``,
  ``redis-tools`` and ``redis``, each depending on another at exactly its own version
  (``redis-server`` and ``redis-sentinel``: ``redis-tools (= version)``), so one of them
  cannot move alone: the plan moves every installed one of ``family`` (those four, the one
  the others depend on first) with the role's ``wanted`` packages. ``dpkg_lines``: the
  output of ``dpkg-query --show --showformat '${Package} ${db:Status-Status} ${Version}\\n'``.
  The version is ``pin``; without one, the version already installed (a new package of the
  family joins it instead of pulling the others to the candidate); with nothing installed,
  apt's candidate.
- ``fleet_redis_versions_problem(redis_version, sentinel_version, host, follower)``: on a
  host that is a data node and a Sentinel, "" when the two roles' versions agree (or the
  Sentinel's is "": it follows), else what is wrong. ``follower`` is the role whose
  preflight asks, named in the advice. Both roles check it before touching a host: the
  packages depend on each other at exactly one version, so two versions would have the two
  plays move them back and forth.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

# Debian Policy 5.6.12: epoch (digits), upstream version (starts with a digit; letters,
# digits, . + ~ and, with a revision, -), revision (letters, digits, + . ~).
DEBIAN_VERSION = re.compile(r"^(?:[0-9]+:)?[0-9][A-Za-z0-9.+~]*(?:-[A-Za-z0-9.+~]+)*$")


def fleet_debian_version_problem(value: Any, name: str) -> str:
    """'' if ``value`` is "" or a Debian version string, else the problem."""
    text = "" if value is None else str(value)
    if text == "" or DEBIAN_VERSION.match(text):
        return ""
    return (
        f"{name} is {json.dumps(text)}, not a Debian version: use the exact string apt shows "
        '(`apt-cache policy redis-server`, e.g. "5:7.0.15-1~deb12u10"), or "" to keep the '
        "installed version"
    )


def _installed(dpkg_lines: Iterable[str]) -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in dpkg_lines:
        parts = line.split()
        if len(parts) == 3 and parts[1] == "installed":
            versions[parts[0]] = parts[2]
    return versions


def fleet_redis_package_plan(
    dpkg_lines: Iterable[str], wanted: list[str], pin: str, family: list[str]
) -> dict[str, Any]:
    """``run``: whether apt must run; ``specs``: its ``name`` list (``package=version`` once a
    version is known); ``version``: that version ("" = apt's candidate); ``moves``: the
    installed packages whose version changes (``package old -> new``)."""
    installed = _installed(dpkg_lines)
    packages = list(wanted) + [p for p in family if p in installed and p not in wanted]
    version = str(pin or "") or next((installed[p] for p in family if p in installed), "")
    moves = [
        f"{p} {installed[p]} -> {version}"
        for p in packages
        if version and p in installed and installed[p] != version
    ]
    missing = [p for p in wanted if p not in installed]
    return {
        "run": bool(missing or moves),
        "specs": [f"{p}={version}" for p in packages] if version else packages,
        "version": version,
        "moves": moves,
        "missing": missing,
    }


def fleet_redis_versions_problem(
    redis_version: Any, sentinel_version: Any, host: str, follower: str
) -> str:
    """'' unless ``sentinel_version`` is set and differs from ``redis_version``."""
    data = "" if redis_version is None else str(redis_version)
    sentinel = "" if sentinel_version is None else str(sentinel_version)
    if sentinel in ("", data):
        return ""
    return (
        f"redis_sentinel_package_version is '{sentinel}' but redis_package_version is '{data}' "
        f"on {host}, a data node and a Sentinel: redis-server and redis-sentinel depend on "
        "redis-tools at exactly their own version, so both must be one version. Set "
        f"redis_package_version only ({follower} follows it)"
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "fleet_debian_version_problem": fleet_debian_version_problem,
            "fleet_redis_package_plan": fleet_redis_package_plan,
            "fleet_redis_versions_problem": fleet_redis_versions_problem,
        }
