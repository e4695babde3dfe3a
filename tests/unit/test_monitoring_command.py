"""One command line per monitoring daemon: role monitoring's /etc/default files and the local
stack's config/monitoring/*.args take Prometheus', Alertmanager's, the Redis exporter's and
node exporter's arguments from the same filters (plugins/filter/monitoring.py), rendered here
from the real tasks."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from harness import modules, render

REPO = Path(__file__).resolve().parents[2]
FILTERS = REPO / "plugins" / "filter" / "monitoring.py"
INSTALL = REPO / "roles" / "monitoring" / "tasks" / "install.yml"
NODE_EXPORTER = REPO / "roles" / "monitoring" / "tasks" / "node_exporter.yml"
LOCAL = REPO / "playbooks" / "local.yml"
TARGETS = ["10.0.0.1:6379", "10.0.0.2:6379"]
EXPORTER = {
    "tls_dir": "/etc/prometheus/tls",
    "queues": ["celery", "io.mail"],
    "broker_db": 3,
    "deadletter_key": "celery-fleet:dead-letters",
    "beat_key_pattern": "celery-fleet:beat:*",
}


def _filters() -> ModuleType:
    return modules.load(FILTERS)


def test_the_exporter_arguments() -> None:
    argv = _filters().redis_exporter_argv(TARGETS, **EXPORTER)
    assert argv == [
        "-redis.addr=rediss://10.0.0.1:6379",
        "-tls-ca-cert-file=/etc/prometheus/tls/ca.pem",
        "-tls-client-cert-file=/etc/prometheus/tls/client.pem",
        "-tls-client-key-file=/etc/prometheus/tls/client.key",
        "-check-single-keys=db3=celery,db3=io.mail",
        "-check-single-streams=db3=celery-fleet:dead-letters",
        "-count-keys=db3=celery-fleet:beat:*",
    ]
    listening = _filters().redis_exporter_argv(TARGETS, **EXPORTER, listen="127.0.0.1:9121")
    assert listening == ["-web.listen-address=127.0.0.1:9121", *argv]


def test_the_exporter_needs_a_target() -> None:
    with pytest.raises(ValueError, match="monitoring_redis_targets"):
        _filters().redis_exporter_argv([], **EXPORTER)


def test_the_prometheus_arguments() -> None:
    prometheus_argv = _filters().prometheus_argv
    assert prometheus_argv(30) == ["--storage.tsdb.retention.time=30d"]
    assert prometheus_argv(
        15, config_file="/etc/prometheus/prometheus.yml", listen="127.0.0.1:9090"
    ) == [
        "--config.file=/etc/prometheus/prometheus.yml",
        "--web.listen-address=127.0.0.1:9090",
        "--storage.tsdb.retention.time=15d",
    ]


def test_the_alertmanager_arguments() -> None:
    alertmanager_argv = _filters().alertmanager_argv
    assert alertmanager_argv() == ["--cluster.listen-address="]
    assert alertmanager_argv("/etc/prometheus/alertmanager.yml", listen="127.0.0.1:9093") == [
        "--config.file=/etc/prometheus/alertmanager.yml",
        "--web.listen-address=127.0.0.1:9093",
        "--cluster.listen-address=",
    ]


def test_the_node_exporter_arguments() -> None:
    argv = _filters().node_exporter_argv("/var/lib/x", web_config="/etc/x/web.yml")
    assert argv == [
        "--collector.disable-defaults",
        "--collector.textfile",
        "--collector.textfile.directory=/var/lib/x",
        "--web.config.file=/etc/x/web.yml",
    ]
    listening = _filters().node_exporter_argv(
        "/var/lib/x", web_config="/etc/x/web.yml", listen="10.0.0.5:9100"
    )
    assert listening == [*argv[:3], "--web.listen-address=10.0.0.5:9100", argv[3]]


def test_the_filesystem_collector_reads_one_mount_point() -> None:
    """On a Redis host node exporter reports the data dir's filesystem and nothing else:
    every other mount point is excluded, by a pattern without lookahead (Go's regexp)."""
    argv = _filters().node_exporter_argv(
        "/var/lib/x", web_config="/etc/x/web.yml", filesystem="/srv/redis-data.1"
    )
    assert argv[3:6] == [
        "--collector.filesystem",
        f"--collector.filesystem.mount-points-exclude={_filters().everything_but('/srv/redis-data.1')}",
        "--collector.filesystem.fs-types-exclude=^$",
    ]
    for mount in ("/", "/var/lib/redis", "/srv/redis-data.1"):
        excluded = re.compile(_filters().everything_but(mount))
        assert not excluded.search(mount), mount
        others = [
            "",
            "/",
            "/run",
            "/srv",
            "/srv/redis-data.10",
            "/srv/redis-dataX1",
            "/srv/redis_data.1",
            "/var/lib/redis/x",
            "/var/lib/redis2",
            "/var/lib",
            mount + "/",
            mount[:-1],
        ]
        for other in others:
            if other != mount:
                assert excluded.search(other), (mount, other)


def test_a_mount_point_the_pattern_cannot_hold_is_refused() -> None:
    for path in ("relative", "/with space", "/a(b)", "/a*"):
        with pytest.raises(ValueError, match="absolute path"):
            _filters().everything_but(path)


def _task(tasks: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task, the block around it or {})."""
    for task in tasks:
        if task.get("name") == name:
            return task, {}
        if "block" in task:
            try:
                found, _ = _task(task["block"], name)
            except LookupError:
                continue
            return found, task
    raise LookupError(name)


def _render_items(
    task: dict[str, Any], variables: dict[str, Any], tmp_path: Path
) -> dict[str, str]:
    """The copy task's content for each loop item (all of the task without a loop), as the
    play renders it."""
    template = tmp_path / "content.j2"
    template.write_text(task["ansible.builtin.copy"]["content"])
    return {
        item["name"]: render.render_file(
            template,
            role="monitoring",
            variables={**variables, **task.get("vars", {}), "item": item},
        )
        for item in task.get("loop", [{"name": "task"}])
    }


def test_the_servers_etc_default_files(tmp_path: Path) -> None:
    task, _ = _task(
        yaml.safe_load(INSTALL.read_text()),
        "install | Write the daemons' arguments before the packages start them",
    )
    files = _render_items(task, {"monitoring_redis_targets": TARGETS}, tmp_path)
    assert files["prometheus"] == (
        "# Managed by celery-fleet (role monitoring).\n"
        'ARGS="--config.file=/etc/prometheus/prometheus.yml --web.listen-address=127.0.0.1:9090'
        ' --storage.tsdb.retention.time=15d"\n'
    )
    assert files["prometheus-redis-exporter"] == (
        "# Managed by celery-fleet (role monitoring).\n"
        'ARGS="-web.listen-address=127.0.0.1:9121 -redis.addr=rediss://10.0.0.1:6379'
        " -tls-ca-cert-file=/etc/prometheus/tls/ca.pem"
        " -tls-client-cert-file=/etc/prometheus/tls/client.pem"
        " -tls-client-key-file=/etc/prometheus/tls/client.key -check-single-keys=db0=celery"
        " -check-single-streams=db0=celery-fleet:dead-letters"
        ' -count-keys=db0=celery-fleet:beat:*"\n'
    )
    assert files["prometheus-alertmanager"] == (
        "# Managed by celery-fleet (role monitoring).\n"
        'ARGS="--config.file=/etc/prometheus/alertmanager.yml'
        ' --web.listen-address=127.0.0.1:9093 --cluster.listen-address="\n'
    )


def test_the_servers_node_exporter_default_file(tmp_path: Path) -> None:
    task, _ = _task(
        yaml.safe_load(NODE_EXPORTER.read_text()),
        "node_exporter | Write node exporter's arguments before the package starts it",
    )
    files = _render_items(task, {"fleet_address": "10.0.0.5"}, tmp_path)
    assert files["task"] == (
        "# Managed by Ansible (role monitoring, node_exporter tasks).\n"
        'ARGS="--collector.disable-defaults --collector.textfile'
        " --collector.textfile.directory=/var/lib/prometheus/node-exporter"
        " --web.listen-address=10.0.0.5:9100"
        ' --web.config.file=/etc/prometheus/node-exporter/web.yml"\n'
    )


def test_the_local_stacks_args_files(tmp_path: Path) -> None:
    play = yaml.safe_load(LOCAL.read_text())[0]
    task, block = _task(play["tasks"], "Render the daemons' arguments")
    variables = {
        **render.role_defaults("redis"),
        **play["vars"],
        "cf_monitoring_defaults": render.role_defaults("monitoring"),
        "cf_celery_defaults": render.role_defaults("celery"),
        **block["vars"],
    }
    files = _render_items(task, variables, tmp_path)
    # No --web.listen-address: compose/bin/monitoring-start sets the container's, which
    # Docker publishes. The others listen on the role's loopback addresses, in Prometheus'
    # network namespace.
    assert files["prometheus"] == "--storage.tsdb.retention.time=15d\n"
    assert files["alertmanager"] == (
        "--web.listen-address=127.0.0.1:9093\n--cluster.listen-address=\n"
    )
    assert files["node-exporter"] == (
        "--collector.disable-defaults\n"
        "--collector.textfile\n"
        "--collector.textfile.directory=/var/lib/prometheus/node-exporter\n"
        "--web.listen-address=127.0.0.1:9100\n"
        "--web.config.file=/etc/celery-fleet/monitoring/web.yml\n"
    )
    assert files["redis-exporter"] == (
        "-web.listen-address=127.0.0.1:9121\n"
        "-redis.addr=rediss://10.213.57.11:6379\n"
        "-tls-ca-cert-file=/etc/celery-fleet/monitoring/ca.pem\n"
        "-tls-client-cert-file=/etc/celery-fleet/monitoring/client.pem\n"
        "-tls-client-key-file=/etc/celery-fleet/monitoring/client.key\n"
        "-check-single-keys=db0=celery\n"
        "-check-single-streams=db0=celery-fleet:dead-letters\n"
        "-count-keys=db0=celery-fleet:beat:*\n"
    )


@pytest.mark.parametrize(
    "flag",
    [
        "-redis.addr",
        "-tls-ca-cert-file",
        "-tls-client-cert-file",
        "-tls-client-key-file",
        "-check-single-keys",
        "-check-single-streams",
        "-count-keys",
        "--storage.tsdb.retention.time",
        "--cluster.listen-address",
        "--collector.textfile",
    ],
)
def test_the_arguments_are_written_once(flag: str) -> None:
    """Only the filter spells them; a second copy in a task, template or script would drift.
    (Hidden paths are generated: compose/.bundle holds the rendered .args files.)"""
    places = [
        p
        for top in ("roles", "playbooks", "templates", "systemd", "compose")
        for p in (REPO / top).rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(REPO).parts)
        and flag in p.read_text(errors="replace")
    ]
    assert places == [], f"{flag}: spell it in {FILTERS.relative_to(REPO)} only"
    assert flag in FILTERS.read_text()


def test_the_local_stack_passes_every_input_the_monitoring_templates_read() -> None:
    """playbooks/local.yml renders role monitoring's templates with the role's defaults, input
    by input: one the templates read but the play does not pass stopped `make up` (found by
    the compose e2e when a rule gained an input)."""
    play = yaml.safe_load(LOCAL.read_text())[0]
    _, block = _task(
        play["tasks"],
        "Render prometheus.yml, the alert rules and alertmanager.yml (the role's templates)",
    )
    templates = (REPO / "templates" / "monitoring").glob("*.j2")
    read = {name for t in templates for name in re.findall(r"\bmonitoring_\w+", t.read_text())}
    assert read - set(block["vars"]) == set()
