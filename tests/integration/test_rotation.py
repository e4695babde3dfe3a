"""Password rotation on a real redis-server started from the shipped redis.conf and users.acl,
with the ACL file applied the way role redis applies it (roles/redis/files/redis-acl-apply:
one ACL SETUSER per user, no ACL LOAD).

Redis accepts every password listed on an ACL user
(https://redis.io/docs/latest/operate/oss_and_stack/management/security/acl/), so a rotation
is: the new password plus the previous one (both accepted, clients rolled to the new one),
then the new one alone. What Redis does to connections meanwhile is asserted, not assumed:
ACL SETUSER keeps every connection, a connection that authenticated with a password later
removed stays authenticated (only a user's deletion disconnects its clients), and ACL LOAD
before Redis 7.2 disconnects every ACL client (redis/redis#11986, redis/redis#12171), which
is why the role does not use it.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from celery import Celery

from harness import envs, render
from harness.redis_procs import ADMIN_USER, APP_USER, HOST, Node, RedisFleet
from harness.worker import MakeClient, StartWorker

APPLY = render.ROLES / "redis" / "files" / "redis-acl-apply"
AUTH_ERRORS = re.compile(r"WRONGPASS|invalid username-password|AuthenticationError|NOAUTH", re.I)


def apply_acl(fleet: RedisFleet, node: Node, variables: dict[str, object], admin: str) -> str:
    """Render users.acl with ``variables`` and apply it as the role does; return the output."""
    acl = fleet.rewrite_acl(node, variables)
    cli_tls = ["--tls", "--cacert", str(fleet.pki.ca)]
    result = subprocess.run(
        [str(APPLY), str(acl), ADMIN_USER, *cli_tls, "-h", HOST, "-p", str(node.port)],
        input=admin + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for secret in (admin, *(str(v) for v in variables.values())):
        assert secret not in result.stdout + result.stderr
    return result.stdout


def app(fleet: RedisFleet, node: Node, password: str) -> redis.Redis:
    """One connection of the app user (no pool to hide a reconnection), authenticated now."""
    client = redis.Redis(
        host=HOST,
        port=node.port,
        username=APP_USER,
        password=password,
        single_connection_client=True,
        socket_timeout=5,
        **fleet.tls_kwargs(),
    )
    client.ping()
    return client


def refused(fleet: RedisFleet, node: Node, password: str) -> bool:
    try:
        app(fleet, node, password).close()
    except redis.exceptions.AuthenticationError:
        return True
    return False


def test_both_passwords_during_the_window_and_no_connection_dropped(
    redis_fleet: RedisFleet,
) -> None:
    node = redis_fleet.server("p1")
    old, new = redis_fleet.secrets.app, secrets.token_urlsafe(18)
    admin = redis_fleet.client(node, single_connection_client=True)
    held = app(redis_fleet, node, old)
    ids = (held.client_id(), admin.client_id())
    held.set("k", "before")

    # Step 1: the new password, the old one still accepted.
    out = apply_acl(
        redis_fleet,
        node,
        {"redis_app_password": new, "redis_app_password_previous": old},
        redis_fleet.secrets.admin,
    )
    assert f"SETUSER {APP_USER}" in out
    assert (held.client_id(), admin.client_id()) == ids  # same connections, not reconnected
    assert held.get("k") == b"before"
    assert not refused(redis_fleet, node, old)
    assert not refused(redis_fleet, node, new)
    line = next(u for u in admin.acl_list() if u.startswith(f"user {APP_USER} "))
    assert len(re.findall(r"#[0-9a-f]{64}", line)) == 2

    # Step 3: the previous password cleared.
    apply_acl(redis_fleet, node, {"redis_app_password": new}, redis_fleet.secrets.admin)
    assert refused(redis_fleet, node, old)
    assert not refused(redis_fleet, node, new)
    # What Redis does to a connection that authenticated with the removed password: nothing.
    # It stays authenticated (ACL SETUSER disconnects no one; only ACL DELUSER does) ...
    assert (held.client_id(), admin.client_id()) == ids
    held.set("k", "after")
    # ... until it reconnects, which the old password no longer survives.
    held.connection.disconnect()  # type: ignore[union-attr]
    with pytest.raises(redis.exceptions.AuthenticationError):
        held.ping()


def test_acl_load_would_drop_the_connections_before_redis_7_2(redis_fleet: RedisFleet) -> None:
    """Why the role applies the file user by user: the same change through ACL LOAD."""
    node = redis_fleet.server("p1")
    old, new = redis_fleet.secrets.app, secrets.token_urlsafe(18)
    held = app(redis_fleet, node, old)
    before = held.client_id()
    redis_fleet.rewrite_acl(node, {"redis_app_password": new, "redis_app_password_previous": old})
    admin = redis_fleet.client(node)
    assert admin.execute_command("ACL", "LOAD") in (b"OK", "OK", True)
    version = tuple(int(p) for p in admin.info("server")["redis_version"].split(".")[:2])
    # redis-py reconnects (and re-authenticates) on its own: a new client id tells.
    assert (held.client_id() != before) == (version < (7, 2)), version


def test_apply_deletes_a_user_no_longer_in_the_file_and_refuses_a_wrong_admin_password(
    redis_fleet: RedisFleet,
) -> None:
    node = redis_fleet.server("p1")
    extra = {"name": "reports", "password": secrets.token_urlsafe(18), "rules": "~r:* +@read"}
    out = apply_acl(
        redis_fleet, node, {"redis_extra_acl_users": [extra]}, redis_fleet.secrets.admin
    )
    assert "SETUSER reports" in out
    admin = redis_fleet.client(node)
    assert "reports" in admin.acl_users()
    out = apply_acl(redis_fleet, node, {}, redis_fleet.secrets.admin)
    assert "DELUSER reports" in out
    assert "reports" not in admin.acl_users()
    acl = redis_fleet.rewrite_acl(node, {})
    wrong = subprocess.run(
        [
            str(APPLY),
            str(acl),
            ADMIN_USER,
            "--tls",
            "--cacert",
            str(redis_fleet.pki.ca),
            "-h",
            HOST,
            "-p",
            str(node.port),
        ],
        input="not-the-admin-password\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "not-the-admin-password" not in wrong.stdout + wrong.stderr


class Producer:
    """Sends ``fleet.record`` tasks at a steady pace from a thread, through whichever Celery
    client is current (the test swaps it, as a producer that is rolled)."""

    def __init__(self, client: Celery, marks: Path, pace: float = 0.02) -> None:
        self.client, self.marks, self.pace = client, marks, pace
        self.sent: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            token = f"t{i}"
            try:
                self.client.send_task("fleet.record", args=(token, str(self.marks)))
            except Exception as exc:  # any failed request fails the test
                self.errors.append(f"{token}: {type(exc).__name__}")
            else:
                self.sent.append(token)
            i += 1
            time.sleep(self.pace)

    def ran(self) -> list[str]:
        return self.marks.read_text().split() if self.marks.exists() else []


def test_celery_runs_through_a_rotation_without_a_lost_task_or_an_auth_error(
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
) -> None:
    node = redis_fleet.server("p1")
    old, new = redis_fleet.secrets.app, secrets.token_urlsafe(18)

    def env(password: str) -> dict[str, str]:
        return {
            "CELERY_BROKER_URL": envs.url(redis_fleet, node, 0, password=password),
            "CELERY_RESULT_BACKEND": envs.url(redis_fleet, node, 1, password=password),
            **envs.tls(redis_fleet, "BROKER"),
            **envs.tls(redis_fleet, "REDIS_BACKEND"),
        }

    marks = tmp_path / "marks"
    first = start_worker(env(old), pool="threads", concurrency=4)
    producer = Producer(celery_client(env(old)), marks)
    producer.thread.start()
    time.sleep(1.5)

    # Step 1: both accepted; the roles re-render celery.env and restart the workers (the
    # celery role's handlers); producers are rolled to the new password.
    apply_acl(
        redis_fleet,
        node,
        {"redis_app_password": new, "redis_app_password_previous": old},
        redis_fleet.secrets.admin,
    )
    # A producer (re)started in the window with the settings it had: new connections, the
    # old password. Without the previous hash on the user, its tasks would be refused.
    producer.client = celery_client(env(old))
    time.sleep(1.0)
    second = start_worker(env(new), pool="threads", concurrency=4)
    first.stop()
    producer.client = celery_client(env(new))
    time.sleep(1.5)

    # Step 3: the old password removed while tasks keep flowing.
    apply_acl(redis_fleet, node, {"redis_app_password": new}, redis_fleet.secrets.admin)
    time.sleep(1.5)
    producer.stop.set()
    producer.thread.join(timeout=10)
    assert refused(redis_fleet, node, old)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(producer.sent) <= set(producer.ran()):
        time.sleep(0.5)
    assert producer.errors == []
    assert len(producer.sent) > 100
    missing = sorted(set(producer.sent) - set(producer.ran()))
    assert missing == [], f"{len(missing)} tasks lost of {len(producer.sent)}"
    for worker in (first, second):
        log = worker.log()
        assert not AUTH_ERRORS.search(log), worker.log_tail(40)
        assert "Connection to broker lost" not in log, worker.log_tail(40)
        assert old not in log
        assert new not in log
    second.stop()


def _link_up(fleet: RedisFleet, replica: Node) -> bool:
    return fleet.info(replica, "replication").get("master_link_status") == "up"


def _relink(fleet: RedisFleet, primary: Node, replica: Node) -> None:
    """Cut the replication link (a network blip): the replica logs in to the primary again."""
    assert fleet.client(primary).client_kill_filter(_type="replica") == 1
    fleet.wait_for(lambda: _link_up(fleet, replica), f"{replica!r} to log in again")


def test_replication_password_rotates_without_a_restart(redis_fleet: RedisFleet) -> None:
    """What role redis does for redis_replication_password: users.acl with both passwords on
    every node, then CONFIG SET masterauth (no restart), then the previous one removed."""
    primary = redis_fleet.server("p1")
    replica = redis_fleet.server("r1", replica_of=primary)
    old, new = redis_fleet.secrets.replication, secrets.token_urlsafe(18)
    admin = redis_fleet.secrets.admin
    pid = redis_fleet.info(replica, "server")["process_id"]

    step1 = {"redis_replication_password": new, "redis_replication_password_previous": old}
    for node in (primary, replica):
        apply_acl(redis_fleet, node, step1, admin)
    # A replica not converged yet still logs in with the old password, and can.
    _relink(redis_fleet, primary, replica)
    assert redis_fleet.client(replica).config_set("masterauth", new)
    _relink(redis_fleet, primary, replica)  # ... and with the new one once it has it.

    for node in (primary, replica):
        apply_acl(redis_fleet, node, {"redis_replication_password": new}, admin)
    _relink(redis_fleet, primary, replica)
    assert redis_fleet.info(replica, "server")["process_id"] == pid  # never restarted
    redis_fleet.client(primary).set("after", "rotation")
    redis_fleet.wait_for(
        lambda: redis_fleet.client(replica).get("after") == b"rotation", "the write to replicate"
    )
