"""The throughput baseline's Celery app: Celery's own defaults, no celery_fleet at all.

Celery reads ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` from the environment
itself; ``BENCH_CELERY_CONF`` (JSON) adds what a plain Celery user sets for verified TLS
(``broker_use_ssl``, ``redis_backend_use_ssl``) and nothing else.
"""

from __future__ import annotations

import json
import os

from celery import Celery

app = Celery("bench_celery_defaults")
app.conf.update(json.loads(os.environ.get("BENCH_CELERY_CONF", "{}")))


@app.task(name="bench.noop")
def noop() -> None:
    return None
