"""Backup and restore of the broker (runs last: after test_ha.py, test_partition.py and
test_pki_rotation.py).

The nodes start on the inventory's settings: test_ha.py's last converge (its handover test)
applies them, test_partition.py converges nothing and test_pki_rotation.py's converges keep
them; checked first, on the setting that
test_ha.py's config changes vary. Then real Celery messages (send_task through the
Sentinels) and real dead letters (the worker's own writer) go to the primary; the backup
service runs on every node as its timer would (one more time than the retention), on the
replicas only; every node's data is then wiped (Redis stopped, its RDB and AOF deleted:
empty nodes), `playbooks/restore.yml` brings a former replica up as the primary from a
snapshot copied to the controller, and the queue, the dead letters, replication, AOF and
the Sentinels must all be back. docs/operations.md, "Backing up and restoring the broker".
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import fleet
import pytest
from celery import Celery
from test_ha import INVENTORY_MAX_LAG, MASTER, max_lag, node_of, primaries_seen
from test_partition import celery_env

from celery_fleet.deadletter import writer
from celery_fleet.deadletter.config import Config
from celery_fleet.deadletter.entry import Entry
from celery_fleet.settings import load

NODES = fleet.hosts_in("redis")
GV = fleet.group_vars()
BACKUP_DIR = str(GV.get("redis_backup_dir", "/var/lib/redis-backup"))
SHIP_DIR = str(GV["redis_backup_ship_dir"])
RETAIN = int(GV["redis_backup_retain"])
SERVICE = "celery-fleet-redis-backup"
DEAD_LETTERS = "celery-fleet:dead-letters"
PLAYBOOKS = fleet.PROJECT_DIR / "playbooks"
# What the data test wrote and backed up, for the tests after it.
STATE: dict[str, Any] = {}


def sh(node: str, *cmd: str) -> str:
    return fleet.docker("exec", node, *cmd)


def snapshots(node: str, folder: str) -> list[str]:
    """This node's snapshot files in ``folder``, oldest first (the names carry the time)."""
    out = sh(node, "find", folder, "-maxdepth", "1", "-type", "f", "-name", f"{node}-*.rdb")
    return sorted(Path(p).name for p in out.split())


def backup(node: str) -> subprocess.CompletedProcess[str]:
    """Start the backup service as its timer does (oneshot: returns when the run is over)."""
    return subprocess.run(
        ["docker", "exec", node, "systemctl", "start", f"{SERVICE}.service"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rdb_ok(node: str, path: str) -> bool:
    result = subprocess.run(
        ["docker", "exec", node, "redis-check-rdb", path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0 and "RDB looks OK" in result.stdout


def current_primary() -> str:
    seen = primaries_seen()
    assert len(set(seen.values())) == 1, seen
    assert None not in seen.values(), seen
    return node_of(str(next(iter(seen.values()))))


@pytest.mark.parametrize("node", NODES)
def test_the_backup_timer_is_scheduled_and_its_secrets_are_private(node: str) -> None:
    assert sh(node, "systemctl", "is-enabled", f"{SERVICE}.timer").strip() == "enabled"
    assert sh(node, "systemctl", "is-active", f"{SERVICE}.timer").strip() == "active"
    assert sh(node, "stat", "-c", "%U %a", BACKUP_DIR).strip() == "redis 700"
    assert sh(node, "stat", "-c", "%U %a", "/etc/redis/backup.env").strip() == "root 600"
    unit = sh(node, "systemctl", "cat", f"{SERVICE}.service", f"{SERVICE}.timer")
    for password in fleet.passwords():
        assert password not in unit
    line = next(u for u in fleet.admin(node).acl_list() if u.startswith("user backup "))
    rules = line.split(" resetchannels ", 1)[1].split()
    assert rules[0] == "-@all", line
    assert sorted(rules[1:]) == ["+ping", "+replconf", "+role", "+sync"], line


def test_before_the_backup_every_node_runs_the_inventory_settings() -> None:
    """test_ha.py passes ``-e redis_min_replicas_max_lag=...`` to a converge, and the nodes
    keep such settings; its last converge (the handover test) goes back to the inventory.
    Checked here, not converged again: if the order of the tests changes, this fails instead
    of the converge after the restore reporting changes the restore did not make."""
    live = {node: max_lag(node) for node in NODES}
    assert live == dict.fromkeys(NODES, INVENTORY_MAX_LAG), live
    STATE.update(baseline=True)


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_a_snapshot_restored_onto_wiped_nodes_brings_back_the_queue_and_the_dead_letters(
    tmp_path: Path,
) -> None:
    assert STATE.get("baseline"), "runs after the check of the inventory's settings"
    started = time.monotonic()
    primary = current_primary()
    fleet.wait_for(
        lambda: fleet.admin(primary).info("replication")["connected_slaves"] == 2,
        60,
        f"both replicas connected to {primary}",
    )
    # Queued tasks: real Celery messages, through the Sentinels, as a producer sends them.
    env = celery_env()
    client = Celery("restore_client", set_as_current=False)
    client.conf.update(load(env))
    queue = client.conf.task_default_queue
    marker = uuid.uuid4().hex
    sent = [client.send_task("mol.restore.probe", args=[marker, i]).id for i in range(5)]
    # Dead letters: written by the worker's own writer (XADD, the app user's only right there).
    ids = [
        writer.write(
            client,
            Entry(
                reason="failed",
                task_id=f"{marker}-{i}",
                name="mol.restore.failed",
                args=f"[{i}]",
                kwargs="{}",
                exc_type="ValueError",
                failed_at=time.time(),
            ),
            Config(),
        )
        for i in range(3)
    ]
    assert None not in ids, ids
    admin = fleet.admin(primary)
    assert admin.wait(2, 5000) == 2
    queued = admin.lrange(queue, 0, -1)
    assert all(any(task_id.encode() in m for m in queued) for task_id in sent), queued
    dead = admin.xrange(DEAD_LETTERS)
    assert [i.encode() for i in ids] == [e[0] for e in dead][-3:]

    # The ship folder is not mounted yet: the run fails, the verified local copy stays.
    replicas = [n for n in NODES if n != primary]
    unmounted = snapshots(replicas[0], BACKUP_DIR)
    result = backup(replicas[0])
    assert result.returncode != 0, "a missing ship folder must fail the run"
    journal = sh(replicas[0], "journalctl", "-u", SERVICE, "-n", "12", "--output", "cat")
    assert f"SHIP_DIR {SHIP_DIR} is not a writable directory" in journal, journal
    assert len(snapshots(replicas[0], BACKUP_DIR)) == len(unmounted) + 1
    # "Mounted" now: a folder the redis user may write, as a mount would be.
    for node in NODES:
        sh(node, "install", "-d", "-o", "redis", "-g", "redis", "-m", "0700", SHIP_DIR)

    # The backup service, once more than the retention, on every node.
    first: dict[str, list[str]] = {}
    before = {n: snapshots(n, BACKUP_DIR) for n in NODES}
    for node in NODES:
        for run in range(RETAIN + 1):
            result = backup(node)
            assert result.returncode == 0, (
                node,
                result.stderr,
                sh(node, "journalctl", "-u", SERVICE, "-n", "20", "--no-pager"),
            )
            if run == 0:
                first[node] = snapshots(node, BACKUP_DIR)
    assert snapshots(primary, BACKUP_DIR) == before[primary], "the primary (with replicas) skips"
    log = sh(primary, "journalctl", "-u", SERVICE, "--output", "cat", "--no-pager")
    assert "they take the snapshots; nothing to do" in log
    for node in replicas:
        kept = snapshots(node, BACKUP_DIR)
        assert len(kept) == RETAIN, kept
        assert first[node][0] not in kept, "the oldest copy was pruned"
        assert snapshots(node, SHIP_DIR) == kept
        for name in kept:
            assert rdb_ok(node, f"{BACKUP_DIR}/{name}")
            assert rdb_ok(node, f"{SHIP_DIR}/{name}")
            owner_mode = sh(node, "stat", "-c", "%U %a", f"{BACKUP_DIR}/{name}").strip()
            assert owner_mode == "redis 600", owner_mode
    source = replicas[0]
    snapshot = tmp_path / "snapshot.rdb"
    fleet.docker("cp", f"{source}:{SHIP_DIR}/{snapshots(source, SHIP_DIR)[-1]}", str(snapshot))
    print(f"backups: {time.monotonic() - started:.0f} s, snapshot {snapshot.stat().st_size} bytes")

    # Every node wiped: no Sentinel may fail over meanwhile, no RDB or AOF survives.
    for node in NODES:
        sh(node, "systemctl", "stop", "redis-sentinel")
    for node in NODES:
        sh(node, "systemctl", "stop", "redis-server")
        sh(node, "rm", "-rf", "/var/lib/redis/appendonlydir", "/var/lib/redis/dump.rdb")
    for node in NODES:
        sh(node, "systemctl", "start", "redis-server")
    for node in NODES:
        sh(node, "systemctl", "start", "redis-sentinel")
    assert fleet.admin(primary).dbsize() == 0
    assert fleet.admin(primary).exists(queue, DEAD_LETTERS) == 0

    # The restore, onto a former replica.
    target = replicas[-1]
    restore_started = time.monotonic()
    result = fleet.converge(
        ["-e", f"redis_restore_snapshot={snapshot}", "-e", f"redis_restore_primary={target}"],
        playbook=PLAYBOOKS / "restore.yml",
    )
    assert result.returncode == 0, result.stdout[-6000:]
    print(f"restore playbook: {time.monotonic() - restore_started:.0f} s")
    for password in fleet.passwords():
        assert password not in result.stdout + result.stderr
    new = fleet.admin(target)
    assert new.info("replication")["role"] == "master"
    assert new.lrange(queue, 0, -1) == queued
    assert new.xrange(DEAD_LETTERS) == dead
    for node in NODES:
        if node != target:
            fleet.wait_for(
                lambda node=node: fleet.replicates_from(node, target),
                60,
                f"{node} to replicate from the restored primary {target}",
            )
            replica = fleet.admin(node)
            assert replica.lrange(queue, 0, -1) == queued
            assert replica.xrange(DEAD_LETTERS) == dead
    # AOF on again, written from the restored data; redis.conf as the role renders it.
    assert new.config_get("appendonly") == {"appendonly": "yes"}
    assert "manifest" in sh(target, "ls", "/var/lib/redis/appendonlydir")
    conf = sh(target, "cat", "/etc/redis/server/redis.conf")
    assert "\nappendonly yes\n" in conf
    assert "\nreplicaof " not in conf
    fleet.wait_for(
        lambda: set(primaries_seen().values()) == {fleet.address(target)},
        60,
        "all three Sentinels to report the restored primary",
    )
    fleet.wait_for_quorum(NODES, MASTER, "the restore")
    STATE.update(primary=target, queue=queue, queued=queued, dead=dead)
    print(f"backup + wipe + restore: {time.monotonic() - started:.0f} s")


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_after_the_restore_a_backup_works_and_a_converge_changes_nothing() -> None:
    assert STATE, "runs after the restore test"
    target = STATE["primary"]
    before = {n: snapshots(n, BACKUP_DIR) for n in NODES}
    result = fleet.converge(playbook=PLAYBOOKS / "backup.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    for node in NODES:
        kept = snapshots(node, BACKUP_DIR)
        if node == target:
            assert kept == before[node], "the restored primary (with replicas) takes none"
            continue
        assert len(kept) == min(RETAIN, len(before[node]) + 1), kept
        assert kept[-1] not in before[node]
        assert rdb_ok(node, f"{BACKUP_DIR}/{kept[-1]}")
    # The broker roles only (pki has nothing to do with the restored files).
    result = fleet.converge(["--tags", "redis,redis_sentinel"])
    assert result.returncode == 0, result.stdout[-4000:]
    recap = fleet.recap(result.stdout)
    assert all(counts["changed"] == 0 for counts in recap.values()), recap
    assert set(primaries_seen().values()) == {fleet.address(target)}
    assert fleet.admin(target).lrange(STATE["queue"], 0, -1) == STATE["queued"]
