"""The operator's connection: the app's env file, another Redis user.

The app user may only XADD to the dead-letter stream. Reading, deleting and requeueing
take the operator user (role redis: ``redis_deadletter_user``), given as
``CELERY_FLEET_DEAD_LETTER_USERNAME`` / ``CELERY_FLEET_DEAD_LETTER_PASSWORD`` in an env
file or the environment; the rest (hosts, Sentinels, TLS) is the app's own settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery

from .. import urls
from ..settings import SettingsError, load
from .config import Config, stream_key

USERNAME_VAR = "CELERY_FLEET_DEAD_LETTER_USERNAME"
PASSWORD_VAR = "CELERY_FLEET_DEAD_LETTER_PASSWORD"  # noqa: S105 (a variable name)


class Operator:
    """A Celery app (for publishing) and the stream key, for one environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        settings = load(env)
        self.config = Config.from_env(env)
        user, password = env.get(USERNAME_VAR), env.get(PASSWORD_VAR)
        if bool(user) != bool(password):
            missing = PASSWORD_VAR if user else USERNAME_VAR
            raise SettingsError(missing, f"is not set; set both {USERNAME_VAR} and {PASSWORD_VAR}")
        url = urls.parse(settings["broker_url"], variable="CELERY_BROKER_URL")
        if user and password:
            url.username, url.password = user, password
        self.broker_url = url.render()
        self.user = url.username or "default"
        # Requeue needs no results: no backend connection (and none of its credentials),
        # and no result subscription per requeued task (the Redis backend's on_task_call
        # subscribes to each task it sends). backend_cls, not only the setting: Celery
        # takes CELERY_RESULT_BACKEND from the process environment over its configuration
        # (a worker container's environment has it).
        settings["result_backend"] = None
        settings.pop("result_compression", None)  # else the disabled backend warns of it
        # No "task-sent" event per requeued task. Celery would publish it on the
        # producer's connection, but the operator user may not PUBLISH (its ACL has no
        # channels, role redis: redis_deadletter_acl_rules): Kombu took each refusal for a
        # lost connection and reconnected (through Sentinel and TLS, about 8 new
        # connections a task), and Celery's dispatcher then dropped the event unsent.
        settings["task_send_sent_event"] = False
        settings["broker_url"] = self.broker_url
        self.app = Celery("celery-fleet-dead-letters", set_as_current=False)
        self.app.backend_cls = "disabled"
        self.app.conf.update(settings)
        self.key = stream_key(self.config.key, settings.get("broker_transport_options"))

    def connection(self) -> Any:
        """A kombu connection to the broker as the operator (explicit URL: Celery would
        prefer CELERY_BROKER_URL from this process's environment otherwise)."""
        return self.app.connection_for_write(self.broker_url)

    def close(self) -> None:
        self.app.close()
