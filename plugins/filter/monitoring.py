"""The command lines of role monitoring's daemons, written once.

``celery_fleet.fleet.redis_exporter_argv(targets, tls_dir=, queues=, broker_db=,
deadletter_key=, beat_key_pattern=, listen="")``: the Redis exporter's arguments (its TLS
files, the queues, the dead-letter stream and beat's keys it reads).
``celery_fleet.fleet.prometheus_argv(retention_days, config_file="", listen="")``:
Prometheus' arguments.
``celery_fleet.fleet.alertmanager_argv(config_file="", listen="")``: Alertmanager's (one
instance, no cluster gossip port).
``celery_fleet.fleet.node_exporter_argv(textfile_dir, web_config=, listen="", filesystem="")``:
node exporter's (the textfile collector, HTTPS by its web config; with ``filesystem``, a
mount point, the filesystem collector too, for that mount alone: a Redis host's data dir).

Role monitoring joins them into the ``ARGS`` of the Debian packages' ``/etc/default`` files
(roles/monitoring/tasks/install.yml, node_exporter.yml); the local stack writes them one per
line into ``config/monitoring/*.args`` (playbooks/local.yml), which
compose/bin/monitoring-start passes after the container's own config and storage paths. So
the stack's exporters read the same keys, streams and TLS files, and listen on the same
loopback addresses, as the servers' do.

``listen`` and ``config_file`` are optional: "" leaves the argument out (the container sets
it itself).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def redis_exporter_argv(
    targets: Sequence[str],
    *,
    tls_dir: str,
    queues: Sequence[str],
    broker_db: Any,
    deadletter_key: str,
    beat_key_pattern: str,
    listen: str = "",
) -> list[str]:
    """``targets``: the data nodes ("address:port"); the first is the exporter's own
    ``-redis.addr``, every node is scraped through ``/scrape?target=`` (prometheus.yml)."""
    if not targets:
        raise ValueError("redis_exporter_argv: no Redis target (monitoring_redis_targets is empty)")
    db = f"db{broker_db}"
    argv = [f"-web.listen-address={listen}"] if listen else []
    argv += [
        f"-redis.addr=rediss://{targets[0]}",
        f"-tls-ca-cert-file={tls_dir}/ca.pem",
        f"-tls-client-cert-file={tls_dir}/client.pem",
        f"-tls-client-key-file={tls_dir}/client.key",
        "-check-single-keys=" + ",".join(f"{db}={queue}" for queue in queues),
        f"-check-single-streams={db}={deadletter_key}",
        f"-count-keys={db}={beat_key_pattern}",
    ]
    return argv


def prometheus_argv(retention_days: Any, config_file: str = "", listen: str = "") -> list[str]:
    argv = [f"--config.file={config_file}"] if config_file else []
    if listen:
        argv.append(f"--web.listen-address={listen}")
    argv.append(f"--storage.tsdb.retention.time={retention_days}d")
    return argv


def alertmanager_argv(config_file: str = "", listen: str = "") -> list[str]:
    argv = [f"--config.file={config_file}"] if config_file else []
    if listen:
        argv.append(f"--web.listen-address={listen}")
    # One Alertmanager: no gossip port (its default listens on every address, 9094).
    argv.append("--cluster.listen-address=")
    return argv


def node_exporter_argv(
    textfile_dir: str, *, web_config: str, listen: str = "", filesystem: str = ""
) -> list[str]:
    """The textfile collector (the doctor's metrics file), HTTPS by ``web_config``; with
    ``filesystem`` (a mount point), the filesystem collector for that mount alone."""
    argv = [
        "--collector.disable-defaults",
        "--collector.textfile",
        f"--collector.textfile.directory={textfile_dir}",
    ]
    if filesystem:
        # node exporter 1.5 (Debian bookworm) has exclude patterns only, and Debian's
        # defaults leave out /run, /mnt, /media and overlay (a container's root): every
        # mount point but this one is excluded, and no filesystem type.
        argv += [
            "--collector.filesystem",
            f"--collector.filesystem.mount-points-exclude={everything_but(filesystem)}",
            "--collector.filesystem.fs-types-exclude=^$",
        ]
    if listen:
        argv.append(f"--web.listen-address={listen}")
    argv.append(f"--web.config.file={web_config}")
    return argv


def everything_but(path: str) -> str:
    """A pattern that matches every string except ``path``, without lookahead (Go's regexp,
    RE2, has none): "", or a first character that differs, or the same one followed by the
    rest's own pattern; past the end, any character at all."""
    if not re.fullmatch(r"/[A-Za-z0-9_./-]*", path):
        raise ValueError(f"{path!r}: an absolute path of letters, digits and _ . / - only")
    # No backslash: systemd's $ARGS splitting would take it as an escape. "." alone as "[.]";
    # "-" right after "[^" is literal.
    pattern = ".+"
    for char in reversed(path):
        literal = "[.]" if char == "." else char
        pattern = f"(?:|[^{char}].*|{literal}{pattern})"
    return f"^{pattern}$"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "redis_exporter_argv": redis_exporter_argv,
            "prometheus_argv": prometheus_argv,
            "alertmanager_argv": alertmanager_argv,
            "node_exporter_argv": node_exporter_argv,
        }
