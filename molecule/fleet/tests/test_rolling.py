"""A rolling restart of the workers under a steady producer (docs/operations.md, "Restart
the workers"): a worker setting changes, the celery role's handler restarts one host's
workers at a time (throttle 1; celery-rolling-restart waits for a ping before the next
host), and every task published before, during and after runs, no two hosts are down at
once, no worker logs an authentication or TLS error, and the doctor is healthy afterwards.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import fleet
import pytest
from test_fleet import ENV_FILE, NODES, REPO, WITH_ENV, WORKER_UNIT, _doctor, sh, wait_workers

STOP_FILE = "/tmp/rolling-producer.stop"
# The worker setting the test changes.
VARIABLE = "CELERY_WORKER_PREFETCH_MULTIPLIER"
# Publishes a task every 0.1 s until STOP_FILE exists, then waits for every result.
PRODUCER = f"""
import json, os, time
from celery.result import AsyncResult
from demo_app.app import app
from demo_app.tasks import sleep_then
sent = []
while not os.path.exists("{STOP_FILE}"):
    sent.append(sleep_then.apply_async((0.05, len(sent))).id)
    time.sleep(0.1)
deadline = time.monotonic() + 240
lost = []
for number, task_id in enumerate(sent):
    try:
        value = AsyncResult(task_id, app=app).get(timeout=max(1, deadline - time.monotonic()))
        if value != number:
            lost.append([number, task_id, "returned " + repr(value)])
    except Exception as exc:
        lost.append([number, task_id, repr(exc)])
print(json.dumps({{"sent": len(sent), "lost": lost}}))
"""
# A client that could not log in or verify a certificate would say one of these.
AUTH_OR_TLS_ERROR = re.compile(
    r"WRONGPASS|NOAUTH|NOPERM|AuthenticationError|certificate verify failed|SSLError"
)


def start_producer() -> subprocess.Popen[str]:
    """PRODUCER on node1 with the app's env file, publishing until stop_producer()."""
    sh(NODES[0], f"rm -f {STOP_FILE}; cat > /tmp/rolling-producer.py <<'EOF'\n{PRODUCER}\nEOF")
    return subprocess.Popen(
        ["docker", "exec", NODES[0], "bash", "-c", f"{WITH_ENV} python3 /tmp/rolling-producer.py"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_producer(producer: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop publishing, wait for every result: {"sent": N, "lost": [[number, id, why], ...]}."""
    sh(NODES[0], f"touch {STOP_FILE}")
    out, err = producer.communicate(timeout=300)
    assert producer.returncode == 0, out[-2000:] + err[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def down_intervals(node: str, since: int) -> list[tuple[float, float]]:
    """(stop begins, worker ready again) for each restart of the node's worker since
    ``since``, from the journal (systemd's "Stopping" line, Celery's "ready." line)."""
    journal = sh(
        node, f"journalctl -u {WORKER_UNIT} --since @{since} -o short-unix --no-pager"
    ).stdout
    intervals, stopping = [], None
    for line in journal.splitlines():
        stamp = line.split(" ", 1)[0]
        if "Stopping " in line and stopping is None:
            stopping = float(stamp)
        elif stopping is not None and re.search(r"default@\S+ ready\.", line):
            intervals.append((stopping, float(stamp)))
            stopping = None
    assert stopping is None, f"{node}: the worker stopped at {stopping} and never got ready"
    return intervals


# One layer's converge (pytest's 300 s is below fleet.CONVERGE_TIMEOUT) plus draining.
@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT + 300)
def test_a_setting_change_rolls_the_workers_one_host_at_a_time_and_loses_no_task(
    tmp_path: Path,
) -> None:
    wait_workers()
    since = int(sh(NODES[0], "date +%s").stdout) - 1
    # A value the workers do not have yet (the test may run again on kept containers).
    current = sh(NODES[0], f"grep -h '^{VARIABLE}=' {ENV_FILE} || true").stdout
    value = int(re.sub(r"\D", "", current) or 1) + 1
    producer = start_producer()
    try:
        time.sleep(5)  # tasks published before the change
        settings = dict(fleet.group_vars()["celery_settings"])
        settings[VARIABLE] = value
        extra = tmp_path / "change.json"
        extra.write_text(json.dumps({"celery_settings": settings}))
        converge = fleet.converge(["-e", f"@{extra}"], playbook=REPO / "playbooks/celery.yml")
        assert converge.returncode == 0, converge.stdout[-4000:] + converge.stderr[-2000:]
        assert "Restart the workers one host at a time" in converge.stdout
        time.sleep(5)  # tasks published after the last host is back
    finally:
        result = stop_producer(producer)
    print(f"rolling restart: {result['sent']} tasks published, {len(result['lost'])} lost")
    assert result["sent"] > 100, result
    assert result["lost"] == [], result["lost"][:20]

    intervals = {node: down_intervals(node, since) for node in NODES}
    print("down (s):", {n: [round(b - a, 1) for a, b in v] for n, v in intervals.items()})
    assert all(len(v) == 1 for v in intervals.values()), intervals
    spans = sorted(v[0] for v in intervals.values())
    for (_, ready), (next_stop, _) in itertools.pairwise(spans):
        assert ready <= next_stop, f"two hosts were down at once: {spans}"
    for node in NODES:
        env = sh(node, f"grep '^{VARIABLE}=' {ENV_FILE}").stdout
        assert env.strip() == f'{VARIABLE}="{value}"', f"{node}: the change is not in celery.env"
        journal = sh(node, f"journalctl -u {WORKER_UNIT} --since @{since} --no-pager").stdout
        assert not AUTH_OR_TLS_ERROR.search(journal), AUTH_OR_TLS_ERROR.findall(journal)
    wait_workers()
    doctor = _doctor()
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
