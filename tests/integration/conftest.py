"""Integration suite: marker, the measurements summary and the RabbitMQ node (one per
module). The worker and client fixtures live in tests/conftest.py (the fault suite uses them
too)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.pki import Pki
from harness.rabbitmq import RabbitNode

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RabbitNode]:
    """One RabbitMQ node per test module (tests/harness/rabbitmq.py)."""
    if shutil.which("rabbitmqctl") is None and not Path("/usr/lib/rabbitmq/bin").exists():
        pytest.fail("rabbitmq-server is not installed; run `bash .ci/bootstrap.sh`")
    node = RabbitNode.start(tmp_path_factory.mktemp("rabbit"), pki)
    try:
        yield node
    finally:
        node.close()
        print(f"rabbitmq started in {node.started_in:.1f} s\n{node.log_tail()}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


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
