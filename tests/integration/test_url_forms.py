"""Every URL form of docs/settings.md round-trips real tasks through a real worker.

Each case starts the Redis it needs, builds the CELERY_* environment a deployment would
inject, and hands it, and nothing else, to a ``celery worker`` subprocess (whose app only
calls ``config_from_object("celery_fleet.celeryconfig")``) and to a client app built with
``celery_fleet.settings.load``. The result must come back through the result backend, and
it must be stored where the environment said (the backend's node and db).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from harness import envs
from harness.redis_procs import APP_USER, SENTINEL_APP_USER, Auth, Listen, Node, RedisFleet
from harness.worker import MakeClient, StartWorker

TIMEOUT = 30
CLI = str(Path(sys.executable).parent / "celery-fleet")


@dataclass
class Case:
    env: dict[str, str]
    backend: Node  # where results must land
    backend_db: int


def tcp_requirepass(fleet: RedisFleet) -> Case:
    node = fleet.server("tcp", listen=Listen.TCP, auth=Auth.REQUIREPASS)
    env = {
        "CELERY_BROKER_URL": envs.url(fleet, node, 0),
        "CELERY_RESULT_BACKEND": envs.url(fleet, node, 1),
    }
    assert env["CELERY_BROKER_URL"].startswith("redis://:")
    return Case(env, node, 1)


def tcp_acl_user(fleet: RedisFleet) -> Case:
    node = fleet.server("tcp-acl", listen=Listen.TCP, auth=Auth.ACL)
    env = {
        "CELERY_BROKER_URL": envs.url(fleet, node, 2),
        "CELERY_RESULT_BACKEND": envs.url(fleet, node, 3),
    }
    assert env["CELERY_BROKER_URL"].startswith(f"redis://{APP_USER}:")
    return Case(env, node, 3)


def rediss_query(fleet: RedisFleet) -> Case:
    node = fleet.server("tls")
    query = f"?ssl_cert_reqs=required&ssl_ca_certs={fleet.pki.ca}"
    env = {
        "CELERY_BROKER_URL": envs.url(fleet, node, 0) + query,
        "CELERY_RESULT_BACKEND": envs.url(fleet, node, 1)
        + query.replace("required", "CERT_REQUIRED"),
    }
    return Case(env, node, 1)


def rediss_env(fleet: RedisFleet) -> Case:
    broker = fleet.server("tls-broker")
    backend = fleet.server("tls-backend")
    env = {
        "CELERY_BROKER_URL": envs.url(fleet, broker, 0),
        "CELERY_RESULT_BACKEND": envs.url(fleet, backend, 4),
        **envs.tls(fleet, "BROKER"),
        **envs.tls(fleet, "REDIS_BACKEND"),
        "CELERY_BROKER_SSL_CERT_REQS": "required",
        "CELERY_REDIS_BACKEND_SSL_CHECK_HOSTNAME": "true",
    }
    return Case(env, backend, 4)


def rediss_json_dicts(fleet: RedisFleet) -> Case:
    """A common snippet's form: Celery's own SSL dicts as JSON, here with a client certificate
    against a server that demands one, and connection-pool settings from the env."""
    node = fleet.server("mtls", mtls=True)
    pki = fleet.pki
    ssl = (
        f'{{"ssl_cert_reqs": "CERT_REQUIRED", "ssl_ca_certs": "{pki.ca}", '
        f'"ssl_certfile": "{pki.client.cert}", "ssl_keyfile": "{pki.client.key}"}}'
    )
    env = {
        "CELERY_BROKER_URL": envs.url(fleet, node, 7),
        "CELERY_RESULT_BACKEND": envs.url(fleet, node, 8),
        "CELERY_BROKER_USE_SSL": ssl,
        "CELERY_REDIS_BACKEND_USE_SSL": ssl,
        "CELERY_REDIS_MAX_CONNECTIONS": "20",
        "CELERY_BROKER_POOL_LIMIT": "4",
        "CELERY_REDIS_SOCKET_TIMEOUT": "5",
    }
    return Case(env, node, 8)


def rediss_inherited(fleet: RedisFleet) -> Case:
    """No CELERY_RESULT_BACKEND, no backend TLS variables: both come from the broker's."""
    node = fleet.server("tls")
    env = {"CELERY_BROKER_URL": envs.url(fleet, node, 5), **envs.tls(fleet, "BROKER")}
    return Case(env, node, 6)


def rediss_mutual_tls(fleet: RedisFleet) -> Case:
    node = fleet.server("mtls", mtls=True)
    env = {
        "CELERY_BROKER_URL": envs.url(fleet, node, 0),
        "CELERY_RESULT_BACKEND": envs.url(fleet, node, 1),
        **envs.tls(fleet, "BROKER", client_cert=True),
    }
    return Case(env, node, 1)


def unix_socket(scheme: str) -> Callable[[RedisFleet], Case]:
    def build(fleet: RedisFleet) -> Case:
        node = fleet.server("unix", listen=Listen.UNIX, auth=Auth.REQUIREPASS)
        broker = envs.url(fleet, node, 0).replace("socket://", f"{scheme}://", 1)
        backend = envs.url(fleet, node, 2).replace("socket://", f"{scheme}://", 1)
        return Case({"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": backend}, node, 2)

    return build


def sentinel_tls(fleet: RedisFleet) -> Case:
    primary = fleet.server("p1")
    fleet.server("r1", replica_of=primary)
    fleet.sentinels(primary)
    return Case(envs.sentinel(fleet, broker_db=0, backend_db=1), primary, 1)


def sentinel_mutual_tls(fleet: RedisFleet) -> Case:
    """Data nodes and Sentinels both demand a client certificate."""
    primary = fleet.server("p1", mtls=True)
    fleet.server("r1", replica_of=primary, mtls=True)
    fleet.sentinels(primary, mtls=True)
    env = {
        **envs.sentinel(fleet, broker_db=3, backend_db=4, client_cert=True),
        "CELERY_SENTINEL_MIN_OTHER_SENTINELS": "1",
    }
    return Case(env, primary, 4)


def sentinel_acl_users(fleet: RedisFleet) -> Case:
    """Sentinels with ACL users: the app's Sentinel user may only discover the primary."""
    primary = fleet.server("p1")
    fleet.server("r1", replica_of=primary)
    fleet.sentinels(primary, auth=Auth.ACL)
    env = envs.sentinel(fleet, broker_db=5, backend_db=6)
    assert env["CELERY_SENTINEL_USERNAME"] == SENTINEL_APP_USER
    return Case(env, primary, 6)


CASES: dict[str, tuple[Callable[[RedisFleet], Case], str]] = {
    # id: (builder, worker pool)
    "redis-requirepass": (tcp_requirepass, "prefork"),
    "redis-acl-user": (tcp_acl_user, "threads"),
    "rediss-query-params": (rediss_query, "prefork"),
    "rediss-separate-env": (rediss_env, "threads"),
    "rediss-backend-inherits": (rediss_inherited, "threads"),
    "rediss-json-ssl-dicts": (rediss_json_dicts, "prefork"),
    "rediss-mutual-tls": (rediss_mutual_tls, "prefork"),
    "socket": (unix_socket("socket"), "threads"),
    "unix": (unix_socket("unix"), "threads"),
    "redis+socket": (unix_socket("redis+socket"), "prefork"),
    "sentinel-tls": (sentinel_tls, "prefork"),
    "sentinel-mutual-tls": (sentinel_mutual_tls, "threads"),
    "sentinel-acl-users": (sentinel_acl_users, "prefork"),
}


def roundtrip(client: Celery) -> list[str]:
    """Send three tasks, check their results; return their ids."""
    payload = {"text": "ünïcødé ✓", "numbers": [1, 2.5, None], "nested": {"ok": True}}
    add = client.send_task("fleet.add", args=(2, 3))
    echo = client.send_task("fleet.echo", args=(payload,))
    group = [client.send_task("fleet.add", args=(i, i)) for i in range(10)]
    assert add.get(timeout=TIMEOUT) == 5
    assert echo.get(timeout=TIMEOUT) == payload
    assert [r.get(timeout=TIMEOUT) for r in group] == [2 * i for i in range(10)]
    return [add.id, echo.id, *(r.id for r in group)]


@pytest.mark.parametrize("form", list(CASES))
def test_url_form_round_trips_through_broker_and_backend(
    form: str, redis_fleet: RedisFleet, start_worker: StartWorker, celery_client: MakeClient
) -> None:
    build, pool = CASES[form]
    case = build(redis_fleet)
    worker = start_worker(case.env, pool=pool, concurrency=2)
    client = celery_client(case.env)

    ids = roundtrip(client)

    # The results are where the environment put them, not in some default db.
    admin = redis_fleet.client(case.backend, db=case.backend_db)
    stored = [i for i in ids if admin.exists(f"celery-task-meta-{i}")]
    assert stored == ids, f"results missing from {case.backend!r} db {case.backend_db}"
    # ...and the worker really consumed them (not some other process).
    log = worker.log()
    assert f"Task fleet.add[{ids[0]}] succeeded" in log
    # No password in the worker's log (banner, connection messages).
    for secret in dataclasses.astuple(redis_fleet.secrets):
        assert secret not in log


# A form whose URL celery_fleet rewrites (the ssl_* query moves into broker_use_ssl), a
# unix socket (socket:// becomes redis+socket://) and plain ones: the worker must run with
# exactly what the operator's command prints. (Celery reads CELERY_BROKER_URL from the
# environment over its configuration: h1 finding F1, fixed by celeryconfig.)
SAME_AS_PRINTED = ["rediss-query-params", "socket", "sentinel-tls", "redis-acl-user"]


@pytest.mark.parametrize("form", SAME_AS_PRINTED)
def test_worker_runs_with_what_celery_fleet_settings_prints(
    form: str,
    redis_fleet: RedisFleet,
    start_worker: StartWorker,
    celery_client: MakeClient,
    tmp_path: Path,
) -> None:
    """The operator's view (``celery-fleet settings --env-file``) is what the worker got."""
    build, pool = CASES[form]
    case = build(redis_fleet)
    env_file = tmp_path / "celery.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in case.env.items()))
    env_file.chmod(0o600)
    cli = subprocess.run(
        [
            str(Path(sys.executable).parent / "celery-fleet"),
            "settings",
            "--env-file",
            str(env_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    for secret in dataclasses.astuple(redis_fleet.secrets):
        assert secret not in cli.stdout + cli.stderr

    start_worker(case.env, pool=pool)
    client = celery_client(case.env)
    seen = client.send_task("fleet.settings", args=(sorted(printed),)).get(timeout=TIMEOUT)
    differ = {k: (printed[k], seen.get(k)) for k in printed if printed[k] != seen.get(k)}
    assert not differ, f"printed vs. worker: {differ}"
