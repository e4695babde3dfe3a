"""Celery settings from the process environment.

    app.config_from_object("celery_fleet.celeryconfig")

Importing this module reads ``os.environ`` once (see docs/settings.md) and fails with a
``SettingsError`` naming the variable when the environment is wrong. It then calls
``celery_fleet.install(settings=...)`` with the typed settings: that one call is all this
module does besides the settings. It writes the normalised URLs back to ``os.environ``
and installs an ETA guard at publish time (``guards``), beat's liveness key (``beat``), the
guards against a Kombu bug that kills workers during a failover (``patches``), the
dead-letter store for tasks that failed for good (``deadletter``), JSON log lines from
workers and beat unless CELERY_FLEET_LOG_FORMAT=text (``logs``) and, with
CELERY_FLEET_RELIABLE_FETCH=true, the reliable-fetch transport kept across failovers
(``transport.install``). Only Celery settings are public names here: Celery reads every
public attribute of this module as configuration.
"""

from celery_fleet import install as _install
from celery_fleet.settings import build as _build

_fleet = _build()
globals().update(_fleet.celery())
# Celery reads CELERY_BROKER_URL / CELERY_RESULT_BACKEND from os.environ itself, and that
# wins over this module: install() hands it the normalised URLs (ssl_* moved into the SSL
# dicts, socket:// spelled redis+socket://), or it would use the raw ones; then the hooks.
_install(settings=_fleet)
