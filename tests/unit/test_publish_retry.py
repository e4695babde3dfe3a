"""A publish that meets a failover waits as long with a failover list of three Sentinels as
with one broker URL: Kombu sleeps only after a whole round of the list failed, so
celery_fleet.settings counts ``max_retries`` per round (settings/retry.py). Proven on
Kombu's own retry loop (``Connection.ensure``) against closed ports, its sleeps recorded."""

from __future__ import annotations

from typing import Any

import kombu
import kombu.utils.functional
import pytest

from celery_fleet.settings import load
from celery_fleet.settings.defaults import PRODUCTION_DEFAULTS
from celery_fleet.settings.retry import per_round

CLOSED = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
# Sentinel down-after (role redis_sentinel: 5 s) + an election: what a publish must outwait.
FAILOVER_SECONDS = 10


class _Revivable:
    def revive(self, channel: Any) -> None:  # Connection.ensure revives its object
        pass


def waited(url: str, monkeypatch: pytest.MonkeyPatch) -> float:
    """Seconds Kombu's retry loop sleeps before a publish to ``url`` gives up, with the
    policy celery_fleet.settings gives that URL."""
    slept: list[float] = []
    monkeypatch.setattr(kombu.utils.functional, "sleep", slept.append)
    settings = {"broker_url": url, **PRODUCTION_DEFAULTS}
    per_round(settings)

    def publish() -> None:
        raise ConnectionRefusedError("the primary is gone")

    with kombu.Connection(url, connect_timeout=0.5) as conn:
        ensured = conn.ensure(_Revivable(), publish, **settings["task_publish_retry_policy"])
        with pytest.raises(kombu.exceptions.OperationalError):
            ensured()
    return sum(slept)


def test_one_url_and_a_list_of_three_wait_as_long(monkeypatch: pytest.MonkeyPatch) -> None:
    one = waited(CLOSED, monkeypatch)
    three = waited(";".join([CLOSED] * 3), monkeypatch)
    assert one > 2 * FAILOVER_SECONDS * 0.8, one
    assert three >= one, (one, three)


def test_without_the_scaling_three_urls_wait_less_than_a_failover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trap itself (so the test above can fail): Celery's policy as written, 20 retries,
    over three URLs sleeps about a third as long."""
    slept: list[float] = []
    monkeypatch.setattr(kombu.utils.functional, "sleep", slept.append)

    def publish() -> None:
        raise ConnectionRefusedError("the primary is gone")

    with kombu.Connection(";".join([CLOSED] * 3), connect_timeout=0.5) as conn:
        policy = PRODUCTION_DEFAULTS["task_publish_retry_policy"]
        with pytest.raises(kombu.exceptions.OperationalError):
            conn.ensure(_Revivable(), publish, **policy)()
    assert sum(slept) < FAILOVER_SECONDS, sum(slept)


def test_the_loaded_settings_count_retries_per_round() -> None:
    urls = ";".join(f"sentinel://10.0.0.{i}:26379/0" for i in (1, 2, 3))
    s = load(
        {
            "CELERY_BROKER_URL": urls,
            "CELERY_SENTINEL_MASTER_NAME": "fleet",
            "CELERY_BROKER_SSL": "false",
        }
    )
    base = PRODUCTION_DEFAULTS["task_publish_retry_policy"]["max_retries"]
    assert s["task_publish_retry_policy"]["max_retries"] == 3 * base
    single = load({"CELERY_BROKER_URL": "redis://10.0.0.1:6379/0"})
    assert single["task_publish_retry_policy"]["max_retries"] == base
