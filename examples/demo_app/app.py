"""The Celery app: every setting comes from the environment (docs/settings.md).

Run it with ``celery -A demo_app.app:app worker``. Your own app needs the same one line,
``app.config_from_object("celery_fleet.celeryconfig")``, to run on this stack.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("demo_app", include=["demo_app.tasks"])
app.config_from_object("celery_fleet.celeryconfig")

# One periodic task so that beat has something to do; seconds from the environment.
app.conf.beat_schedule = {
    "heartbeat": {
        "task": "demo_app.tasks.heartbeat",
        "schedule": float(os.environ.get("DEMO_HEARTBEAT_SECONDS", "15")),
    },
}
