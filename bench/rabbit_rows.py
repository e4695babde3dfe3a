"""The throughput part's RabbitMQ rows: a real RabbitMQ node as the broker, over amqps://.

The broker is ``tests/harness/rabbitmq.py``'s node (Debian's ``rabbitmq-server`` on
loopback, TLS listener only, its own vhost and user); celery_fleet's defaults for an AMQP
broker (``celery_fleet.amqp``: quorum queues with a delivery limit and a dead-letter
exchange, publisher confirms, certificate verified against the test CA). The results go to
a TLS Redis of their own (``rediss://``, db 1, verified with the same CA): the result
backend of the ``celery-fleet, rediss:// verified`` row, so the two rows differ by the broker
only. Redis commands per task do not apply (the broker is not Redis); the broker's CPU is
the Erlang VM's (``beam.smp``, its pid from the node's pid file).
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness import envs
from harness.pki import Pki
from harness.rabbitmq import APP_USER, HOST, SBIN, VHOST, RabbitNode
from harness.redis_procs import Node, RedisFleet

Env = dict[str, str]
PATH = "amqps"  # the rows' path in throughput.py's row table
# The row with every default, and one with publisher confirms off, to price them (Kombu's
# ``confirm_publish``: each publish waits for the broker's confirm).
CONFIRMS = "celery-fleet, RabbitMQ amqps:// (quorum queue, confirms), results on rediss://"
NO_CONFIRMS = "celery-fleet, RabbitMQ amqps:// (quorum queue, confirms off), results on rediss://"
ROWS: dict[str, Env] = {
    CONFIRMS: {},
    NO_CONFIRMS: {"CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps({"confirm_publish": False})},
}
# The Redis row the RabbitMQ rows are compared with: same result backend, Redis as broker.
REDIS_TWIN = "celery-fleet, rediss:// verified"


def installed() -> bool:
    return (SBIN / "rabbitmq-server").exists() or shutil.which("rabbitmq-server") is not None


@dataclass
class Broker:
    """A running RabbitMQ node, the TLS Redis of the results and the CELERY_* env."""

    node: RabbitNode
    results: Node
    env: Env

    def cpu_pid(self) -> int:
        """The Erlang VM's pid (``rabbitmq-server`` is a shell script that starts it)."""
        pid = int((self.node.folder / "rabbit.pid").read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        if comm != "beam.smp":
            raise RuntimeError(f"pid {pid} from rabbit.pid is {comm!r}, not beam.smp")
        return pid

    def close(self) -> None:
        self.node.close()


def start(fleet: RedisFleet, folder: Path, pki: Pki, extra: Env) -> Broker:
    """Start the node (same CA as ``fleet``) and the results' TLS Redis."""
    results = fleet.server("results")  # TLS, as in the rediss:// row
    node = RabbitNode.start(folder, pki)
    try:
        secret = quote(node.password, safe="")
        env = {
            "CELERY_BROKER_URL": f"amqps://{APP_USER}:{secret}@{HOST}:{node.port}/{VHOST}",
            "CELERY_RESULT_BACKEND": envs.url(fleet, results, 1),
            # One CA for both: the result backend inherits the broker's TLS settings.
            "CELERY_BROKER_SSL_CA_CERTS": str(pki.ca),
            **extra,
        }
        broker = Broker(node, results, env)
        broker.cpu_pid()  # fails early if the pid file does not name the VM
        return broker
    except BaseException:
        node.close()
        raise


def against_redis(rows: dict[str, dict[str, Any]]) -> None:
    """Add to each RabbitMQ row its rate relative to the rediss:// row, round by round
    (both ratios to the same reference, measured in the same round), and the median."""
    twin = rows.get(REDIS_TWIN)
    if twin is None:
        return
    for name in ROWS:
        if name not in rows:
            continue
        fig = rows[name]
        per_round = [
            mine / theirs
            for mine, theirs in zip(
                fig["ratio_to_fleet_plain_per_round"],
                twin["ratio_to_fleet_plain_per_round"],
                strict=True,
            )
        ]
        fig["ratio_to_rediss_row"] = round(statistics.median(per_round), 3)
        fig["ratio_to_rediss_row_per_round"] = [round(x, 3) for x in per_round]


def note() -> str:
    """What the results say about the RabbitMQ rows."""
    if not installed():
        return f"left out: rabbitmq-server is not installed ({SBIN})"
    return (
        "RabbitMQ rows: a real rabbitmq-server node on loopback (tests/harness/rabbitmq.py), "
        "TLS listener only, celery_fleet's AMQP defaults (quorum queue, delivery limit, "
        "publisher confirms, certificate verified); results on a TLS Redis of their own "
        f"(rediss://, db 1), as in the row {REDIS_TWIN!r}. Redis commands/task: n/a (the "
        "broker is not Redis); CPU: the broker's Erlang VM (beam.smp) and the results Redis "
        f"apart. ratio_to_rediss_row: rate over {REDIS_TWIN!r}'s, per round"
    )
