"""Every password input goes through the one check (plugins/filter/fleet.py), in each role's real
preflight, before anything touches a host: ansible-playbook runs the preflight task files
against localhost with one bad value at a time and must fail naming the variable and what is
wrong, without printing the value. The same preflight with only valid inputs passes (the
control: a check that refused everything, or a failure elsewhere, cannot pass the tests)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import modules, playbook

ROOT = Path(__file__).resolve().parents[2]
GOOD = "Xk3-f9Qz_2LmPa7wR0tY"
WEAK = {
    "placeholder": "CHANGE_ME-flower-acl-x",
    "repeated": "aaaaaaaaaaaaaaaaaaaa",
    "run": "abcdefgh12345678Zz",
    "short": "Xk3-f9Qz",
}

# (role, variable, extra vars that make every other input of that preflight valid)
REDIS = {
    "redis_admin_password": GOOD + "a",
    "redis_app_password": GOOD + "b",
    "redis_monitor_password": GOOD + "c",
    "redis_deadletter_password": GOOD + "i",
    "redis_replication_password": GOOD + "d",
    "redis_sentinel_auth_password": GOOD + "e",
    "flower_redis_password": GOOD + "f",
}
SENTINEL = {
    "redis_sentinel_password": GOOD + "g",
    "redis_sentinel_auth_password": GOOD + "e",
    "redis_sentinel_client_password": GOOD + "k",
    "redis_sentinel_monitor_password": GOOD + "c",
}
SENTINEL_OTHER = {"redis_sentinel_quorum": 1}
FLOWER = {"flower_basic_auth_password": GOOD + "h", "flower_redis_password": GOOD + "f"}
# The rest of each preflight's inputs: TLS files that exist (the preflight only looks for
# them), no wheelhouse to look for.
TLS_FILES = {
    "redis": ["redis_tls_cert_file", "redis_tls_key_file", "redis_tls_ca_cert_file"],
    "redis_sentinel": [
        "redis_sentinel_tls_cert_file",
        "redis_sentinel_tls_key_file",
        "redis_sentinel_tls_ca_cert_file",
    ],
    "flower": [],
}
VALID = {
    "redis": REDIS,
    "redis_sentinel": {**SENTINEL, **SENTINEL_OTHER},
    "flower": {**FLOWER, "flower_wheelhouse": ""},
}


def valid(tmp_path: Path, role: str) -> dict[str, Any]:
    """Inputs with which ROLE's whole preflight passes (test_the_valid_inputs_pass)."""
    files = {}
    for name in TLS_FILES[role]:
        (tmp_path / name).write_text("exists\n")
        files[name] = str(tmp_path / name)
    return {**VALID[role], **files}


# Each variable once, the kinds of weakness in turn (the filter's own test covers them all).
CASES = [
    (role, name, sorted(WEAK)[i % len(WEAK)])
    for i, (role, name) in enumerate(
        [
            *[("redis", name) for name in REDIS],
            *[("redis_sentinel", name) for name in SENTINEL],
            *[("flower", name) for name in FLOWER],
        ]
    )
]
FILTER = ROOT / "plugins" / "filter" / "fleet.py"


def _filter() -> Any:
    return modules.load(FILTER).fleet_password_problem


@pytest.mark.parametrize("kind", sorted(WEAK))
def test_the_one_check_refuses_each_kind_of_weak_password(kind: str) -> None:
    assert _filter()(WEAK[kind]) != ""


@pytest.mark.parametrize(
    "value", [GOOD, "mol-FlowerAcl-8d2f4a6c1e3b5d79", "q0Vh2+JcY7w=Lr9~s.Tn_4Pb"]
)
def test_the_one_check_accepts_generated_passwords(value: str) -> None:
    assert _filter()(value) == ""


def preflight(
    tmp_path: Path,
    role: str,
    variables: dict[str, object],
    *,
    beat_hosts: int = 1,
    monitoring: bool = False,
) -> str:
    """Run ROLE's preflight.yml on localhost (groups redis and sentinel); return the output.
    ``beat_hosts``: how many hosts the celery_beat group has (node1 and placeholders that no
    task is run on); ``monitoring``: the inventory has a monitoring group (a placeholder)."""
    playbook_file = tmp_path / "preflight.yml"
    playbook_file.write_text(
        f"""
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: {role}
        tasks_from: preflight
"""
    )
    inventory = tmp_path / "hosts.yml"
    hosts = {"node1": {"ansible_connection": "local", "fleet_address": "127.0.0.1"}}
    beat_others = {f"beat{i}": {} for i in range(2, beat_hosts + 1)}
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "children": {
                        "redis": {"hosts": hosts},
                        "sentinel": {"hosts": hosts},
                        "flower": {"hosts": hosts},
                        "celery_workers": {"hosts": hosts},
                        "celery_beat": {"hosts": {**hosts, **beat_others}},
                        **({"monitoring": {"hosts": {"mon1": {}}}} if monitoring else {}),
                    },
                    "vars": {"ansible_python_interpreter": sys.executable},
                }
            }
        )
    )
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"fleet_no_log": False, **variables}))
    result = playbook.run(
        "-i", str(inventory), "--limit", "node1", "-e", f"@{extra}", str(playbook_file), timeout=120
    )
    return result.stdout + result.stderr


def flat(out: str) -> str:
    """The output with every run of white space as one space (messages are folded)."""
    return " ".join(out.split())


@pytest.mark.parametrize("role", sorted(VALID))
def test_the_valid_inputs_pass_each_preflight(tmp_path: Path, role: str) -> None:
    out = preflight(tmp_path, role, valid(tmp_path, role))
    assert re.search(r"node1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", out), out


@pytest.mark.parametrize(("role", "variable", "kind"), CASES)
def test_a_weak_password_fails_preflight_naming_the_variable(
    tmp_path: Path, role: str, variable: str, kind: str
) -> None:
    out = preflight(tmp_path, role, {**valid(tmp_path, role), variable: WEAK[kind]})
    shown = (
        variable.replace("flower_redis_password", "redis_flower_password")
        if role == "redis"
        else variable
    )
    assert f"{shown} {_filter()(WEAK[kind])}" in flat(out), out
    assert "failed=1" in out, out
    assert WEAK[kind] not in out


def test_the_sentinels_monitoring_user_is_required_once_something_scrapes_them(
    tmp_path: Path,
) -> None:
    """No monitoring group: an empty redis_sentinel_monitor_password renders no such user
    (the control); with one, role monitoring scrapes the Sentinels as that user: refused."""
    inputs = {**valid(tmp_path, "redis_sentinel"), "redis_sentinel_monitor_password": ""}
    out = preflight(tmp_path, "redis_sentinel", inputs)
    assert re.search(r"node1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", out), out
    out = preflight(tmp_path, "redis_sentinel", inputs, monitoring=True)
    assert "failed=1" in out, out
    assert "redis_sentinel_monitor_password is empty" in flat(out), out
    assert "redis_monitor_password" in flat(out), out


def test_extra_users_are_checked_too(tmp_path: Path) -> None:
    user = {"name": "reports", "password": WEAK["placeholder"], "rules": "~r:* +@read"}
    out = preflight(
        tmp_path, "redis", {**valid(tmp_path, "redis"), "redis_extra_acl_users": [user]}
    )
    assert "redis_extra_acl_users[0] (name 'reports')" in flat(out), out
    assert "its password looks like a placeholder" in flat(out), out
    assert WEAK["placeholder"] not in out


def test_extra_basic_auth_users_are_checked_too(tmp_path: Path) -> None:
    extra = ["ops:" + WEAK["run"]]
    out = preflight(
        tmp_path, "flower", {**valid(tmp_path, "flower"), "flower_basic_auth_extra": extra}
    )
    assert f"flower_basic_auth_extra[0] password {_filter()(WEAK['run'])}" in flat(out), out
    assert WEAK["run"] not in out


def test_the_previous_basic_auth_password_is_checked_during_a_rotation(tmp_path: Path) -> None:
    good = valid(tmp_path, "flower")
    out = preflight(
        tmp_path, "flower", {**good, "flower_basic_auth_password_previous": WEAK["placeholder"]}
    )
    problem = _filter()(WEAK["placeholder"])
    assert f"flower_basic_auth_password_previous {problem}" in flat(out), out
    assert WEAK["placeholder"] not in out
    same = good["flower_basic_auth_password"]
    out = preflight(tmp_path, "flower", {**good, "flower_basic_auth_password_previous": same})
    assert "flower_basic_auth_password_previous equals flower_basic_auth_password" in flat(out), out
    assert same not in out


@pytest.mark.parametrize(
    ("name", "rules"),
    [
        ("reports\nuser evil on nopass ~* +@all", "~r:* +@read"),
        ("reports", "~r:* +@read\nuser evil on nopass ~* +@all"),
        ("reports", "~r:* +@read nopass"),
        ("reports", "~r:* >another-password"),
        ("celery", "~r:* +@read"),
    ],
)
def test_extra_users_cannot_inject_acl_lines(tmp_path: Path, name: str, rules: str) -> None:
    user = {"name": name, "password": GOOD, "rules": rules}
    out = preflight(
        tmp_path, "redis", {**valid(tmp_path, "redis"), "redis_extra_acl_users": [user]}
    )
    task = task_output(out, "Check the extra ACL users")
    assert "failed: [node1]" in task, out
    assert "redis_extra_acl_users[0] (name '" in flat(task), out


def test_a_plain_extra_user_passes(tmp_path: Path) -> None:
    user = {"name": "reports", "password": GOOD, "rules": "~reports:* +@read"}
    out = preflight(
        tmp_path, "redis", {**valid(tmp_path, "redis"), "redis_extra_acl_users": [user]}
    )
    assert "failed=0" in out, out


@pytest.mark.parametrize(
    "bad",
    [
        {
            "celery_worker_pools": [
                {"name": "default", "queues": ["default\nExecStartPre=+/bin/id"]}
            ]
        },
        {
            "celery_worker_pools": [
                {
                    "name": "default",
                    "queues": ["default"],
                    "extra_args": ["-O fair\nExecStartPre=+/x"],
                }
            ]
        },
        {
            "celery_worker_pools": [
                {"name": "default", "queues": ["default"], "loglevel": "INFO\nX=1"}
            ]
        },
        {"celery_loglevel": "INFO\nExecStartPre=+/bin/id"},
        {"celery_settings": {"CELERY_TASK_DEFAULT_QUEUE": 'x"\nCELERY_ACCEPT_CONTENT="pickle'}},
        {"celery_settings": {"CELERY_BROKER_TRANSPORT_OPTIONS": {"a": "it's"}}},
        {"celery_settings": {"celery task": "x"}},
    ],
)
def test_a_line_break_or_quote_in_a_celery_input_fails_preflight(
    tmp_path: Path, bad: dict[str, Any]
) -> None:
    out = preflight(tmp_path, "celery", {"celery_redis_password": GOOD, **bad})
    assert "would break out of its line" in out, out


def test_plain_celery_inputs_pass_that_check(tmp_path: Path) -> None:
    out = preflight(
        tmp_path,
        "celery",
        {
            "celery_redis_password": GOOD,
            "celery_worker_pools": [
                {"name": "default", "queues": ["default", "mail.out"], "extra_args": ["-O", "fair"]}
            ],
            "celery_settings": {"CELERY_TASK_TIME_LIMIT": 90, "CELERY_X": {"a": [1, "b"]}},
        },
    )
    assert "would break out of its line" not in out, out
    assert "Check the values that reach the unit files" in out, out


# Each worker host's own client certificate: role pki issues NAME.pem and NAME.key side by
# side, so with celery_tls_issue the two paths must be that pair; without it, your files
# must exist before anything changes on the host.
def test_an_issued_client_key_elsewhere_than_its_certificate_fails_preflight(
    tmp_path: Path,
) -> None:
    out = preflight(
        tmp_path,
        "celery",
        {
            "celery_redis_password": GOOD,
            "celery_tls_cert_src": str(tmp_path / "certs" / "w1.pem"),
            "celery_tls_key_src": str(tmp_path / "keys" / "w1.key"),
        },
    )
    assert "celery_tls_cert_src must end in .pem and celery_tls_key_src be the same path" in out
    assert "failed=1" in out, out


def test_own_client_files_that_do_not_exist_fail_preflight(tmp_path: Path) -> None:
    out = preflight(
        tmp_path,
        "celery",
        {
            "celery_redis_password": GOOD,
            "celery_tls_issue": False,
            "celery_tls_cert_src": str(tmp_path / "mine.pem"),
        },
    )
    assert f"celery_tls_cert_src: {tmp_path / 'mine.pem'} does not exist on the controller" in out
    assert "failed=1" in out, out


def test_a_pool_limit_above_an_explicit_visibility_timeout_fails_preflight(tmp_path: Path) -> None:
    pools = [{"name": "long", "queues": ["long"], "soft_time_limit": 3200, "time_limit": 3300}]
    out = preflight(
        tmp_path,
        "celery",
        {
            "celery_redis_password": GOOD,
            "celery_worker_pools": pools,
            "celery_settings": {"CELERY_VISIBILITY_TIMEOUT": 3000},
        },
    )
    assert "Pool 'long'" in out, out
    # Unset, the settings derive it from the pool (3300 + 300): preflight has nothing to refuse.
    out = preflight(
        tmp_path, "celery", {"celery_redis_password": GOOD, "celery_worker_pools": pools}
    )
    assert "Pool 'long'" not in out, out


def test_two_beat_hosts_need_the_beat_lock(tmp_path: Path) -> None:
    out = preflight(tmp_path, "celery", {"celery_redis_password": GOOD}, beat_hosts=2)
    assert "without celery_beat_lock beat must run on" in out, out
    out = preflight(
        tmp_path, "celery", {"celery_redis_password": GOOD, "celery_beat_lock": True}, beat_hosts=2
    )
    assert "without celery_beat_lock" not in out, out
    assert "Check the beat lock's TTL" in out, out
    out = preflight(
        tmp_path,
        "celery",
        {"celery_redis_password": GOOD, "celery_beat_lock": True, "celery_beat_lock_ttl": 2},
        beat_hosts=2,
    )
    assert "celery_beat_lock_ttl is 2" in out, out


def test_confirmed_publish_needs_reliable_fetch_and_a_number(tmp_path: Path) -> None:
    base = {"celery_redis_password": GOOD}
    out = preflight(
        tmp_path,
        "celery",
        {**base, "celery_broker_wait_replicas": 1, "celery_reliable_fetch": True},
    )
    assert "celery_broker_wait_replicas is" not in out, out
    out = preflight(
        tmp_path,
        "celery",
        {**base, "celery_broker_wait_replicas": 1, "celery_reliable_fetch": False},
    )
    assert "celery_broker_wait_replicas is '1'" in out, out
    assert "set celery_reliable_fetch: true too" in out, out
    out = preflight(tmp_path, "celery", {**base, "celery_broker_wait_replicas": "two"})
    assert "celery_broker_wait_replicas is 'two'" in out, out


# A rotation's previous passwords: the same check as the new ones, and not the new one.
PREVIOUS = [
    ("redis", "redis_app_password"),
    ("redis", "redis_admin_password"),
    ("redis", "redis_sentinel_auth_password"),
    ("redis_sentinel", "redis_sentinel_password"),
    ("redis_sentinel", "redis_sentinel_monitor_password"),
]


def task_output(out: str, task: str) -> str:
    """The part of the output of one task (up to the next TASK line)."""
    start = out.index(task)
    end = out.find("\nTASK [", start)
    return out[start : end if end != -1 else len(out)]


@pytest.mark.parametrize(("role", "variable"), PREVIOUS)
def test_a_previous_password_equal_to_the_new_one_fails_preflight(
    tmp_path: Path, role: str, variable: str
) -> None:
    inputs = valid(tmp_path, role)
    out = preflight(tmp_path, role, {**inputs, f"{variable}_previous": inputs[variable]})
    assert "failed=1" in out, out
    assert f"{variable}_previous equals {variable}" in out, out
    assert inputs[variable] not in out


@pytest.mark.parametrize(("role", "variable"), PREVIOUS)
def test_a_weak_previous_password_fails_preflight(tmp_path: Path, role: str, variable: str) -> None:
    out = preflight(
        tmp_path, role, {**valid(tmp_path, role), f"{variable}_previous": WEAK["placeholder"]}
    )
    assert "failed=1" in out, out
    assert f"{variable}_previous looks like a placeholder" in flat(out), out
    assert WEAK["placeholder"] not in out


def test_a_valid_previous_password_passes_preflight(tmp_path: Path) -> None:
    inputs = {**valid(tmp_path, "redis"), "redis_app_password_previous": GOOD + "z"}
    out = preflight(tmp_path, "redis", inputs)
    assert "failed=0" in out, out
    task = task_output(out, "Check the previous passwords of a rotation")
    assert "ok: [node1] => (item=redis_app_password_previous)" in task, out
    assert "fatal:" not in task, out
    assert "failed:" not in task, out
    assert GOOD + "z" not in out


def test_an_extra_user_previous_password_is_checked(tmp_path: Path) -> None:
    user = {"name": "reports", "password": GOOD, "rules": "~r:* +@read"}
    out = preflight(
        tmp_path,
        "redis",
        {**valid(tmp_path, "redis"), "redis_extra_acl_users": [user | {"password_previous": GOOD}]},
    )
    assert "redis_extra_acl_users[0]" in out, out
    assert "equals its password" in out, out
    out = preflight(
        tmp_path,
        "redis",
        {
            **valid(tmp_path, "redis"),
            "redis_extra_acl_users": [user | {"password_previous": GOOD + "y"}],
        },
    )
    task = task_output(out, "Check the extra ACL users")
    assert "ok: [node1]" in task, out
    assert "failed:" not in task, out


# Values rendered into redis.conf, sentinel.conf and Flower's env file (plugins/filter/rendered.py).
INJECTIONS = [
    ("redis", {"redis_extra_config": {"hz": "10\nloadmodule /tmp/evil.so"}}, "has a line break"),
    ("redis", {"redis_extra_config": {"enable-debug-command": "yes"}}, "is set by the role"),
    ("redis", {"redis_extra_config": {"tls-port": 0, "port": 6379}}, "is set by the role"),
    ("redis", {"redis_extra_config": {"Bad key": 1}}, 'has the directive "Bad key"'),
    ("redis", {"redis_bind": ["127.0.0.1", "10.0.0.1\nprotected-mode no"]}, "redis_bind[1] is"),
    ("redis", {"redis_replica_announce_ip": "10.0.0.1 6380"}, "redis_replica_announce_ip is"),
    (
        "redis_sentinel",
        {"redis_sentinel_announce_ip": "10.0.0.1\nsentinel deny-scripts-reconfig no"},
        "redis_sentinel_announce_ip is",
    ),
    ("redis_sentinel", {"redis_sentinel_bind": ["127.0.0.1 0.0.0.0"]}, "redis_sentinel_bind[0] is"),
    (
        "flower",
        {"flower_settings": {"CELERY_X": 'a"\nLD_PRELOAD="/tmp/evil.so'}},
        "flower_settings CELERY_X has a quote",
    ),
    ("flower", {"flower_settings": {"lower": "x"}}, 'flower_settings has the name "lower"'),
]


@pytest.mark.parametrize(("role", "bad", "problem"), INJECTIONS)
def test_a_value_that_would_add_a_line_to_a_rendered_file_fails_preflight(
    tmp_path: Path, role: str, bad: dict[str, Any], problem: str
) -> None:
    out = preflight(tmp_path, role, {**valid(tmp_path, role), **bad})
    assert "failed=1" in out, out
    assert problem in flat(out).replace('\\"', '"'), out


@pytest.mark.parametrize(
    ("role", "fine"),
    [
        ("redis", {"redis_extra_config": {"hz": 20, "save": "900 1"}}),
        (
            "redis",
            {
                "redis_extra_config": {"enable-debug-command": "local"},
                "redis_extra_config_unsafe": True,
            },
        ),
        ("redis", {"redis_bind": ["-::1", "10.0.0.1", "redis-1.internal"]}),
        ("redis_sentinel", {"redis_sentinel_announce_ip": "sentinel-1.example.net"}),
        ("flower", {"flower_settings": {"CELERY_X": "it's fine", "CELERY_Y": {"a": [1, 2]}}}),
    ],
)
def test_plain_values_for_rendered_files_pass(
    tmp_path: Path, role: str, fine: dict[str, Any]
) -> None:
    out = preflight(tmp_path, role, {**valid(tmp_path, role), **fine})
    assert "failed=0" in out, out


@pytest.mark.parametrize(
    "bad",
    [
        {"celery_doctor_interval": "5 minutes"},
        {"celery_doctor_interval": "0m"},
        {"celery_doctor_metrics_dir": "var/lib/textfile"},
        {"celery_doctor_expect_workers": ["default"]},
        {"celery_service_manager": "supervisor", "celery_doctor_timer": True},
    ],
)
def test_bad_doctor_timer_inputs_fail_preflight(tmp_path: Path, bad: dict[str, Any]) -> None:
    out = preflight(tmp_path, "celery", {"celery_redis_password": GOOD, **bad})
    failed = out.split("Check the doctor's timer", 1)[1].split("TASK [", 1)[0]
    assert "celery_doctor_interval is" in failed, out


def test_the_doctor_timer_defaults_pass_and_follow_the_service_manager(tmp_path: Path) -> None:
    for variables in (
        {"celery_service_manager": "systemd"},
        {"celery_service_manager": "supervisor"},
        {"celery_broker_url": "amqps://app:pw@rabbit:5671//"},
        # The doctor checks RabbitMQ too: its timer is allowed with an AMQP broker.
        {
            "celery_broker_url": "amqps://app:pw@rabbit:5671//",
            "celery_service_manager": "systemd",
            "celery_doctor_timer": True,
        },
    ):
        out = preflight(tmp_path, "celery", {"celery_redis_password": GOOD, **variables})
        passed = out.split("Check the doctor's timer", 1)[1].split("TASK [", 1)[0]
        assert "ok: [node1]" in passed, out


# Backups (redis_backup_enabled): the backup user's password and each setting the unit is
# rendered from, each refused with its name and the fix; the schedule by systemd itself.
BACKUP = {"redis_backup_enabled": True, "redis_backup_password": GOOD + "m"}


def test_valid_backup_settings_pass_preflight(tmp_path: Path) -> None:
    out = preflight(
        tmp_path,
        "redis",
        {**valid(tmp_path, "redis"), **BACKUP, "redis_backup_ship_dir": "/mnt/redis-backups"},
    )
    assert re.search(r"node1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", out), out


def test_backups_need_the_backup_password(tmp_path: Path) -> None:
    out = preflight(tmp_path, "redis", {**valid(tmp_path, "redis"), "redis_backup_enabled": True})
    assert "redis_backup_password is empty" in flat(out), out
    assert "failed=1" in out, out


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("redis_backup_retain", 0, "redis_backup_retain is 0: set a whole number of copies"),
        ("redis_backup_dir", "relative/dir", "redis_backup_dir is 'relative/dir': set an absolute"),
        ("redis_backup_ship_dir", "/var/lib/redis-backup", "other than redis_backup_dir"),
        ("redis_backup_on_calendar", "every tuesday-ish", "which systemd does not accept"),
    ],
)
def test_a_bad_backup_setting_fails_preflight_naming_it(
    tmp_path: Path, variable: str, value: object, message: str
) -> None:
    out = preflight(tmp_path, "redis", {**valid(tmp_path, "redis"), **BACKUP, variable: value})
    assert message in flat(out), out
    assert "failed=1" in out, out


# The config folder is the one place under /etc its daemon may write (the unit's
# ReadWritePaths): never /etc/redis itself, never a folder holding the TLS files, the backup
# password or the other daemon's config.
@pytest.mark.parametrize(
    ("role", "bad"),
    [
        ("redis", {"redis_conf_dir": "/etc/redis"}),
        ("redis", {"redis_conf_dir": "/etc/redis/"}),
        ("redis", {"redis_conf_dir": "/etc"}),
        ("redis", {"redis_conf_dir": "etc/redis/server"}),
        ("redis", {"redis_conf_path": "/etc/redis/redis.conf"}),
        ("redis", {"redis_conf_dir": "/etc/fleet", "redis_tls_dir": "/etc/fleet/tls"}),
        ("redis", {"redis_backup_env_file": "/etc/redis/server/backup.env"}),
        ("redis_sentinel", {"redis_sentinel_conf_dir": "/etc/redis"}),
        (
            "redis_sentinel",
            {"redis_sentinel_conf_dir": "/etc/redis/server", "redis_conf_dir": "/etc/redis/server"},
        ),
        ("redis_sentinel", {"redis_sentinel_conf_path": "/etc/redis/sentinel.conf"}),
    ],
)
def test_a_config_folder_the_daemon_should_not_write_fails_preflight(
    tmp_path: Path, role: str, bad: dict[str, str]
) -> None:
    out = preflight(tmp_path, role, {**valid(tmp_path, role), **bad})
    name = "redis_conf_dir" if role == "redis" else "redis_sentinel_conf_dir"
    assert f"{name} (" in flat(out), out
    assert "is the only folder under /etc that" in flat(out), out
    assert "failed=1" in out, out


# Package versions (redis_package_version, redis_sentinel_package_version): a Debian version
# string or "" (keep what is installed); on a host that is a data node and a Sentinel (node1
# here) both must be one version: the packages depend on each other at exactly one version.
@pytest.mark.parametrize(
    ("role", "bad", "message"),
    [
        ("redis", {"redis_package_version": "latest"}, 'redis_package_version is "latest"'),
        (
            "redis_sentinel",
            {"redis_sentinel_package_version": "7.0.*"},
            'redis_sentinel_package_version is "7.0.*"',
        ),
        (
            "redis",
            {
                "redis_package_version": "5:7.0.15-1~deb12u10",
                "redis_sentinel_package_version": "5:7.0.15-1~deb12u7",
            },
            "Set redis_package_version only",
        ),
        (
            "redis_sentinel",
            {"redis_sentinel_package_version": "5:7.0.15-1~deb12u7"},
            "Set redis_package_version only",
        ),
    ],
)
def test_a_bad_package_version_fails_preflight_naming_it(
    tmp_path: Path, role: str, bad: dict[str, Any], message: str
) -> None:
    out = preflight(tmp_path, role, {**valid(tmp_path, role), **bad})
    assert message in flat(out).replace('\\"', '"'), out
    assert "failed=1" in out, out


@pytest.mark.parametrize("role", ["redis", "redis_sentinel"])
def test_one_package_version_for_both_roles_passes_preflight(tmp_path: Path, role: str) -> None:
    out = preflight(
        tmp_path, role, {**valid(tmp_path, role), "redis_package_version": "5:7.0.15-1~deb12u10"}
    )
    assert re.search(r"node1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", out), out
