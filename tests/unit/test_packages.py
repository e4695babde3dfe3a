"""The Redis roles' package plan (plugins/filter/packages.py): which packages the apt run
moves, to which version, and which version strings preflight accepts. The packages of
Debian's redis source depend on each other at exactly the same version, so the plan must
move every installed one together, and a pin is the truth (upgrades and downgrades alike)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import modules

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = modules.load(ROOT / "plugins" / "filter" / "packages.py")
FAMILY = ["redis-tools", "redis-server", "redis-sentinel", "redis"]
OLD = "5:7.0.15-1~deb12u7"
NEW = "5:7.0.15-1~deb12u10"


def plan(lines: list[str], wanted: list[str], pin: str = "") -> dict[str, Any]:
    result: dict[str, Any] = PLUGIN.fleet_redis_package_plan(lines, wanted, pin, FAMILY)
    return result


def dpkg(version: str, *packages: str) -> list[str]:
    """dpkg-query lines of ``packages`` installed at ``version``."""
    return [f"{p} installed {version}" for p in packages]


def test_nothing_installed_and_no_pin_installs_the_candidate() -> None:
    result = plan([], ["redis-server", "redis-tools"])
    assert result["run"] is True
    assert result["specs"] == ["redis-server", "redis-tools"]
    assert result["version"] == ""


def test_installed_and_no_pin_keeps_what_is_installed() -> None:
    result = plan(dpkg(OLD, "redis-server", "redis-tools"), ["redis-server", "redis-tools"])
    assert result["run"] is False
    assert result["moves"] == []


def test_a_new_package_joins_the_installed_version_without_a_pin() -> None:
    """A Sentinel added to a data node: redis-sentinel at the installed redis-tools' version,
    not the candidate (which would pull redis-tools, and so redis-server, along)."""
    result = plan(dpkg(OLD, "redis-server", "redis-tools"), ["redis-sentinel", "redis-tools"])
    assert result["run"] is True
    assert result["missing"] == ["redis-sentinel"]
    assert result["specs"] == [f"redis-sentinel={OLD}", f"redis-tools={OLD}", f"redis-server={OLD}"]


@pytest.mark.parametrize(("installed", "pin"), [(OLD, NEW), (NEW, OLD)], ids=["up", "down"])
def test_a_pin_moves_every_installed_package_of_the_family(installed: str, pin: str) -> None:
    lines = [*dpkg(installed, "redis-server", "redis-tools", "redis-sentinel")]
    lines.append("redis not-installed ")  # dpkg knows it, nothing installed
    result = plan(lines, ["redis-server", "redis-tools"], pin)
    assert result["run"] is True
    assert result["specs"] == [f"redis-server={pin}", f"redis-tools={pin}", f"redis-sentinel={pin}"]
    assert result["moves"] == [
        f"redis-server {installed} -> {pin}",
        f"redis-tools {installed} -> {pin}",
        f"redis-sentinel {installed} -> {pin}",
    ]


def test_a_pin_that_is_installed_changes_nothing() -> None:
    lines = dpkg(NEW, "redis-server", "redis-tools", "redis-sentinel")
    assert plan(lines, ["redis-sentinel", "redis-tools"], NEW)["run"] is False


def test_removed_packages_with_config_files_count_as_absent() -> None:
    lines = [*dpkg(NEW, "redis-tools"), f"redis-server config-files {OLD}"]
    result = plan(lines, ["redis-server", "redis-tools"])
    assert result["missing"] == ["redis-server"]
    assert result["specs"] == [f"redis-server={NEW}", f"redis-tools={NEW}"]


@pytest.mark.parametrize("value", ["", NEW, OLD, "7.0.15-1", "7.2.4", "1:2.0~rc1+dfsg-3.1"])
def test_debian_versions_pass(value: str) -> None:
    assert PLUGIN.fleet_debian_version_problem(value, "redis_package_version") == ""


@pytest.mark.parametrize(
    "value", ["latest", "7.0.*", "7.0.15 ", "=7.0.15", "7.0.15\nredis-server", "v7.2", ":7.2"]
)
def test_other_strings_are_refused_naming_the_variable(value: str) -> None:
    problem = PLUGIN.fleet_debian_version_problem(value, "redis_package_version")
    assert problem.startswith("redis_package_version is "), problem
    assert "apt-cache policy redis-server" in problem


@pytest.mark.parametrize("sentinel", ["", NEW])
def test_a_host_of_both_roles_with_one_version_passes(sentinel: str) -> None:
    assert PLUGIN.fleet_redis_versions_problem(NEW, sentinel, "node1", "this role") == ""


@pytest.mark.parametrize("data", ["", OLD])
def test_a_host_of_both_roles_with_two_versions_is_refused(data: str) -> None:
    problem = PLUGIN.fleet_redis_versions_problem(data, NEW, "node1", "role redis_sentinel")
    assert problem.startswith(f"redis_sentinel_package_version is '{NEW}' but ")
    assert "on node1" in problem
    assert "Set redis_package_version only (role redis_sentinel follows it)" in problem
