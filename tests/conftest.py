"""Fixtures shared by every suite that needs real parts: a throwaway PKI and a fleet of
real Redis processes. Nothing here is a mock; see tests/harness/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_fleet.settings import load
from harness.pki import Pki
from harness.redis_procs import RedisFleet
from harness.worker import MakeClient, StartWorker, Worker

INTEGRATION = Path(__file__).resolve().parent / "integration"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """CA, server/client/expired certificates and an unrelated CA; made once per worker
    process at test time, keys 0600, deleted with pytest's temporary folders."""
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def redis_fleet(tmp_path: Path, pki: Pki) -> Iterator[RedisFleet]:
    """An empty fleet: the test starts the servers and Sentinels it needs; all of them are
    killed afterwards. Their log tails are printed at teardown (shown when a test fails)."""
    for binary in ("redis-server", "redis-sentinel"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is not installed; run `bash .ci/bootstrap.sh`")
    fleet = RedisFleet(tmp_path / "fleet", pki)
    try:
        yield fleet
    finally:
        fleet.close()
        print(fleet.logs())


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """``start_worker(env, **options)``: a ready ``celery -A fleet_app worker`` (another app
    with ``app=`` and ``pythonpath=``); every
    worker is stopped (warm) at teardown and its log printed (shown when a test fails)."""
    workers: list[Worker] = []

    def start(
        env: Mapping[str, str],
        *,
        wait: bool = True,
        app: str = "fleet_app",
        pythonpath: Sequence[Path] = (INTEGRATION,),
        **options: Any,
    ) -> Worker:
        worker = Worker(
            app=app,
            env=dict(env),
            folder=tmp_path / "workers",
            pythonpath=list(pythonpath),
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
