"""Variables that Celery's own command reads as its options: refuse what it would refuse.

``celery`` runs its click group with ``auto_envvar_prefix="CELERY"`` (celery/bin/celery.py,
``main``), so ``CELERY_WORKER_MAX_TASKS_PER_CHILD`` is also ``celery worker
--max-tasks-per-child`` and ``CELERY_BEAT_SCHEDULE`` also ``celery beat --schedule``, each
whenever the command line does not give the option itself. A value the settings accept but
the option refuses (``none`` where click wants a whole number) stopped ``celery worker``
from starting with a usage error, far from the variable that caused it; :func:`check` names
it first. tests/unit/test_cli_env.py derives the overlap from Celery's commands, so an option
a later Celery adds shows up there.
"""

from __future__ import annotations

from collections.abc import Mapping

from .settings import SettingsError

# Whole-number options of `celery worker` that share a name with a Celery setting.
WHOLE_NUMBERS: dict[str, str] = {
    "CELERY_WORKER_CONCURRENCY": "--concurrency",
    "CELERY_WORKER_PREFETCH_MULTIPLIER": "--prefetch-multiplier",
    "CELERY_WORKER_MAX_TASKS_PER_CHILD": "--max-tasks-per-child",
    "CELERY_WORKER_MAX_MEMORY_PER_CHILD": "--max-memory-per-child",
}
# Options whose every value is fine for both (same meaning, types click accepts as given).
SAME_MEANING: frozenset[str] = frozenset(
    {
        "CELERY_WORKER_POOL",
        "CELERY_WORKER_POOL_START_METHOD",
        "CELERY_WORKER_DISABLE_PREFETCH",
        "CELERY_BEAT_SCHEDULER",
    }
)
# beat_schedule (the periodic tasks) would become `celery beat --schedule`: the path of
# beat's state file.
BEAT_SCHEDULE = "CELERY_BEAT_SCHEDULE"


def check(env: Mapping[str, str]) -> None:
    """Raise :class:`SettingsError` for a value ``celery worker``/``beat`` would refuse."""
    for variable, option in WHOLE_NUMBERS.items():
        raw = env.get(variable)
        if raw is None or raw.strip().isdigit():
            continue
        raise SettingsError(
            variable,
            f"{raw!r}: `celery worker` reads this variable as {option} too and needs a whole "
            f"number there; unset {variable} to keep Celery's default",
        )
    if BEAT_SCHEDULE in env:
        raise SettingsError(
            BEAT_SCHEDULE,
            "`celery beat` reads this variable as --schedule (the path of its state file), "
            "so it cannot carry the periodic tasks; define them in the app "
            "(app.conf.beat_schedule) and unset the variable",
        )
