"""The harness runs Redis and Sentinel from the shipped templates and role defaults: what the
roles deploy is what every integration, fault and benchmark run exercises."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import redis

from harness import render
from harness.pki import Pki
from harness.redis_procs import APP_USER, Auth, RedisFleet, fleet


def app_client(fleet_: RedisFleet, node_port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=node_port,
        username=APP_USER,
        password=fleet_.secrets.app,
        **fleet_.tls_kwargs(),
    )


def test_a_rule_changed_in_the_acl_template_reaches_the_server(
    redis_fleet: RedisFleet, pki: Pki, tmp_path: Path
) -> None:
    shipped = redis_fleet.server("shipped")
    assert app_client(redis_fleet, shipped.port).lpush("q", "task") == 1

    # The same harness, rendering from a copy of templates/ whose ACL file denies the app
    # user LPUSH (what a Celery producer sends): the server must refuse it.
    templates = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, templates)
    acl = templates / "users.acl.j2"
    rule = "{{ redis_app_acl_rules }}"
    assert rule in acl.read_text()
    acl.write_text(acl.read_text().replace(rule, rule + " -lpush"))
    with fleet(tmp_path / "changed", pki, templates=templates) as changed:
        node = changed.server("changed")
        app = app_client(changed, node.port)
        assert app.rpush("q", "task") == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.lpush("q", "task")


def test_data_node_runs_the_role_defaults(redis_fleet: RedisFleet) -> None:
    defaults = render.role_defaults("redis")
    node = redis_fleet.server("tls", auth=Auth.ACL)
    admin = redis_fleet.client(node)
    assert admin.config_get("tls-ciphers") == {
        "tls-ciphers": ":".join(defaults["redis_tls_ciphers"])
    }
    assert admin.config_get("maxmemory-policy") == {
        "maxmemory-policy": defaults["redis_maxmemory_policy"]
    }
    users = {line.split()[1] for line in admin.acl_list()}
    assert users == {
        "default",
        defaults["redis_admin_user"],
        defaults["redis_app_user"],
        defaults["redis_monitor_user"],
        defaults["redis_deadletter_user"],
        defaults["redis_replication_user"],
        defaults["redis_sentinel_auth_user"],
    }
    # The aclfile path is the role default resolved against the harness's redis_conf_dir.
    assert admin.config_get("aclfile") == {"aclfile": str(node.folder / "users.acl")}


def test_sentinel_id_is_the_role_default(redis_fleet: RedisFleet) -> None:
    primary = redis_fleet.server("p1")
    sentinel = redis_fleet.sentinels(primary, count=1, quorum=1)[0]
    digest = hashlib.sha1(f"{sentinel.name}/127.0.0.1".encode(), usedforsecurity=False)
    expected = digest.hexdigest()  # the role: (inventory_hostname / address) | hash("sha1")
    assert redis_fleet.client(sentinel).execute_command("SENTINEL", "MYID") == expected
