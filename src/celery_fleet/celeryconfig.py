"""Celery settings from the process environment.

    app.config_from_object("celery_fleet.celeryconfig")

Importing this module reads ``os.environ`` once (see docs/settings.md) and fails with a
``SettingsError`` naming the variable when the environment is wrong. It also warns, at
publish time, about ETAs beyond the visibility timeout (see ``guards``), and makes beat
keep a liveness key in the broker (see ``beat``), makes workers and beat log JSON lines
unless CELERY_FLEET_LOG_FORMAT=text (see ``logs``), and guards workers against a Kombu bug
that kills them during a failover (see ``patches``). Only Celery settings are public names
here: Celery reads every public attribute of this module as configuration.
"""

import typing as _typing

from celery_fleet import beat as _beat
from celery_fleet import guards as _guards
from celery_fleet import logs as _logs
from celery_fleet import patches as _patches
from celery_fleet.settings import load as _load
from celery_fleet.settings import log_format as _log_format
from celery_fleet.settings import publish_urls as _publish_urls

_settings: dict[str, _typing.Any] = _load()
globals().update(_settings)
# Celery reads CELERY_BROKER_URL / CELERY_RESULT_BACKEND from os.environ itself, and that
# wins over this module: hand it the normalised URLs (ssl_* moved into the SSL dicts,
# socket:// spelled redis+socket://), or it would use the raw ones.
_publish_urls(_settings)
_guards.install(_settings)
_beat.install()
_logs.install(_log_format())
_patches.guard_restore_unacked()
