"""Celery settings from the process environment.

    app.config_from_object("celery_fleet.celeryconfig")

Importing this module reads ``os.environ`` once (see docs/settings.md) and fails with a
``SettingsError`` naming the variable when the environment is wrong. It also warns, at
publish time, about ETAs beyond the visibility timeout (see ``guards``).
"""

from __future__ import annotations

from typing import Any

from celery_fleet import guards
from celery_fleet.settings import load

_settings: dict[str, Any] = load()
globals().update(_settings)
guards.install(_settings)
