"""Three nodes: primary + two replicas over TLS, three Sentinels. The tests run in file order:
static checks first, then a real failover (docker stop), the old primary's return, and a
converge after the failover that must change nothing and keep the new primary. Then two
config changes of min-replicas-max-lag: the first (all Sentinels down) sets the inventory's
value + 1, the last (the handover) converges back to the inventory, so that the files after
this one (test_partition.py, test_restore.py) start on the inventory's settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import fleet
import pytest
import redis
import sandbox

from harness import render

NODES = fleet.hosts_in("redis")
MASTER = fleet.group_vars().get("redis_master_name", "fleet")
BOOTSTRAP_PRIMARY = NODES[0]
# min-replicas-max-lag as the inventory sets it: the scenario's group_vars, else the role's
# shipped default (read from roles/redis/defaults/main.yml, not copied).
INVENTORY_MAX_LAG = int(
    fleet.group_vars().get(
        "redis_min_replicas_max_lag", render.role_defaults("redis")["redis_min_replicas_max_lag"]
    )
)


def role(node: str) -> str:
    return str(fleet.admin(node).info("replication")["role"])


def max_lag(node: str) -> int:
    """The node's live min-replicas-max-lag (CONFIG GET)."""
    return int(fleet.admin(node).config_get("min-replicas-max-lag")["min-replicas-max-lag"])


def primaries_seen(nodes: list[str] | None = None) -> dict[str, str | None]:
    """What each reachable Sentinel says the primary is (None when it cannot be asked)."""
    seen: dict[str, str | None] = {}
    for node in NODES if nodes is None else nodes:
        try:
            addr = fleet.sentinel(node).execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER
            )
            seen[node] = addr[0].decode() if addr else None
        except redis.RedisError:
            seen[node] = None
    return seen


def node_of(address: str) -> str:
    return next(n for n in NODES if fleet.address(n) == address)


def test_each_node_listens_on_the_tls_ports_only(host) -> None:
    ports = {
        int(s.split(":")[-1])
        for s in host.socket.get_listening_sockets()
        if s.startswith("tcp") and "127.0.0.11" not in s
    }
    assert ports == {6379, 26379}


def test_sentinel_config_is_private_and_writable_by_sentinel(host) -> None:
    f = host.file("/etc/redis/sentinel/sentinel.conf")
    assert f.user == "redis"
    # The role writes 0600 and the unit's UMask=0077 keeps Sentinel's own rewrites 0600.
    assert f.mode == 0o600, oct(f.mode)
    assert host.file("/etc/redis/sentinel").user == "redis"
    assert host.service("redis-sentinel").is_running


@pytest.mark.parametrize("node", NODES)
def test_redis_and_sentinel_may_write_only_their_own_config_folder_in_etc(node: str) -> None:
    """Both run as user redis, which owns /etc/redis (Debian); each unit's sandbox, tried from
    inside it, lets it write only the folder of its own config file."""
    others = ["/etc/redis/.probe", "/etc/redis/tls/.probe", "/etc/.probe"]
    server = "/etc/redis/server/.probe"
    sentinel = "/etc/redis/sentinel/.probe"
    assert sandbox.writes(node, "redis-server", "redis", [server, sentinel, *others]) == {
        server: "written",
        sentinel: "EROFS",
        **dict.fromkeys(others, "EROFS"),
    }
    assert sandbox.writes(node, "redis-sentinel", "redis", [sentinel, server, *others]) == {
        sentinel: "written",
        server: "EROFS",
        **dict.fromkeys(others, "EROFS"),
    }


def test_the_bootstrap_primary_replicates_to_both_replicas_over_tls() -> None:
    primary = fleet.admin(BOOTSTRAP_PRIMARY)
    info = primary.info("replication")
    assert info["role"] == "master"
    assert info["connected_slaves"] == 2
    for node in NODES[1:]:
        replica = fleet.admin(node)
        rinfo = replica.info("replication")
        assert rinfo["role"] == "slave"
        assert rinfo["master_host"] == fleet.address(BOOTSTRAP_PRIMARY)
        assert rinfo["master_link_status"] == "up"
        assert replica.config_get("tls-replication")["tls-replication"] == "yes"
        assert replica.config_get("port")["port"] == "0"  # no plaintext path exists
    fleet.app(BOOTSTRAP_PRIMARY).set("mol:ha:probe", "42")
    assert primary.wait(2, 5000) == 2
    for node in NODES[1:]:
        assert fleet.app(node).get("mol:ha:probe") == b"42"


def test_replicas_refuse_writes() -> None:
    with pytest.raises(redis.ReadOnlyError):
        fleet.app(NODES[1]).set("mol:ha:x", "1")


@pytest.mark.parametrize("node", NODES)
def test_every_sentinel_has_a_quorum(node: str) -> None:
    answer = fleet.sentinel(node).execute_command("SENTINEL", "CKQUORUM", MASTER)
    assert answer.startswith(b"OK 3 usable Sentinels"), answer


def test_all_sentinels_agree_on_the_bootstrap_primary() -> None:
    assert set(primaries_seen().values()) == {fleet.address(BOOTSTRAP_PRIMARY)}


def test_sentinels_know_every_peer_by_ip_address() -> None:
    """IPs, not hostnames: a stopped container's name stops resolving (redis/redis#12753)."""
    addresses = {fleet.address(n) for n in NODES}
    for node in NODES:
        s = fleet.sentinel(node)
        replicas = s.sentinel_slaves(MASTER)
        sentinels = s.sentinel_sentinels(MASTER)
        seen = {str(entry["ip"]) for entry in replicas + sentinels}
        assert seen <= addresses, seen
        assert len(replicas) == 2
        assert len(sentinels) == 2
        config = s.execute_command("SENTINEL", "CONFIG", "GET", "resolve-hostnames")
        assert config == {b"resolve-hostnames": b"no"}


def test_sentinels_refuse_plaintext_and_wrong_passwords() -> None:
    node = NODES[0]
    with pytest.raises(redis.ConnectionError):
        fleet.client(
            node, 26379, tls=False, password=fleet.group_vars()["redis_sentinel_password"]
        ).ping()
    with pytest.raises(redis.AuthenticationError):
        fleet.client(node, 26379, password="wrong-password-123456").ping()
    with pytest.raises(redis.AuthenticationError):
        fleet.client(node, 26379).ping()


@pytest.mark.parametrize(
    "command",
    [
        ["SENTINEL", "MONITOR", "evil", "192.0.2.66", "6379", "1"],
        ["SENTINEL", "REMOVE", MASTER],
        ["SENTINEL", "SET", MASTER, "down-after-milliseconds", "1"],
        ["SENTINEL", "FAILOVER", MASTER],
        ["SENTINEL", "RESET", "*"],
        ["SENTINEL", "CONFIG", "SET", "resolve-hostnames", "yes"],
        ["SENTINEL", "IS-MASTER-DOWN-BY-ADDR", "127.0.0.1", "6379", "0", "*"],
        ["PUBLISH", "__sentinel__:hello", "forged"],
        ["SUBSCRIBE", "__sentinel__:hello"],
        ["ACL", "LIST"],
        ["SHUTDOWN"],
    ],
    ids=lambda c: "-".join(c[:2]).lower(),
)
def test_the_client_user_of_the_sentinels_cannot_change_anything(command: list[str]) -> None:
    """Workers and Flower hold this user: discovery only, every write refused."""
    with pytest.raises(redis.exceptions.NoPermissionError):
        fleet.sentinel_client(NODES[0]).execute_command(*command)


def test_the_client_user_of_the_sentinels_finds_the_primary() -> None:
    s = fleet.sentinel_client(NODES[1])
    addr = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
    assert addr[0].decode() == fleet.address(BOOTSTRAP_PRIMARY)
    assert s.execute_command("SENTINEL", "SENTINELS", MASTER)


def test_failover_promotes_a_replica_and_the_old_primary_rejoins() -> None:
    old = BOOTSTRAP_PRIMARY
    fleet.app(old).set("mol:ha:before-failover", "kept")
    fleet.admin(old).wait(2, 5000)
    fleet.docker("stop", "--time", "10", old)
    try:
        seen = fleet.wait_for(
            lambda: (
                lambda s: (
                    s
                    if len({s[n] for n in NODES[1:]}) == 1
                    and s[NODES[1]] not in (None, fleet.address(old))
                    else None
                )
            )(primaries_seen()),
            60,
            "the two remaining Sentinels to agree on a new primary",
        )
        new = node_of(str(seen[NODES[1]]))
        assert new in NODES[1:]
        fleet.wait_for(lambda: role(new) == "master", 30, f"{new} to act as primary")
        assert fleet.app(new).get("mol:ha:before-failover") == b"kept"  # no write lost
        fleet.app(new).set("mol:ha:after-failover", "yes")
    finally:
        fleet.docker("start", old)
    fleet.wait_for(
        lambda: fleet.replicates_from(old, new),
        90,
        f"the old primary {old} to rejoin as a replica of {new}",
    )
    fleet.wait_for(
        lambda: set(primaries_seen().values()) == {fleet.address(new)},
        60,
        "all three Sentinels (the restarted one too) to agree on the new primary",
    )
    fleet.wait_for(
        lambda: fleet.app(old).get("mol:ha:after-failover") == b"yes",
        30,
        "the old primary to receive writes made after the failover",
    )
    fleet.wait_for_quorum(NODES, MASTER, "the failover")


@pytest.mark.parametrize("node", NODES)
def test_config_files_stay_0600_after_the_failover_rewrites_them(node: str) -> None:
    for path in (
        "/etc/redis/server/redis.conf",
        "/etc/redis/server/users.acl",
        "/etc/redis/sentinel/sentinel.conf",
    ):
        owner_mode = fleet.docker("exec", node, "stat", "-c", "%U %a", path).strip()
        assert owner_mode == "redis 600", f"{path} on {node}: {owner_mode}"


def test_the_app_user_cannot_forge_a_sentinel_hello() -> None:
    """A forged hello on __sentinel__:hello would make the Sentinels follow another primary."""
    primary = node_of(str(primaries_seen()[NODES[0]]))
    app = fleet.app(primary)
    forged = ",".join(
        [fleet.address(primary), "26379", "f" * 40, "99", MASTER, "192.0.2.66", "6379", "99"]
    )
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.publish("__sentinel__:hello", forged)
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.execute_command("SUBSCRIBE", "__sentinel__:hello")
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.execute_command("PSUBSCRIBE", "*")
    assert set(primaries_seen().values()) == {fleet.address(primary)}


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_converging_after_the_failover_changes_nothing_and_keeps_the_new_primary() -> None:
    before = primaries_seen()
    assert len(set(before.values())) == 1
    new_address = next(iter(before.values()))
    assert new_address != fleet.address(BOOTSTRAP_PRIMARY)
    result = fleet.converge()
    assert result.returncode == 0, result.stdout[-4000:]
    recap = fleet.recap(result.stdout)
    assert set(recap) == set(NODES)
    assert all(counts["changed"] == 0 for counts in recap.values()), recap
    for password in fleet.passwords():
        assert password not in result.stdout + result.stderr
    assert set(primaries_seen().values()) == {new_address}
    assert role(node_of(str(new_address))) == "master"
    assert role(BOOTSTRAP_PRIMARY) == "slave"


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_a_config_change_without_any_sentinel_still_follows_the_live_primary() -> None:
    """Sentinels all down and a setting changed (redis.conf is re-rendered): the role asks the
    data nodes, so the new primary stays primary instead of the inventory's bootstrap choice.

    Leaves min-replicas-max-lag at the inventory's value + 1 on every node, on purpose: the
    handover test below (later in this file) converges back to the inventory, a change."""
    current = next(iter(primaries_seen().values()))
    assert current is not None
    new = node_of(current)
    lag = INVENTORY_MAX_LAG + 1
    for node in NODES:
        fleet.docker("exec", node, "systemctl", "stop", "redis-sentinel")
    result = fleet.converge(["-e", f"redis_min_replicas_max_lag={lag}", "--tags", "redis"])
    assert result.returncode == 0, result.stdout[-4000:]
    assert "(from data nodes)" in result.stdout
    assert {n: max_lag(n) for n in NODES} == dict.fromkeys(NODES, lag)
    for node in NODES:
        fleet.docker("exec", node, "systemctl", "start", "redis-sentinel")
    assert role(new) == "master"
    for node in NODES:
        if node != new:
            info = fleet.admin(node).info("replication")
            assert info["role"] == "slave"
            assert info["master_host"] == current
    fleet.wait_for(
        lambda: set(primaries_seen().values()) == {current},
        60,
        "the restarted Sentinels to report the same primary",
    )


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_preflight_refuses_a_quorum_larger_than_the_sentinels() -> None:
    result = fleet.converge(["-e", "redis_sentinel_quorum=4", "--tags", "redis_sentinel_preflight"])
    assert result.returncode != 0
    assert "redis_sentinel_quorum=4" in result.stdout + result.stderr
    assert all(counts["changed"] == 0 for counts in fleet.recap(result.stdout).values())


def test_a_crashed_primary_waits_for_the_failover_and_rejoins_as_a_replica() -> None:
    """SIGKILL redis-server on the primary: Debian's unit would restart it after 100 ms as the
    primary with only its last fsync (the replicas then resynchronise from it). The role's
    RestartSec= (2 x down-after + 5 s) keeps it down until the Sentinels promote a replica
    that has every acknowledged write; the crashed node then rejoins as its replica."""
    old = node_of(str(next(iter(primaries_seen().values()))))
    fleet.wait_for(
        lambda: fleet.admin(old).info("replication")["connected_slaves"] == 2,
        60,
        f"both replicas connected to {old}",
    )
    fleet.app(old).set("mol:ha:before-crash", "kept")
    assert fleet.admin(old).wait(2, 5000) == 2
    restart_sec = fleet.docker(
        "exec", old, "systemctl", "show", "-P", "RestartUSec", "redis-server"
    ).strip()
    assert restart_sec == "9s", restart_sec  # down-after 2000 ms in this scenario
    fleet.docker("exec", old, "systemctl", "kill", "--signal=SIGKILL", "redis-server")
    seen = fleet.wait_for(
        lambda: (
            lambda s: (
                s
                if len(set(s.values())) == 1
                and None not in s.values()
                and fleet.address(old) not in s.values()
                else None
            )
        )(primaries_seen()),
        60,
        "the Sentinels to promote a replica while the crashed primary waits to restart",
    )
    new = node_of(str(next(iter(seen.values()))))
    assert fleet.app(new).get("mol:ha:before-crash") == b"kept"
    fleet.app(new).set("mol:ha:after-crash", "yes")
    fleet.wait_for(
        lambda: fleet.replicates_from(old, new),
        90,
        f"the crashed primary {old} to restart and rejoin as a replica of {new}",
    )
    fleet.wait_for(
        lambda: fleet.app(old).get("mol:ha:after-crash") == b"yes",
        30,
        "the restarted node to receive writes made after the failover",
    )
    fleet.wait_for(
        lambda: set(primaries_seen().values()) == {fleet.address(new)},
        60,
        "all three Sentinels to agree on the new primary",
    )


def primary_seen_by(node: str) -> str | None:
    return primaries_seen([node])[node]


class Writer(threading.Thread):
    """RPUSH a counter to whichever node the Sentinels name, every 50 ms, retrying each
    value until a primary acknowledges it; records the acknowledged values and times."""

    def __init__(self, key: str, connect: Callable[[str], redis.Redis] = fleet.app) -> None:
        super().__init__(daemon=True)
        self.key = key
        self.connect = connect  # a node's name -> a client of the app user
        self.acked: list[int] = []
        self.times: list[float] = []
        self.errors = 0
        self.failures: list[str] = []  # each error, as the client saw it
        self.stop = threading.Event()

    def run(self) -> None:
        value = 0
        while not self.stop.is_set():
            try:
                primary = node_of(str(next(a for a in map(primary_seen_by, NODES) if a)))
                self.connect(primary).rpush(self.key, value)
            except (redis.RedisError, StopIteration) as error:
                self.errors += 1
                self.failures.append(repr(error))
                time.sleep(0.2)
                continue
            self.acked.append(value)
            self.times.append(time.monotonic())
            value += 1
            time.sleep(0.05)

    def longest_gap(self) -> float:
        return max(b - a for a, b in zip(self.times, self.times[1:], strict=False))

    def check(self, primary: str, what: str) -> None:
        """Every acknowledged value is in the list on ``primary``, and writes never stalled
        for longer than a failover; prints the figures for ``what``."""
        stored = {int(v) for v in fleet.app(primary).lrange(self.key, 0, -1)}
        lost = [v for v in self.acked if v not in stored]
        assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:20]}"
        assert len(self.acked) > 100, len(self.acked)
        gap = self.longest_gap()
        print(f"{what}: {len(self.acked)} writes, longest gap {gap:.1f}s, {self.errors} retries")
        assert gap < 45, f"writes stalled for {gap:.1f}s"


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_a_config_change_restarts_the_replicas_then_hands_the_primary_over() -> None:
    """A changed redis.conf restarts every node: the replicas first, then the primary only
    after its writes were paused, a replica had them all and the Sentinels promoted it; a
    client writing all along loses no acknowledged write.

    The change is the inventory itself (no ``-e``): the config change without Sentinels
    (earlier in this file) left min-replicas-max-lag at the inventory's value + 1, and this
    converge puts the inventory's value back. It is the last converge of this file, so the
    nodes keep the inventory's settings: test_restore.py relies on it (it checks the value
    before its backup; its converge after the restore must change nothing)."""
    old = node_of(str(next(iter(primaries_seen().values()))))
    run_ids = {n: fleet.admin(n).info("server")["run_id"] for n in NODES}
    lag = INVENTORY_MAX_LAG
    before = {n: max_lag(n) for n in NODES}
    assert lag not in before.values(), (
        f"runs after the config change without Sentinels: every node must run another "
        f"min-replicas-max-lag than the inventory's {lag} for this converge to change it",
        before,
    )
    writer = Writer("mol:ha:handover")
    writer.start()
    time.sleep(2)
    try:
        result = fleet.converge(["--tags", "redis"])
    finally:
        time.sleep(2)
        writer.stop.set()
        writer.join(30)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "(from sentinel)" in result.stdout
    for password in fleet.passwords():
        assert password not in result.stdout + result.stderr
    seen = set(primaries_seen().values())
    assert len(seen) == 1, seen
    assert fleet.address(old) not in seen, seen
    new = node_of(str(seen.pop()))
    assert all(fleet.admin(n).info("server")["run_id"] != run_ids[n] for n in NODES), (
        "every node restarted"
    )
    fleet.wait_for(lambda: fleet.replicates_from(old, new), 60, f"{old} to replicate from {new}")
    # The new setting on every node, the handed-over primary too: in its redis.conf and live
    # (a CONFIG REWRITE before its restart once wrote the old value back over the rendered
    # file, and it restarted with it while the recorded digest said it was converged).
    for node in NODES:
        conf = fleet.docker("exec", node, "cat", "/etc/redis/server/redis.conf")
        assert (max_lag(node), f"\nmin-replicas-max-lag {lag}\n" in conf) == (lag, True), node
    writer.check(new, "handover")
