"""A crashed primary must not come back before the Sentinels promote a replica: the redis
role's systemd drop-in sets RestartSec= above Sentinel's down-after (Debian's unit restarts
after 100 ms), rendered from the shipped template with the role's defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import render

REPO = Path(__file__).resolve().parents[2]
DROP_IN = REPO / "systemd" / "redis-server.override.conf.j2"
BASE = {"redis_pid_file": "/run/redis/redis-server.pid", "redis_conf_dir": "/etc/redis"}


def _restart_sec(**variables: Any) -> str:
    text = render.render_file(DROP_IN, role="redis", variables={**BASE, **variables})
    lines = [ln for ln in text.splitlines() if ln.startswith("RestartSec=")]
    assert len(lines) == 1, text
    return lines[0].removeprefix("RestartSec=")


@pytest.mark.parametrize(("down_after_ms", "expected"), [(5000, "15"), (2000, "9"), (1000, "7")])
def test_with_sentinels_the_restart_waits_past_a_failover(
    down_after_ms: int, expected: str
) -> None:
    groups = {"sentinel": ["n1", "n2", "n3"]}
    assert (
        _restart_sec(groups=groups, redis_sentinel_down_after_milliseconds=down_after_ms)
        == expected
    )


def test_without_sentinels_the_restart_is_quick() -> None:
    assert _restart_sec(groups={"sentinel": []}) == "1"
    assert _restart_sec(groups={}) == "1"


def test_an_operator_value_wins() -> None:
    assert _restart_sec(groups={"sentinel": ["n1"]}, redis_restart_sec=30) == "30"
