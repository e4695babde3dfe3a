"""The publish retry budget per round of the broker's failover list.

Kombu retries a publish over a failover list (``sentinel://a;sentinel://b;sentinel://c``,
or ``amqps://a;amqps://b``) host by host and sleeps only once a whole round has failed
(``kombu.Connection.completes_cycle`` in ``_ensure_connection``): ``max_retries`` counts
hosts, not rounds. With three Sentinels, 20 retries were about seven rounds, ~5 s of
waiting, shorter than a Sentinel failover (down-after 5 s + the election), and a producer
failed with ``No master found`` mid-failover. ``max_retries`` of
``task_publish_retry_policy`` is therefore per round: multiplied by the number of hosts, so
the time a publish waits (~20 s) does not shrink as the list grows.
"""

from __future__ import annotations

from typing import Any


def hosts_in(url: str) -> int:
    """The number of URLs in a Kombu failover list (``;``-separated)."""
    return max(1, sum(1 for part in url.split(";") if part.strip()))


def per_round(settings: dict[str, Any]) -> None:
    """Scale ``task_publish_retry_policy['max_retries']`` by the hosts of ``broker_url``."""
    policy = dict(settings["task_publish_retry_policy"])
    if policy.get("max_retries") is not None:
        policy["max_retries"] = int(policy["max_retries"]) * hosts_in(settings["broker_url"])
    settings["task_publish_retry_policy"] = policy
