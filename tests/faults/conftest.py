"""Fault suite: real processes only (fixtures in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the fault tests measured (kills, lost, duplicates), also under xdist."""
    lines = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call" or "faults/" not in report.nodeid:
                continue
            for key, value in getattr(report, "user_properties", []):
                lines.append(f"{report.nodeid.split('::')[-1]}: {key} = {value}")
    if lines:
        terminalreporter.section("celery-fleet fault measurements")
        for line in sorted(lines):
            terminalreporter.write_line(line)
