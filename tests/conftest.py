"""Fixtures shared by every suite that needs real parts: a throwaway PKI and a fleet of
real Redis processes. Nothing here is a mock; see tests/harness/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.pki import Pki
from harness.redis_procs import RedisFleet


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
