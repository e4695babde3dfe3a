"""The backup units and ACL user (role redis, redis_backup_enabled) as the role renders them:
no secret in a unit, the sandbox on, only the backup folders writable; no backup user
while backups are off."""

from __future__ import annotations

import re

from harness import render

PASSWORDS = {
    name: f"Pw-{name}-7Hq2mZ9x"
    for name in (
        "redis_admin_password",
        "redis_app_password",
        "redis_monitor_password",
        "redis_deadletter_password",
        "redis_replication_password",
        "redis_sentinel_auth_password",
        "redis_backup_password",
    )
}
ON = {**PASSWORDS, "redis_backup_enabled": True, "inventory_hostname": "node1"}


def _unit(kind: str, variables: dict[str, object]) -> str:
    return render.render_file(
        render.REPO / "systemd" / f"celery-fleet-redis-backup.{kind}.j2",
        role="redis",
        variables=variables,
    )


def test_the_backup_user_exists_only_while_backups_are_on() -> None:
    off = render.render("users.acl.j2", role="redis", variables=PASSWORDS)
    assert not re.search(r"^user backup ", off, re.M), off
    on = render.render("users.acl.j2", role="redis", variables=ON)
    line = next(x for x in on.splitlines() if x.startswith("user backup "))
    assert line.endswith("resetkeys resetchannels -@all +sync +replconf +ping +role"), line
    assert PASSWORDS["redis_backup_password"] not in on


def test_the_service_runs_sandboxed_as_redis_without_a_secret_on_its_lines() -> None:
    text = _unit("service", {**ON, "redis_backup_ship_dir": "/mnt/backups"})
    for value in PASSWORDS.values():
        assert value not in text
    assert "User=redis\n" in text
    assert "EnvironmentFile=/etc/redis/backup.env\n" in text
    assert "ProtectSystem=strict\n" in text
    assert "NoNewPrivileges=true\n" in text
    writable = re.findall(r"^ReadWritePaths=(.*)$", text, re.M)
    assert writable == ["/var/lib/redis-backup", "-/mnt/backups"], writable
    assert "Environment=NAME=node1\n" in text
    assert "Environment=REDIS_USER=backup\n" in text


def test_the_timer_uses_the_schedule_and_catches_up_after_a_boot() -> None:
    text = _unit("timer", {**ON, "redis_backup_on_calendar": "*-*-* 03:30:00"})
    assert "OnCalendar=*-*-* 03:30:00\n" in text
    assert "Persistent=true\n" in text
    assert "Unit=celery-fleet-redis-backup.service\n" in text
