"""A dead-letter store: tasks that failed for good are kept, listed and requeued.

With Celery on Redis a task that fails for the last time leaves at most a result that
expires. With celery-fleet installed, the worker also appends one entry per such task to a
Redis stream on the broker (``XADD key MAXLEN ~ N``): on a final failure, a hard time
limit, a message Celery rejects or cannot decode, and an unknown task name. A retry is not
a failure: Celery sends ``task_failure`` only when the task gives up (see the Celery docs,
"Signals" and "Retrying").

Modules, one job each: ``config`` (the CELERY_FLEET_DEAD_LETTER* variables), ``entry``
(what one entry holds), ``writer`` (XADD that never fails the worker), ``capture`` (the
worker hooks), ``store`` (read, delete, purge, metrics), ``requeue`` (publish again),
``operator`` (the operator's connection), ``commands`` (the CLI's actions), ``webhook``
(a rate-limited call about new entries). See docs/deadletters.md.
"""

from __future__ import annotations

from .capture import install
from .config import Config
from .entry import Entry

__all__ = ["Config", "Entry", "install"]
