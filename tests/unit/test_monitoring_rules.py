"""The monitoring role's shipped templates, rendered with its defaults, pass Prometheus' and
Alertmanager's own checks, and every alert rule is proven by `promtool test rules`
(tests/unit/monitoring/alerts_test.yml): for each alert a case where it must fire and one
where it must not, and each case can fail (a rule that never fires, or always fires, is
caught at that very case).

promtool and amtool come from Debian's prometheus and prometheus-alertmanager packages,
which .ci/bootstrap.sh installs; without them these tests fail, they are not skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import modules
from harness.render import render

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "monitoring" / "alerts_test.yml"
# The inventory a deployment would give: three data nodes (two replicas expected), one Flower.
INVENTORY: dict[str, Any] = {
    "groups": {"redis": ["redis-1", "redis-2", "redis-3"], "flower": ["worker-2"]},
    "hostvars": {
        "redis-1": {"fleet_address": "192.0.2.11"},
        "redis-2": {"fleet_address": "192.0.2.12"},
        "redis-3": {"fleet_address": "192.0.2.13"},
        "worker-2": {"fleet_address": "192.0.2.22"},
    },
    "monitoring_alert_webhook_url": "https://pager.example.com/hook",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run .ci/bootstrap.sh (Debian packages prometheus and "
            "prometheus-alertmanager; CI installs them)",
            pytrace=False,
        )
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _render(tmp: Path, **variables: Any) -> dict[str, Path]:
    """prometheus.yml, alerts.rules.yml and alertmanager.yml in tmp, as the role writes them."""
    context = {
        **INVENTORY,
        "monitoring_rules_file": str(tmp / "alerts.rules.yml"),
        "monitoring_tls_dir": str(tmp),
        **variables,
    }
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp / name).write_text("placeholder: promtool checks that the file exists\n")
    files = {}
    for name in ("prometheus.yml", "alerts.rules.yml", "alertmanager.yml"):
        files[name] = tmp / name
        files[name].write_text(
            render(f"monitoring/{name}.j2", role="monitoring", variables=context)
        )
    return files


def _cases() -> list[dict[str, Any]]:
    return [
        t for group in yaml.safe_load(CASES.read_text())["tests"] for t in group["alert_rule_test"]
    ]


def _alerts(rules: Path) -> list[str]:
    groups = yaml.safe_load(rules.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def _failed_cases(output: str) -> set[tuple[str, str]]:
    return set(re.findall(r"alertname: (\w+), time: (\w+),", output))


def _checked_jobs(prometheus_yml: Path) -> dict[str, Any]:
    """The scrape jobs of a rendered prometheus.yml, by name, once promtool accepts it."""
    result = _run(_tool("promtool"), "check", "config", str(prometheus_yml))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(prometheus_yml.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    files = _render(tmp_path)
    jobs = _checked_jobs(files["prometheus.yml"])
    redis_targets = jobs["redis"]["static_configs"][0]["targets"]
    assert redis_targets == [f"rediss://192.0.2.1{i}:6379" for i in (1, 2, 3)]
    assert jobs["flower"]["static_configs"][0]["targets"] == ["192.0.2.22:5555"]
    assert jobs["flower"]["scheme"] == "https"
    assert "sentinel" not in jobs  # no Sentinel in this inventory


def test_sentinel_job_scrapes_the_sentinel_group_by_default(tmp_path: Path) -> None:
    """Job sentinel: fleet_address:26379 of each host of the sentinel group, through the
    exporter (its login is on the Sentinels too: role redis_sentinel); off on request."""
    inventory = {
        "groups": {**INVENTORY["groups"], "sentinel": ["redis-1", "redis-2", "redis-3"]},
        "hostvars": INVENTORY["hostvars"],
    }
    files = _render(tmp_path, **inventory)
    jobs = _checked_jobs(files["prometheus.yml"])
    assert jobs["sentinel"]["static_configs"][0]["targets"] == [
        f"rediss://192.0.2.1{i}:26379" for i in (1, 2, 3)
    ]
    assert jobs["sentinel"]["metrics_path"] == "/scrape"
    off = _render(tmp_path, monitoring_sentinel_scrape=False, **inventory)["prometheus.yml"]
    assert "sentinel" not in {
        j["job_name"] for j in yaml.safe_load(off.read_text())["scrape_configs"]
    }


def test_prometheus_config_with_sentinels_passes_promtool(tmp_path: Path) -> None:
    files = _render(
        tmp_path,
        monitoring_sentinel_scrape=True,
        monitoring_sentinel_targets=["192.0.2.11:26379"],
        monitoring_flower_url_prefix="flower",
    )
    jobs = _checked_jobs(files["prometheus.yml"])
    assert jobs["sentinel"]["static_configs"][0]["targets"] == ["rediss://192.0.2.11:26379"]
    assert jobs["flower"]["metrics_path"] == "/flower/metrics"


def test_node_job_scrapes_the_celery_hosts_and_data_nodes(tmp_path: Path) -> None:
    """Job node (monitoring_node_exporter, on by default): fleet_address:9100 of the celery
    hosts and of the data nodes, each once, over mutual TLS; the hosts that run the doctor
    carry doctor="expected" (a data node that is also a celery host too); switched off, no
    job."""
    inventory = {
        "groups": {
            **INVENTORY["groups"],
            "celery_workers": ["worker-1", "worker-2", "redis-3"],
            "celery_beat": ["worker-1"],
        },
        "hostvars": {**INVENTORY["hostvars"], "worker-1": {"fleet_address": "192.0.2.21"}},
    }
    off = _render(tmp_path, monitoring_node_exporter=False, **inventory)["prometheus.yml"]
    assert "node" not in {j["job_name"] for j in yaml.safe_load(off.read_text())["scrape_configs"]}
    files = _render(tmp_path, **inventory)
    jobs = _checked_jobs(files["prometheus.yml"])
    assert jobs["node"]["static_configs"] == [
        {
            "targets": ["192.0.2.13:9100", "192.0.2.21:9100", "192.0.2.22:9100"],
            "labels": {"doctor": "expected"},
        },
        {"targets": ["192.0.2.11:9100", "192.0.2.12:9100"]},
    ]
    assert jobs["node"]["scheme"] == "https"
    assert jobs["node"]["tls_config"] == {
        "ca_file": f"{tmp_path}/ca.pem",
        "cert_file": f"{tmp_path}/client.pem",
        "key_file": f"{tmp_path}/client.key",
    }


def test_doctor_not_running_waits_three_intervals(tmp_path: Path) -> None:
    """celery_doctor_interval (systemd's and Prometheus' N s/m/h) sets DoctorNotRunning: last
    run older than two intervals, for one more."""
    for interval, seconds in (("5m", 600), ("90s", 180), ("1h", 7200)):
        rules = yaml.safe_load(
            _render(tmp_path, celery_doctor_interval=interval)["alerts.rules.yml"].read_text()
        )
        rule = next(
            r for g in rules["groups"] for r in g["rules"] if r["alert"] == "DoctorNotRunning"
        )
        assert f"_seconds > {seconds} or (" in rule["expr"], rule["expr"]
        assert rule["for"] == interval


def test_rules_pass_promtool(tmp_path: Path) -> None:
    files = _render(tmp_path)
    result = _run(_tool("promtool"), "check", "rules", str(files["alerts.rules.yml"]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_runbook_anchor_in_docs(tmp_path: Path) -> None:
    rules = yaml.safe_load(_render(tmp_path)["alerts.rules.yml"].read_text())
    docs = (ROOT / "docs" / "monitoring.md").read_text()
    missing = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            anchor = rule["alert"].lower()
            assert rule["annotations"]["runbook_url"] == f"docs/monitoring.md#{anchor}"
            assert rule["annotations"]["description"]
            if not re.search(rf"^#+ `?{rule['alert']}`?$", docs, re.MULTILINE):
                missing.append(rule["alert"])
    assert missing == [], "alerts without a heading (anchor) in docs/monitoring.md"


def test_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    files = _render(
        tmp_path,
        monitoring_alert_webhook_username="pager",
        monitoring_alert_webhook_password="not-a-real-secret-0123",
    )
    result = _run(_tool("amtool"), "check-config", str(files["alertmanager.yml"]))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(files["alertmanager.yml"].read_text())
    hook = config["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "https://pager.example.com/hook"
    assert hook["http_config"]["basic_auth"]["username"] == "pager"
    inhibit = config["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['alertname="RedisDown"']
    assert inhibit["target_matchers"] == ['component="celery"']


def test_every_alert_has_a_firing_and_a_quiet_case(tmp_path: Path) -> None:
    alerts = _alerts(_render(tmp_path)["alerts.rules.yml"])
    fires = {c["alertname"] for c in _cases() if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in _cases() if not c.get("exp_alerts")}
    assert sorted(set(alerts) - fires) == [], "alerts never shown to fire"
    assert sorted(set(alerts) - quiet) == [], "alerts never shown to stay quiet"
    assert sorted((fires | quiet) - set(alerts)) == [], "cases for alerts that do not exist"


def test_alert_rules_pass_their_unit_tests(tmp_path: Path) -> None:
    _render(tmp_path)
    shutil.copy(CASES, tmp_path / "alerts_test.yml")
    result = _run(_tool("promtool"), "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("mutant", "expr"),
    [("never fires", "vector(1) < 0"), ("always fires", "vector(1)")],
)
def test_each_case_catches_a_broken_rule(tmp_path: Path, mutant: str, expr: str) -> None:
    """Every rule replaced by one that never (always) fires: each case that expects alerts
    (expects none) must fail, named by alert and time in promtool's output."""
    rules = yaml.safe_load(_render(tmp_path)["alerts.rules.yml"].read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = expr
            rule.pop("for", None)
    (tmp_path / "alerts.rules.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(CASES, tmp_path / "alerts_test.yml")
    result = _run(_tool("promtool"), "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0
    expect_failing = {
        (c["alertname"], c["eval_time"])
        for c in _cases()
        if bool(c.get("exp_alerts")) == (mutant == "never fires")
    }
    assert expect_failing - _failed_cases(result.stdout + result.stderr) == set(), (
        f"cases that pass although every rule {mutant}"
    )


def test_role_page_is_not_stale() -> None:
    """docs/roles/monitoring.md carries the inputs table role_docs writes from the specs
    (tools/role_docs.py does not list the role yet, so `make docs` does not cover it)."""
    role_docs = modules.load(ROOT / "tools" / "role_docs.py")
    path = ROOT / "docs" / "roles" / "monitoring.md"
    page = path.read_text()
    assert role_docs.render(page, role_docs.table("monitoring"), path) == page, (
        "docs/roles/monitoring.md is stale: rewrite its table with role_docs.table('monitoring')"
    )
