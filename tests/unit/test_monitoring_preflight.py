"""Role monitoring's preflight refuses bad inputs before anything touches a host, with an
error that names the variable: ansible-playbook runs roles/monitoring/tasks/preflight.yml
against localhost, one bad value at a time, after a run where every input is valid passes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import playbook as ansible

VALID: dict[str, Any] = {
    "monitoring_alert_webhook_url": "https://pager.example.com/hook",
    "monitoring_redis_password": "Xk3-f9Qz_2LmPa7wR0tYc",
}


def preflight(
    tmp_path: Path, variables: dict[str, Any], *, address: bool = True
) -> tuple[int, str]:
    """Run the preflight on localhost (in groups redis and flower); return (rc, output)."""
    (tmp_path / "ca.pem").write_text("placeholder: the preflight only checks that it exists\n")
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(
        """
- hosts: all
  gather_facts: false
  roles: [fleet_common]
  tasks:
    - ansible.builtin.include_role:
        name: monitoring
        tasks_from: preflight
"""
    )
    host: dict[str, Any] = {"ansible_connection": "local"}
    if address:
        host["fleet_address"] = "127.0.0.1"
    hosts = {"node1": host}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "children": {"redis": {"hosts": hosts}, "flower": {"hosts": hosts}},
                    "vars": {"ansible_python_interpreter": sys.executable},
                }
            }
        )
    )
    extra = tmp_path / "vars.json"
    extra.write_text(
        json.dumps(
            {
                "fleet_no_log": False,
                "monitoring_tls_ca_src": str(tmp_path / "ca.pem"),
                **VALID,
                **variables,
            }
        )
    )
    result = ansible.run("-i", str(inventory), "-e", f"@{extra}", str(playbook))
    return result.returncode, result.stdout + result.stderr


def test_valid_inputs_pass(tmp_path: Path) -> None:
    rc, out = preflight(tmp_path, {})
    assert rc == 0, out


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"monitoring_queue_backlog_threshold": -5}, "monitoring_queue_backlog_threshold"),
        ({"monitoring_workers_min": "many"}, "monitoring_workers_min"),
        ({"monitoring_task_failure_ratio": 5}, "monitoring_task_failure_ratio"),
        ({"monitoring_redis_disk_free_ratio": 15}, "monitoring_redis_disk_free_ratio"),
        ({"monitoring_redis_disk_low_for": "ten minutes"}, "monitoring_redis_disk_low_for"),
        ({"monitoring_queue_backlog_for": "10 minutes"}, "monitoring_queue_backlog_for"),
        ({"monitoring_alert_webhook_url": ""}, "monitoring_alert_webhook_url"),
        ({"monitoring_alert_webhook_url": "http://pager.example.com/hook"}, "allow_http"),
        ({"monitoring_redis_password": "CHANGE_ME-monitor-xx"}, "monitoring_redis_password"),
        ({"monitoring_celery_queues": ['celery"} or vector(1)']}, "monitoring_celery_queues"),
    ],
)
def test_bad_input_fails_naming_the_variable(
    tmp_path: Path, variables: dict[str, Any], named: str
) -> None:
    rc, out = preflight(tmp_path, variables)
    assert rc != 0, out
    errors = " ".join(line for line in out.splitlines() if line.startswith("[ERROR]"))
    assert named in errors, out
    for value in variables.values():
        if "CHANGE_ME" in str(value) or "pager.example.com" in str(value):
            assert str(value) not in errors, "a secret in the error message"


def test_a_plain_http_receiver_needs_the_opt_out(tmp_path: Path) -> None:
    rc, out = preflight(
        tmp_path,
        {
            "monitoring_alert_webhook_url": "http://127.0.0.1:8080/hook",
            "monitoring_alert_webhook_allow_http": True,
        },
    )
    assert rc == 0, out


def test_a_host_without_fleet_address_is_refused(tmp_path: Path) -> None:
    rc, out = preflight(tmp_path, {}, address=False)
    assert rc != 0, out
    errors = " ".join(line for line in out.splitlines() if line.startswith("[ERROR]"))
    assert "fleet_address" in errors, out
    assert "':6379'" in errors, out


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"monitoring_doctor_interval": "5 minutes"}, "monitoring_doctor_interval"),
        ({"monitoring_doctor_interval": "1d"}, "monitoring_doctor_interval"),
        ({"monitoring_doctor_check_failing_for": "ten"}, "monitoring_doctor_check_failing_for"),
        ({"monitoring_node_targets": [":9100"]}, "monitoring_node_targets"),
    ],
)
def test_bad_doctor_input_fails_naming_the_variable(
    tmp_path: Path, variables: dict[str, Any], named: str
) -> None:
    rc, out = preflight(tmp_path, variables)
    assert rc != 0, out
    errors = " ".join(line for line in out.splitlines() if line.startswith("[ERROR]"))
    assert named in errors, out


def test_the_doctor_interval_follows_role_celery(tmp_path: Path) -> None:
    rc, out = preflight(tmp_path, {"celery_doctor_interval": "90s"})
    assert rc == 0, out
    rc, out = preflight(tmp_path, {"celery_doctor_interval": "90 s"})
    assert rc != 0, out
    assert "'90 s'" in out, out
