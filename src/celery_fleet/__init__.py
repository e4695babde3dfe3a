"""celery-fleet: Celery on Redis in production."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import Settings

__version__ = "0.1.0"


def install(app: Any = None, *, settings: Mapping[str, Any] | Settings | None = None) -> None:
    """Connect celery-fleet's hooks to Celery (idempotent).

    ``celery_fleet.celeryconfig`` calls it; an app configured otherwise (Django's
    ``django_settings()``, its own config) calls ``celery_fleet.install(app)`` once.
    Given the typed settings (``settings=celery_fleet.settings.build(os.environ)``) it
    first writes their normalised ``CELERY_BROKER_URL``/``CELERY_RESULT_BACKEND`` back into
    ``os.environ``, as ``celeryconfig`` does (``settings.publish_urls``: Celery reads those
    two variables before any configuration). Then:

    - the publish-time ETA guard (``guards``), with the app's visibility timeout;
    - beat's liveness key (``beat``);
    - the failover guards around Kombu (``patches``) and the Pub/Sub connection
      (``fanout``);
    - the dead-letter store (``deadletter``; off with CELERY_FLEET_DEAD_LETTERS=false);
    - JSON log lines from workers and beat (``logs``; Celery's text with
      CELERY_FLEET_LOG_FORMAT=text);
    - with CELERY_FLEET_RELIABLE_FETCH=true, the reliable-fetch transport kept across a
      failover's switch to the next broker URL (``transport.install``).

    With an AMQP broker (``amqps://``) only the logs, the dead-letter exchange's
    declaration (``amqp_topology``) and the per-node TLS host name of a failover list
    (``amqp_tls``) are installed: the others work on Redis keys or guard Kombu's Redis
    transport.
    """
    from . import beat, deadletter, fanout, guards, logs, patches
    from .amqp import is_amqp
    from .settings import Settings, log_format, publish_urls

    if isinstance(settings, Settings):
        publish_urls(settings.values)
        settings = settings.values
    elif settings is None:
        settings = app.conf if app is not None else {}
    logs.install(log_format())
    if is_amqp(str(settings.get("broker_url") or "")):
        from . import amqp_tls, amqp_topology

        amqp_topology.install()
        amqp_tls.guard_server_hostname()
        return
    guards.install(settings)
    beat.install()
    patches.guard_restore_unacked()
    fanout.guard_fanout_read()
    deadletter.install()
    if str(settings.get("broker_transport", "")).startswith("celery_fleet.transport:"):
        from . import transport

        transport.install()
