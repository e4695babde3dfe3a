"""Upgrades and downgrades of Debian's Redis packages (runs last, after test_restore.py).

Debian's maintainer scripts restart redis-server and redis-sentinel after an upgrade; with
Ansible upgrading every host at once that would be every data node (and every Sentinel) at
the same moment. The roles keep Debian from restarting anything (policy-rc.d around apt),
then see the daemons running a replaced executable and restart them the way a config change
does: the replicas one at a time, the primary handed over first, the Sentinels one at a time.

The nodes' image has the bookworm version; bookworm-security (added to each node here, as
any Debian server has it) has a newer build of the same upstream release. In turn: an
upgrade by hand on one replica, left running the old executable, is restarted by a plain
converge (no version pinned); the older version pinned is a downgrade of that replica; the
newer one pinned moves every node while a client writes through the Sentinels, without a
lost write; a second converge with that pin changes nothing. docs/operations.md,
"Upgrading Redis".
"""

from __future__ import annotations

import subprocess
import time

import fleet
import pytest
from test_ha import MASTER, Writer, node_of, primaries_seen

NODES = fleet.hosts_in("redis")
PACKAGES = ("redis-server", "redis-tools", "redis-sentinel")
SECURITY = "deb http://deb.debian.org/debian-security bookworm-security main"
# An administrator's own policy-rc.d on one node: the roles must leave it as it was.
ADMIN_POLICY = "#!/bin/sh\n# kept by the administrator (molecule ha, test_upgrade.py)\nexit 101\n"
STATE: dict[str, str] = {}


def sh(node: str, *cmd: str) -> str:
    return fleet.docker("exec", node, *cmd)


def exists(node: str, path: str) -> bool:
    return (
        subprocess.run(
            ["docker", "exec", node, "test", "-e", path], capture_output=True, timeout=60
        ).returncode
        == 0
    )


def versions(node: str) -> dict[str, str]:
    out = sh(node, "dpkg-query", "--show", "--showformat", "${Package} ${Version}\\n", *PACKAGES)
    return dict(line.split(" ", 1) for line in out.splitlines())


def executables(node: str) -> dict[str, str]:
    """What each redis-server and redis-sentinel process of ``node`` runs (/proc/PID/exe),
    read as their user: root in these containers lacks CAP_SYS_PTRACE, which reading
    another user's exe link needs (proc(5))."""
    out = sh(
        node,
        "sh",
        "-c",
        'for p in $(pgrep -x "redis-server|redis-sentinel"); do '
        'echo "$(cat /proc/$p/comm) $(runuser -u redis -- readlink /proc/$p/exe)"; done',
    )
    return dict(line.split(" ", 1) for line in out.splitlines())


def replaced(node: str) -> list[str]:
    return [f"{name}: {exe}" for name, exe in executables(node).items() if "(deleted)" in exe]


def run_ids(node: str) -> tuple[str, str]:
    """(redis-server, redis-sentinel) run ids: a new one after each restart."""
    return (
        str(fleet.admin(node).info("server")["run_id"]),
        str(fleet.sentinel(node).info("server")["run_id"]),
    )


def current_primary() -> str:
    seen = primaries_seen()
    assert None not in seen.values(), seen
    assert len(set(seen.values())) == 1, seen
    return node_of(str(next(iter(seen.values()))))


def converge(version: str | None) -> subprocess.CompletedProcess[str]:
    """The broker roles (pki has nothing to do with packages), with a pinned version or the
    inventory's (none)."""
    pin = ["-e", f"redis_package_version={version}"] if version is not None else []
    result = fleet.converge([*pin, "--tags", "redis,redis_sentinel"])
    assert result.returncode == 0, result.stdout[-6000:]
    for password in fleet.passwords():
        assert password not in result.stdout + result.stderr
    return result


@pytest.fixture(scope="module", autouse=True)
def security_archive() -> None:
    """bookworm-security on every node, and the two versions: the one of bookworm (in the
    image) and the newer one of bookworm-security, read from apt, not written down here."""
    for node in NODES:
        sh(node, "sh", "-c", f"echo '{SECURITY}' > /etc/apt/sources.list.d/security.list")
        sh(node, "apt-get", "update", "-qq")
    madison = sh(NODES[0], "apt-cache", "madison", "redis-server").splitlines()
    by_suite = {line.split("|")[2].split()[1]: line.split("|")[1].strip() for line in madison}
    STATE.update(old=by_suite["bookworm/main"], new=by_suite["bookworm-security/main"])
    assert versions(NODES[0])["redis-server"] == STATE["old"], "the image has bookworm's"
    print(f"versions: {STATE['old']} (bookworm), {STATE['new']} (bookworm-security)")


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_an_upgrade_by_hand_left_running_is_restarted_by_a_converge() -> None:
    """apt by hand on one replica under a policy-rc.d (or with needrestart deferring): the
    packages are new, the daemons still run the old executable. A converge with no version
    pinned keeps the packages and restarts that node's daemons only."""
    replica = next(n for n in NODES if n != current_primary())
    sh(replica, "sh", "-c", "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d")
    sh(replica, "chmod", "755", "/usr/sbin/policy-rc.d")
    try:
        sh(
            replica,
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-qq",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            *[f"{p}={STATE['new']}" for p in PACKAGES],
        )
    finally:
        sh(replica, "rm", "-f", "/usr/sbin/policy-rc.d")
    assert len(replaced(replica)) == 2, executables(replica)
    before = {n: run_ids(n) for n in NODES}
    converge(None)
    assert versions(replica) == dict.fromkeys(PACKAGES, STATE["new"])
    for node in NODES:
        assert replaced(node) == [], node
        after = run_ids(node)
        if node == replica:
            assert all(a != b for a, b in zip(after, before[node], strict=True)), node
        else:
            assert after == before[node], f"{node} was restarted"
            assert versions(node) == dict.fromkeys(PACKAGES, STATE["old"]), node
    fleet.wait_for_quorum(NODES, MASTER, "the restart of the upgraded replica")
    STATE["replica"] = replica


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_an_older_version_pinned_is_a_downgrade_by_the_same_path() -> None:
    replica = STATE["replica"]
    before = {n: run_ids(n) for n in NODES}
    converge(STATE["old"])
    for node in NODES:
        assert versions(node) == dict.fromkeys(PACKAGES, STATE["old"]), node
        assert replaced(node) == [], node
        assert (run_ids(node) != before[node]) == (node == replica), node
    fleet.wait_for_quorum(NODES, MASTER, "the downgrade")


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_an_upgrade_moves_every_node_without_a_lost_write_or_a_crash() -> None:
    """Every node from the older version to the newer one while a client writes through the
    Sentinels every 50 ms: the replicas restart one at a time, the primary is handed over
    (writes paused, a replica in sync, SENTINEL FAILOVER) and restarts as a replica, the
    Sentinels restart one at a time. An administrator's policy-rc.d is left as it was."""
    old_primary = current_primary()
    keeper = NODES[-1]
    sh(keeper, "sh", "-c", f"printf '%s' '{ADMIN_POLICY}' > /usr/sbin/policy-rc.d")
    sh(keeper, "chmod", "755", "/usr/sbin/policy-rc.d")
    before = {n: run_ids(n) for n in NODES}
    writer = Writer("mol:ha:upgrade")
    writer.start()
    time.sleep(2)
    started = time.monotonic()
    try:
        result = converge(STATE["new"])
    finally:
        time.sleep(2)
        writer.stop.set()
        writer.join(30)
    print(f"upgrade converge under the writer: {time.monotonic() - started:.0f} s")
    try:
        assert sh(keeper, "cat", "/usr/sbin/policy-rc.d") == ADMIN_POLICY
    finally:
        sh(keeper, "rm", "-f", "/usr/sbin/policy-rc.d")
    for node in NODES:
        assert versions(node) == dict.fromkeys(PACKAGES, STATE["new"]), node
        assert replaced(node) == [], (node, executables(node))
        assert set(executables(node)) == {"redis-server", "redis-sentinel"}, node
        after = run_ids(node)
        assert all(a != b for a, b in zip(after, before[node], strict=True)), f"{node} restarted"
        if node != keeper:
            assert not exists(node, "/usr/sbin/policy-rc.d"), f"{node}: policy-rc.d left behind"
    # Handed over, not crashed: the primary moved, and the role never fell back to a
    # restart in place (tasks/restart_primary.yml says why when it does).
    assert "could not be handed to a replica" not in result.stdout
    new_primary = current_primary()
    assert new_primary != old_primary
    fleet.wait_for(
        lambda: fleet.replicates_from(old_primary, new_primary),
        60,
        f"{old_primary} to replicate from {new_primary}",
    )
    writer.check(new_primary, "upgrade")
    fleet.wait_for_quorum(NODES, MASTER, "the upgrade")
    STATE["primary"] = new_primary


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_a_second_converge_with_the_same_pin_changes_nothing() -> None:
    assert STATE.get("primary"), "runs after the upgrade"
    result = converge(STATE["new"])
    recap = fleet.recap(result.stdout)
    assert set(recap) == set(NODES)
    assert all(counts["changed"] == 0 for counts in recap.values()), recap
    assert current_primary() == STATE["primary"]
