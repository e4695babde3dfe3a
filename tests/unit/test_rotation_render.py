"""Password rotation in the shipped ACL files: while a ``*_previous`` password is set the
user's line carries two SHA-256 hashes (Redis accepts any password listed on a user,
https://redis.io/docs/latest/operate/oss_and_stack/management/security/acl/), otherwise one."""

from __future__ import annotations

import hashlib
import re

import pytest

from harness import render

REDIS_USERS = {
    # user variable: (password variable, value)
    "redis_admin_user": "redis_admin_password",
    "redis_app_user": "redis_app_password",
    "redis_monitor_user": "redis_monitor_password",
    "redis_deadletter_user": "redis_deadletter_password",
    "redis_replication_user": "redis_replication_password",
    "redis_sentinel_auth_user": "redis_sentinel_auth_password",
    "redis_flower_user": "redis_flower_password",
    "redis_backup_user": "redis_backup_password",
}
# The backup user exists only while backups are on.
BACKUP_ON = {"redis_backup_enabled": True}
SENTINEL_USERS = {
    "redis_sentinel_admin_user": "redis_sentinel_password",
    "redis_sentinel_client_user": "redis_sentinel_client_password",
    "redis_sentinel_monitor_user": "redis_sentinel_monitor_password",
}


def _passwords(names: dict[str, str]) -> dict[str, str]:
    return {pw: f"New-{pw}-9f3K2q" for pw in names.values()}


def _sha(value: str) -> str:
    return "#" + hashlib.sha256(value.encode()).hexdigest()


def _hashes(text: str, user: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.startswith(f"user {user} ")]
    assert len(lines) == 1, text
    return re.findall(r"#[0-9a-f]{64}", lines[0])


def _sentinel_vars(passwords: dict[str, str]) -> dict[str, object]:
    return {
        **passwords,
        "inventory_hostname": "s1",
        "redis_sentinel_address": "127.0.0.1",
        "redis_sentinel_bind": ["127.0.0.1"],
        "redis_sentinel_auth_password": "Auth-password-2kW8",
        "redis_sentinel_primary_host": "127.0.0.1",
        "redis_sentinel_primary_port": 6379,
        "redis_sentinel_quorum": 1,
    }


@pytest.mark.parametrize("rotated", list(REDIS_USERS))
def test_users_acl_has_two_hashes_for_the_rotated_user_only(rotated: str) -> None:
    passwords = _passwords(REDIS_USERS)
    previous_var = REDIS_USERS[rotated] + "_previous"
    old = "Old-password-7Hq2mZ"
    text = render.render(
        "users.acl.j2", role="redis", variables={**passwords, **BACKUP_ON, previous_var: old}
    )
    for user_var, password_var in REDIS_USERS.items():
        user = render.resolve("redis", passwords, user_var)
        expected = [_sha(passwords[password_var])]
        if user_var == rotated:
            expected.append(_sha(old))
        assert _hashes(text, user) == expected, user
    assert old not in text
    for value in passwords.values():
        assert value not in text


def test_users_acl_without_a_rotation_has_one_hash_per_user() -> None:
    passwords = _passwords(REDIS_USERS)
    text = render.render("users.acl.j2", role="redis", variables={**passwords, **BACKUP_ON})
    for user_var, password_var in REDIS_USERS.items():
        user = render.resolve("redis", passwords, user_var)
        assert _hashes(text, user) == [_sha(passwords[password_var])]


def test_an_extra_user_can_be_rotated_too() -> None:
    passwords = _passwords(REDIS_USERS)
    users = [
        {"name": "reports", "password": "Reports-new-4kQ9", "rules": "~r:* +@read"},
        {
            "name": "other",
            "password": "Other-new-8sLm2Z",
            "rules": "~o:* +@read",
            "password_previous": "Other-old-3pXc7V",
        },
    ]
    text = render.render(
        "users.acl.j2", role="redis", variables={**passwords, "redis_extra_acl_users": users}
    )
    assert _hashes(text, "reports") == [_sha("Reports-new-4kQ9")]
    assert _hashes(text, "other") == [_sha("Other-new-8sLm2Z"), _sha("Other-old-3pXc7V")]


@pytest.mark.parametrize("rotated", list(SENTINEL_USERS))
def test_sentinel_users_carry_the_previous_hash_while_it_is_set(rotated: str) -> None:
    passwords = _passwords(SENTINEL_USERS)
    old = "Old-sentinel-5Tn8wR"
    variables = _sentinel_vars(passwords)
    plain = render.render("sentinel.conf.j2", role="redis_sentinel", variables=variables)
    text = render.render(
        "sentinel.conf.j2",
        role="redis_sentinel",
        variables={**variables, SENTINEL_USERS[rotated] + "_previous": old},
    )
    for user_var, password_var in SENTINEL_USERS.items():
        user = render.resolve("redis_sentinel", variables, user_var)
        expected = [_sha(passwords[password_var])]
        assert _hashes(plain, user) == expected
        if user_var == rotated:
            expected.append(_sha(old))
        assert _hashes(text, user) == expected, user
    # Sentinel itself always logs in to the other Sentinels with the new password.
    assert f"sentinel sentinel-pass {passwords['redis_sentinel_password']}" in text
    assert old not in text
