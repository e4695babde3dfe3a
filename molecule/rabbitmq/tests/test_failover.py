"""SIGKILL of the node that leads a quorum queue, under a steady publisher with confirms and
a consumer: no confirmed message may be lost, the killed node comes back (systemd restarts
it) and rejoins, and a converge afterwards changes nothing. Runs after test_cluster.py
(pytest takes the files in name order).

The publisher and the consumer are connected to the two other nodes: the test measures the
queue's failover (Raft leader election), not a client's reconnect to another node."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time

import fleet
import pytest
import rabbit
from kombu import Connection, Consumer, Exchange, Producer, Queue

NODES = rabbit.NODES
QUEUE_NAME = "celery_fleet.molecule.failover"
QUEUE = Queue(
    QUEUE_NAME,
    Exchange(""),
    routing_key=QUEUE_NAME,
    durable=True,
    queue_arguments={"x-queue-type": "quorum"},
)
RUN_BEFORE = 5.0  # seconds of steady traffic before the kill
RUN_AFTER = 20.0  # seconds of traffic after it
INTERVAL = 0.02


def kombu(node: str) -> Connection:
    return Connection(
        rabbit.url(node),
        ssl=rabbit.tls(node),
        connect_timeout=10,
        transport_options={"confirm_publish": True},
    )


class Publisher(threading.Thread):
    """Publishes 0, 1, 2, ... with publisher confirms; a publish that raised is retried with
    the same number (at least once). `confirmed` holds (number, time of the confirm)."""

    def __init__(self, node: str) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.stop = threading.Event()
        self.confirmed: list[tuple[int, float]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        number = 0
        conn = kombu(self.node)
        producer = Producer(conn.channel())
        while not self.stop.is_set():
            try:
                producer.publish(
                    {"n": number}, exchange="", routing_key=QUEUE_NAME, delivery_mode=2,
                    declare=[QUEUE], serializer="json",
                )  # fmt: skip
                self.confirmed.append((number, time.monotonic()))
                number += 1
            except Exception as exc:  # a broken channel: reconnect, publish it again
                self.errors.append(repr(exc))
                time.sleep(0.5)
                conn = kombu(self.node)
                producer = Producer(conn.channel())
            time.sleep(INTERVAL)
        conn.release()


class Receiver(threading.Thread):
    def __init__(self, node: str) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.stop = threading.Event()
        self.received: set[int] = set()
        self.deliveries = 0
        self.errors: list[str] = []

    def on_message(self, body: dict[str, int], message) -> None:
        self.received.add(body["n"])
        self.deliveries += 1
        message.ack()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with (
                    kombu(self.node) as conn,
                    Consumer(
                        conn.channel(), [QUEUE], callbacks=[self.on_message], prefetch_count=50
                    ),
                ):
                    while not self.stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            conn.drain_events(timeout=1)
            except Exception as exc:
                self.errors.append(repr(exc))
                time.sleep(0.5)


def longest_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_sigkill_of_the_quorum_leader_loses_no_confirmed_message() -> None:
    conn = rabbit.connection(NODES[0])
    conn.connect()
    conn.channel().queue_declare(
        QUEUE_NAME, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
    )
    conn.close()
    victim = rabbit.leader(NODES[0], QUEUE_NAME)
    others = [n for n in NODES if n != victim]
    publisher, receiver = Publisher(others[0]), Receiver(others[1])
    receiver.start()
    publisher.start()
    time.sleep(RUN_BEFORE)
    assert publisher.confirmed, f"nothing confirmed before the kill: {publisher.errors}"

    pid = fleet.docker(
        "exec", victim, "systemctl", "show", "--property", "MainPID", "--value", "rabbitmq-server"
    ).strip()
    killed_at = time.monotonic()
    fleet.docker("exec", victim, "kill", "-KILL", pid)
    time.sleep(RUN_AFTER)
    publisher.stop.set()
    publisher.join(60)

    confirmed = {n for n, _ in publisher.confirmed}
    fleet.wait_for(lambda: confirmed <= receiver.received, 120, "the consumer to get every message")
    receiver.stop.set()
    receiver.join(30)
    lost = confirmed - receiver.received
    after = [t for _, t in publisher.confirmed if t >= killed_at - 1]
    new_leader = rabbit.leader(others[0], QUEUE_NAME)
    print(
        f"killed {victim} (pid {pid}); new leader {new_leader}; confirmed {len(confirmed)}, "
        f"received {len(receiver.received)} ({receiver.deliveries} deliveries), lost {len(lost)}; "
        f"longest confirm gap around the kill {longest_gap(after):.2f} s; "
        f"publisher errors {publisher.errors}; consumer errors {receiver.errors}"
    )
    assert lost == set()
    assert new_leader != victim
    assert len([t for _, t in publisher.confirmed if t > killed_at]) > 0, (
        "no confirm after the kill"
    )

    # systemd restarts the killed node (Restart=on-failure) and it rejoins the cluster.
    fleet.wait_for(
        lambda: (
            set(rabbit.ctl_json(victim, "cluster_status")["running_nodes"])
            == {f"rabbit@{n}" for n in NODES}
        ),
        180,
        f"{victim} to rejoin",
    )
    members = fleet.wait_for(
        lambda: (
            {m["Node Name"] for m in rabbit.quorum_status(victim, QUEUE_NAME)}
            if len(rabbit.quorum_status(victim, QUEUE_NAME)) == 3
            else None
        ),
        60,
        "three quorum members",
    )
    assert members == {f"rabbit@{n}" for n in NODES}

    result = fleet.converge()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recap = fleet.recap(result.stdout)
    assert set(recap) == set(NODES)
    assert all(counts["changed"] == 0 for counts in recap.values()), recap
