"""Dead letters on real workers, on a real TLS + ACL redis-server.

The Redis users are the role's: the harness renders templates/users.acl.j2 with
roles/redis/defaults/main.yml, so these tests prove the ACL a deployment gets: the worker,
as the app user, can add entries and nothing else on the stream; the operator user reads,
deletes and requeues.
"""

from __future__ import annotations

import http.server
import itertools
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.signals import before_task_publish

from celery_fleet.deadletter import Config, Entry, store, writer
from celery_fleet.deadletter.operator import PASSWORD_VAR, USERNAME_VAR, Operator
from celery_fleet.deadletter.requeue import requeue
from harness import cli as fleet_cli
from harness import envs
from harness.redis_procs import APP_USER, DEADLETTER_USER, HOST, Node, RedisFleet
from harness.worker import MakeClient, StartWorker, Worker

INTEGRATION = Path(__file__).resolve().parent
KEY = "celery-fleet:dead-letters"


@dataclass
class Deployment:
    """A TLS + ACL primary whose app and operator users are the role's, and the envs."""

    fleet: RedisFleet
    node: Node
    app_user: str
    app_password: str
    operator_user: str
    operator_password: str
    env: dict[str, str]  # the app's celery.env
    operator_env: dict[str, str]  # what an operator adds

    def as_user(self, user: str, password: str) -> redis.Redis:
        return self.fleet.client(self.node, username=user, password=password)

    def admin(self) -> redis.Redis:
        return self.fleet.client(self.node)

    def entries(self) -> list[Entry]:
        return list(store.iterate(self.admin(), KEY))

    def wait_for_entries(self, count: int, timeout: float = 30.0) -> list[Entry]:
        return wait_for_entries(self.admin(), count, timeout)


def wait_for_entries(client: redis.Redis, count: int, timeout: float = 30.0) -> list[Entry]:
    """At least ``count`` entries in the stream, read with ``client`` (an admin's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(store.iterate(client, KEY))
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{count} dead letters expected, found {list(store.iterate(client, KEY))}")


@pytest.fixture
def deployment(redis_fleet: RedisFleet) -> Deployment:
    node = redis_fleet.server("redis-1")  # users.acl rendered from the role's defaults
    s = redis_fleet.secrets
    env = {
        "CELERY_BROKER_URL": envs.url(redis_fleet, node, 0),
        "CELERY_RESULT_BACKEND": envs.url(redis_fleet, node, 1),
        **envs.tls(redis_fleet),
    }
    return Deployment(
        fleet=redis_fleet,
        node=node,
        app_user=APP_USER,
        app_password=s.app,
        operator_user=DEADLETTER_USER,
        operator_password=s.deadletter,
        env=env,
        operator_env={
            "CELERY_FLEET_DEAD_LETTER_USERNAME": DEADLETTER_USER,
            "CELERY_FLEET_DEAD_LETTER_PASSWORD": s.deadletter,
        },
    )


@pytest.fixture
def worker(deployment: Deployment, start_worker: StartWorker) -> Worker:
    return start_worker(deployment.env, app="deadletter_app", pythonpath=[INTEGRATION])


@pytest.fixture
def cli(deployment: Deployment, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Run ``celery-fleet dead-letters ...`` as an operator would: the app's env file plus
    one with the operator's login; JSON output parsed."""
    app_env = tmp_path / "celery.env"
    app_env.write_text("".join(f"{k}={v}\n" for k, v in deployment.env.items()))
    operator_env = tmp_path / "deadletter.env"
    operator_env.write_text("".join(f"{k}={v}\n" for k, v in deployment.operator_env.items()))
    operator_env.chmod(0o600)

    def run(*args: str, operator: bool = True, expect: int = 0) -> Any:
        files = ["--env-file", str(app_env)]
        if operator:
            files += ["--env-file", str(operator_env)]
        done = fleet_cli.run("dead-letters", *args, *files, "--json")
        assert done.returncode == expect, done.stdout + done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else done.stderr

    return run


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_each_way_of_dying_leaves_exactly_one_entry_and_a_retry_none(
    deployment: Deployment, worker: Worker, celery_client: MakeClient, tmp_path: Path
) -> None:
    app = celery_client(deployment.env)
    started = time.time()
    # Fails once, retried, succeeds: not dead. Waited for first, so it cannot hide behind
    # the others.
    recovered = app.send_task("dl.fails_once", args=[str(tmp_path / "once")])
    assert recovered.get(timeout=30) == "ok"
    assert runs(tmp_path / "once") == 2

    failing = app.send_task(
        "dl.always_fails", args=[str(tmp_path / "always")], kwargs={"note": "n"}
    )
    slow = app.send_task("dl.too_slow", args=[str(tmp_path / "slow")])
    unknown = app.send_task("dl.no_such_task", args=[1, "two"], kwargs={"three": 3})
    with app.connection_for_write() as conn, conn.Producer() as producer:
        # Not a task at all: no task header, a body that is not JSON.
        producer.publish(b"\xff{not json", routing_key="default", content_type="application/json")
        # A task message whose body cannot be decoded.
        producer.publish(
            b"\xff{not json either",
            routing_key="default",
            content_type="application/json",
            headers={"task": "dl.always_fails", "id": "malformed-1"},
        )
    found = deployment.wait_for_entries(5)
    time.sleep(3)  # anything written twice (a hard time limit is reported twice) shows now
    found = deployment.entries()

    by_id = {e.task_id: e for e in found}
    assert len(found) == 5, [(e.reason, e.name, e.task_id) for e in found]
    assert recovered.id not in by_id

    dead = by_id[failing.id]
    assert (dead.reason, dead.name, dead.queue) == ("failed", "dl.always_fails", "default")
    assert json.loads(dead.args) == [str(tmp_path / "always")]
    assert json.loads(dead.kwargs) == {"note": "n"}
    assert (dead.exc_type, dead.exc_message) == ("Boom", "run 3 failed (n)")
    assert dead.retries == 2
    assert runs(tmp_path / "always") == 3
    assert "deadletter_app.py" in dead.traceback
    assert "Boom: run 3 failed" in dead.traceback
    assert dead.hostname == worker.nodename
    assert started <= dead.failed_at <= time.time()
    assert dead.requeueable

    timed_out = by_id[slow.id]
    assert (timed_out.reason, timed_out.name) == ("time-limit", "dl.too_slow")
    assert timed_out.exc_type == "TimeLimitExceeded"
    assert timed_out.queue == "default"
    assert json.loads(timed_out.args) == [str(tmp_path / "slow")]
    assert timed_out.hostname == worker.nodename

    missing = by_id[unknown.id]
    assert (missing.reason, missing.name, missing.exc_type) == (
        "unknown",
        "dl.no_such_task",
        "NotRegistered",
    )
    assert missing.call() == ([1, "two"], {"three": 3})

    malformed = by_id["malformed-1"]
    assert (malformed.reason, malformed.name) == ("undecodable", "dl.always_fails")
    assert malformed.exc_type == "DecodeError"
    assert "not json either" in malformed.body
    assert not malformed.requeueable
    anonymous = by_id[""]
    assert anonymous.reason == "undecodable"
    assert "not json" in anonymous.body
    assert anonymous.queue == "default"


def test_requeue_sends_the_task_again_with_a_link_and_removes_the_entry(
    deployment: Deployment, worker: Worker, celery_client: MakeClient, tmp_path: Path, cli: Any
) -> None:
    app = celery_client(deployment.env)
    counter, allowed = tmp_path / "runs", tmp_path / "allowed"
    first = app.send_task("dl.fails_until", args=[str(counter), str(allowed)])
    (entry,) = deployment.wait_for_entries(1)
    assert entry.task_id == first.id

    listed = cli("list")
    assert [e["entry_id"] for e in listed] == [entry.entry_id]
    assert cli("show", entry.entry_id)["args"] == [str(counter), str(allowed)]

    # Requeued while the cause is still there: it dies again, and says where it came from.
    sent = cli("requeue", entry.entry_id)
    assert sent["problems"] == []
    (again,) = sent["requeued"]
    assert again["old_task_id"] == first.id
    assert again["new_task_id"] != first.id
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = deployment.entries()
        if found and found[0].entry_id != entry.entry_id:
            break
        time.sleep(0.2)
    (second,) = deployment.entries()  # the old entry is gone, the new one is there
    assert second.task_id == again["new_task_id"]
    assert second.requeued_from == first.id
    assert runs(counter) == 2

    # The cause fixed: requeue everything of that task; it runs and succeeds.
    allowed.touch()
    sent = cli("requeue", "--all", "--name", "dl.fails_until")
    (third,) = sent["requeued"]
    assert app.AsyncResult(third["new_task_id"]).get(timeout=30) == "ok"
    assert runs(counter) == 3
    assert deployment.entries() == []
    assert cli("requeue", "1-1", expect=1)["problems"] == ["1-1: no such entry"]


def test_app_user_may_only_add_entries_and_the_operator_may_read_and_delete(
    deployment: Deployment, cli: Any
) -> None:
    app = deployment.as_user(deployment.app_user, deployment.app_password)
    entry_id = app.xadd(KEY, {"reason": "failed", "name": "t"})
    for command in (
        ("XRANGE", KEY, "-", "+"),
        ("XREVRANGE", KEY, "+", "-"),
        ("XLEN", KEY),
        ("XREAD", "STREAMS", KEY, "0"),
        ("XDEL", KEY, entry_id),
        ("XTRIM", KEY, "MAXLEN", "0"),
        ("DEL", KEY),
        ("UNLINK", KEY),
        ("EXPIRE", KEY, "1"),
        ("RENAME", KEY, "elsewhere"),
        ("TYPE", KEY),
        ("DUMP", KEY),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command(*command)
    # ... and everything Celery needs elsewhere, including keys that share the prefix.
    for key in ("celery", "celery-fleet:beat:host", f"{KEY}x", "celery-fleet:dead-letter"):
        app.set(key, "1")
        assert app.get(key) == b"1"

    refused = cli("list", operator=False, expect=2)
    assert "NoPermissionError" in refused
    assert "CELERY_FLEET_DEAD_LETTER_USERNAME" in refused
    operator = deployment.as_user(deployment.operator_user, deployment.operator_password)
    assert operator.xlen(KEY) == 1
    assert operator.xdel(KEY, entry_id) == 1


def test_a_capped_stream_stays_near_its_cap(
    deployment: Deployment, celery_client: MakeClient
) -> None:
    app = celery_client(deployment.env)  # the app user, as a worker writes
    config = Config(maxlen=1000)
    item = Entry(reason="failed", task_id="t", name="dl.x", args="[]", kwargs="{}")
    for _ in range(10_000):
        assert writer.write(app, item, config) is not None
    length = deployment.admin().xlen(KEY)
    # MAXLEN ~ trims whole stream nodes (stream-node-max-entries, 100 by default).
    assert 1000 <= length <= 1100, length


def test_an_unreachable_redis_costs_a_bounded_wait_a_log_line_and_a_count(
    celery_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = celery_client({"CELERY_BROKER_URL": f"redis://{HOST}:1/0"})
    before = writer.counters()["dropped"]
    config = Config(retry_for=1.0, backoff=0.05)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="celery_fleet.deadletter"):
        assert writer.write(app, Entry(reason="failed", task_id="t1", name="x"), config) is None
    elapsed = time.monotonic() - started
    assert writer.counters()["dropped"] == before + 1
    assert "t1" in caplog.text
    assert "dead letter not written after" in caplog.text
    assert elapsed < 3, elapsed  # one connection attempt per round, no hidden retries


def test_through_sentinel_the_worker_writes_and_the_operator_counts_and_purges(
    redis_fleet: RedisFleet, start_worker: StartWorker, celery_client: MakeClient, tmp_path: Path
) -> None:
    """The same path on the production URL form: Sentinels on TLS, the primary found
    through them, for the worker's XADD as for the operator's reads."""
    primary = redis_fleet.server("redis-1")
    redis_fleet.server("redis-2", replica_of=primary)
    redis_fleet.sentinels(primary)
    env = envs.sentinel(redis_fleet)
    start_worker(env, app="deadletter_app", pythonpath=[INTEGRATION])
    admin = redis_fleet.client(primary)
    # An entry from more than a week ago (stream IDs are the time of the XADD).
    week_ago_ms = int((time.time() - 8 * 86400) * 1000)
    admin.xadd(KEY, {"reason": "failed", "name": "dl.old"}, id=f"{week_ago_ms}-0")
    app = celery_client(env)
    failing = app.send_task("dl.fails_until", args=[str(tmp_path / "runs"), "/nonexistent"])
    deadline = time.monotonic() + 30
    while admin.xlen(KEY) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)

    env_file = tmp_path / "celery.env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in env.items()) + f"CELERY_FLEET_DEAD_LETTER_USERNAME=admin\n"
        f"CELERY_FLEET_DEAD_LETTER_PASSWORD={redis_fleet.secrets.admin}\n"
    )

    def cli(*args: str) -> Any:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery_fleet.cli",
                "dead-letters",
                *args,
                "--env-file",
                str(env_file),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    stats = cli("stats")
    assert stats["length"] == 2
    assert stats["by_name"] == {"dl.fails_until": 1, "dl.old": 1}
    assert cli("purge", "--older-than", "7d") == {"purged": 1, "left": 1}
    (left,) = cli("list")
    assert left["task_id"] == failing.id
    assert left["queue"] == "default"


def test_a_webhook_hears_of_the_first_dead_letter_and_not_of_every_one(
    deployment: Deployment, start_worker: StartWorker, celery_client: MakeClient, tmp_path: Path
) -> None:
    heard: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            heard.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            **deployment.env,
            "CELERY_FLEET_DEAD_LETTER_WEBHOOK": f"http://{HOST}:{server.server_port}/hook",
        }
        # One pool process: the interval (60 s by default) is per process.
        start_worker(env, app="deadletter_app", pythonpath=[INTEGRATION], concurrency=1)
        app = celery_client(deployment.env)
        sent = [
            app.send_task("dl.fails_until", args=[str(tmp_path / "runs"), "/nonexistent"])
            for _ in range(3)
        ]
        deployment.wait_for_entries(3)
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
    finally:
        server.shutdown()
        server.server_close()
    (call,) = heard
    assert call["task_id"] == sent[0].id
    assert (call["name"], call["reason"], call["exc_type"]) == ("dl.fails_until", "failed", "Boom")
    assert call["key"] == KEY
    assert call["entry_id"] == deployment.entries()[0].entry_id


def test_a_task_that_dies_during_a_failover_is_kept_on_the_new_primary(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    primary = redis_fleet.server("redis-1")
    replica = redis_fleet.server("redis-2", replica_of=primary)
    redis_fleet.sentinels(primary)
    env = envs.sentinel(redis_fleet)
    worker = start_worker(env, app="deadletter_app", pythonpath=[INTEGRATION])
    app = celery_client(env)
    started = tmp_path / "started"
    dying = app.send_task("dl.fails_later", args=[str(started), 0.5])
    deadline = time.monotonic() + 20
    while not started.exists():  # running in the pool, not only received
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.05)
    redis_fleet.kill(primary)  # the task raises while the Sentinels are still deciding
    new = redis_fleet.wait_for_failover(primary)
    assert new is replica
    admin = redis_fleet.client(new)
    deadline = time.monotonic() + 30
    while admin.xlen(KEY) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    (entry,) = store.iterate(admin, KEY)
    assert (entry.task_id, entry.exc_type) == (dying.id, "Boom")
    assert "not written" not in worker.log()
    # Measured, not asserted: the result backend's own retries (result_backend_always_retry)
    # run before task_failure, so part of the failover is over when the XADD starts.
    waited = int(entry.entry_id.split("-")[0]) / 1000 - entry.failed_at
    record_property("dead letter written after task_failure (s)", round(waited, 2))


def _runs_of(values: Iterable[str]) -> str:
    """``a x2, b x3, a x1``: consecutive equal values counted."""
    return ", ".join(f"{value} x{len(list(group))}" for value, group in itertools.groupby(values))


@pytest.mark.timeout(120)
def test_a_requeue_during_a_failover_sends_each_task_again_or_keeps_its_entry(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """Entries are requeued one at a time on one operator connection, through what
    ``requeue ID`` runs (``Operator``, ``requeue()``); the primary is SIGKILLed inside one
    publish and the rest are requeued while the Sentinels fail over, and after. Then every
    entry has either its task run again (the run names the task it was requeued from) or
    is still in the stream on the new primary; never neither.

    Why this fails if requeue deleted the entry before publishing: the kill comes from
    Celery's ``before_task_publish`` in the KILL_AT-th requeue, i.e. after that requeue's
    reads and before its LPUSH, and only once the replica has every write so far. In
    today's order that requeue has written nothing yet; its publish fails (the retry policy
    below is shorter than the failover) and the entry survives on the replica. Were the
    XDEL first, the replica (the new primary) would have the XDEL and no task: its counter
    would show one run, its entry would be gone, and the ``lost`` assertion fails. The
    test asserts that this requeue did fail, so that case is exercised every run.
    """
    entries, kill_at = 30, 8
    primary = redis_fleet.server("redis-1")
    replica = redis_fleet.server("redis-2", replica_of=primary)
    redis_fleet.sentinels(primary)
    env = envs.sentinel(redis_fleet)
    start_worker(env, app="deadletter_app", pythonpath=[INTEGRATION])
    app = celery_client(env)
    allowed = tmp_path / "allowed"
    counters: dict[str, Path] = {}
    for i in range(entries):
        counter = tmp_path / f"runs-{i}"
        counters[app.send_task("dl.fails_until", args=[str(counter), str(allowed)]).id] = counter
    dead = wait_for_entries(redis_fleet.client(primary), entries)
    assert sorted(e.task_id for e in dead) == sorted(counters)
    allowed.touch()  # the cause fixed: a requeued run succeeds

    operator = Operator(
        {**env, USERNAME_VAR: DEADLETTER_USER, PASSWORD_VAR: redis_fleet.secrets.deadletter}
    )
    # Celery's default retry policy (about 0.6 s), not celery_fleet's (about 19 s, which
    # outlasts this failover): a failover longer than the operator's retries, without a
    # test that waits that long. The publish the kill cuts must fail for good.
    operator.app.conf.task_publish_retry_policy = {
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.2,
    }
    publishes = 0
    current: list[Entry] = []  # the entry being requeued
    cut: list[Entry] = []  # the one whose publish the kill cut

    def kill_in_a_publish(**_: Any) -> None:
        nonlocal publishes
        publishes += 1
        if publishes != kill_at:
            return
        target = redis_fleet.info(primary, "replication")["master_repl_offset"]
        redis_fleet.wait_for(
            lambda: redis_fleet.info(replica, "replication").get("slave_repl_offset", -1) >= target,
            "the replica to have every write so far",
        )
        redis_fleet.kill(primary)
        cut.append(current[-1])

    outcome: dict[str, str] = {}
    timeline: list[str] = []  # printed: shown if the test fails
    started = time.monotonic()
    before_task_publish.connect(kill_in_a_publish, weak=False)
    try:
        with operator.connection() as conn:
            conn.ensure_connection(max_retries=3)
            for item in dead:
                current.append(item)
                took = time.monotonic()
                try:
                    batch = requeue(operator.app, conn, operator.key, entry_ids=[item.entry_id])
                    if batch.requeued:
                        outcome[item.entry_id] = "requeued"
                    elif batch.stopped:  # the CLI prints where it stopped and exits 2
                        outcome[item.entry_id] = batch.stopped.error.partition(":")[0]
                    else:
                        outcome[item.entry_id] = "; ".join(batch.problems)
                except Exception as exc:  # reading the entry failed; the CLI exits 2
                    outcome[item.entry_id] = type(exc).__name__
                timeline.append(
                    f"{item.entry_id} {outcome[item.entry_id]} at {took - started:.2f} s "
                    f"({time.monotonic() - took:.2f} s)"
                )
    finally:
        before_task_publish.disconnect(kill_in_a_publish)
        operator.close()
        print("\n".join(timeline))
    new = redis_fleet.wait_for_failover(primary)
    assert new is replica
    left = {e.entry_id for e in store.iterate(redis_fleet.client(new), KEY)}

    def requeued_runs(item: Entry) -> list[str]:
        return counters[item.task_id].read_text().splitlines()[1:]  # the first made the entry

    # Every task whose entry is gone must run, from the new primary's queue.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(requeued_runs(e) for e in dead if e.entry_id not in left):
            break
        time.sleep(0.2)
    lost: list[tuple[str, str]] = []
    duplicates: list[tuple[str, str, int]] = []
    for item in dead:
        runs_again = requeued_runs(item)
        assert set(runs_again) <= {f"run {item.task_id}"}, (item, runs_again)
        if not runs_again and item.entry_id not in left:
            lost.append((item.entry_id, outcome[item.entry_id]))
        if len(runs_again) + (item.entry_id in left) > 1:
            duplicates.append((item.entry_id, outcome[item.entry_id], len(runs_again)))
    assert not lost, f"entry gone and task never ran: {lost}"
    (kill,) = cut
    assert outcome[kill.entry_id] != "requeued", outcome[kill.entry_id]
    assert kill.entry_id in left
    record_property("requeue outcomes, in order", _runs_of(outcome[e.entry_id] for e in dead))
    record_property("entries left on the new primary", len(left))
    record_property("duplicates (entry kept and task ran, or ran twice)", duplicates)
