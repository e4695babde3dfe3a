"""The Celery worker that role celery deployed with fleet_broker: rabbitmq: its env file names
the three nodes over amqps:// and keeps the results on Redis, and tasks sent through the
node's own env file run on it and their results come back. Runs after test_failover.py
(file order), so the worker has also lived through the SIGKILL of a RabbitMQ node."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import fleet
import rabbit

NODE = fleet.hosts_in("celery_workers")[0]
ENV_FILE = "/etc/celery-fleet/celery.env"
WITH_ENV = f"/opt/celery-fleet/bin/celery-with-env {ENV_FILE} --"
# Python run on the node with the app importable and the deployment's settings.
CLIENT = """
import json
from celery import group
from demo_app.app import app
from demo_app.tasks import add, where
"""


def client(code: str, timeout: float = 180) -> Any:
    """Run CLIENT + code on the worker node; the code prints one JSON line last."""
    result = subprocess.run(
        ["docker", "exec", "-i", NODE, "bash", "-c", f"{WITH_ENV} python3 -"],
        input=CLIENT + code,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{NODE}: client failed\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def env_file() -> dict[str, str]:
    text = fleet.docker("exec", NODE, "cat", ENV_FILE)
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: value.strip('"') for name, value in pairs}


def test_the_env_file_names_every_node_over_amqps_and_results_on_redis() -> None:
    env = env_file()
    password = rabbit.var("rabbitmq_app_password")
    assert env["CELERY_BROKER_URL"].split(";") == [
        f"amqps://{rabbit.APP_USER}:{password}@{fleet.address(n)}:5671/{rabbit.VHOST}"
        for n in rabbit.NODES
    ]
    redis = fleet.address(fleet.hosts_in("redis")[0])
    assert env["CELERY_RESULT_BACKEND"].startswith("rediss://celery:")
    assert env["CELERY_RESULT_BACKEND"].endswith(f"@{redis}:6379/1")
    assert env["CELERY_FLEET_RELIABLE_FETCH"] == "false"
    assert env["CELERY_BROKER_SSL_CA_CERTS"] == "/etc/celery-fleet/tls/ca.pem"


def test_tasks_sent_through_rabbitmq_run_and_their_results_come_back() -> None:
    started = time.monotonic()
    result = client(
        """
sums = group(add.s(i, i) for i in range(20)).apply_async().get(timeout=120)
hosts = group(where.s() for _ in range(4)).apply_async().get(timeout=120)
print(json.dumps({"sums": sums, "hosts": hosts}))
""",
    )
    print(f"24 tasks and their results: {time.monotonic() - started:.1f} s")
    assert result["sums"] == [2 * i for i in range(20)]
    assert set(result["hosts"]) == {NODE}
    # The worker's queue is a quorum queue of the cluster, with a member on every node.
    queues = rabbit.ctl_json(
        rabbit.NODES[1], "list_queues", "--vhost", rabbit.VHOST, "name", "type", "consumers"
    )
    default = next(q for q in queues if q["name"] == "default")
    assert default["type"] == "quorum", queues
    assert default["consumers"] >= 1, queues
    members = {m["Node Name"] for m in rabbit.quorum_status(rabbit.NODES[0], "default")}
    assert members == {f"rabbit@{n}" for n in rabbit.NODES}
