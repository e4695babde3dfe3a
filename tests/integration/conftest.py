"""Integration fixtures: real Celery workers (subprocesses) and an in-process Celery client,
both configured only through ``celery_fleet.settings`` from a CELERY_* environment."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_fleet.settings import load
from harness.worker import MakeClient, StartWorker, Worker

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """``start_worker(env, **options)``: a ready ``celery -A fleet_app worker``; every
    worker is stopped (warm) at teardown and its log printed (shown when a test fails)."""
    workers: list[Worker] = []

    def start(env: Mapping[str, str], *, wait: bool = True, **options: Any) -> Worker:
        worker = Worker(
            app="fleet_app",
            env=dict(env),
            folder=tmp_path / "workers",
            pythonpath=[HERE],
            **options,
        )
        workers.append(worker)
        if wait:
            worker.start()
        else:
            worker.launch()
        return worker

    yield start
    for worker in workers:
        try:
            worker.stop(timeout=20)
        except Exception:
            worker.kill()
        print(f"--- worker {worker.name}\n{worker.log_tail(60)}")


@pytest.fixture
def celery_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeClient]:
    """``celery_client(env)``: a Celery app in the test process with ``load(env)`` as its
    whole configuration, as a web process of the user's would have."""
    apps: list[Celery] = []
    # Celery reads these from os.environ over its configuration: none may leak in from
    # the shell that runs the tests.
    for name in (
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "CELERY_BROKER_READ_URL",
        "CELERY_BROKER_WRITE_URL",
    ):
        monkeypatch.delenv(name, raising=False)

    def make(env: Mapping[str, str]) -> Celery:
        app = Celery("fleet_client", set_as_current=False)
        app.conf.update(load(env))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the failover tests measured (lost, duplicates, stalls), also under xdist."""
    lines = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for key, value in getattr(report, "user_properties", []):
                lines.append(f"{report.nodeid.split('::')[-1]}: {key} = {value}")
    if lines:
        terminalreporter.section("celery-fleet measurements")
        for line in sorted(lines):
            terminalreporter.write_line(line)
