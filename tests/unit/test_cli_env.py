"""Variables Celery's command reads as its own options (celery_fleet.cli_env)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from celery.app.defaults import NAMESPACES, flatten
from celery.bin.celery import celery

from celery_fleet import cli_env
from celery_fleet.settings import SettingsError, load

SETTINGS = {name for name, _ in flatten(NAMESPACES)}


def overlap() -> dict[str, click.Parameter]:
    """Every `celery <command>` option whose automatic variable is also a Celery setting."""
    found = {}
    for command_name, command in celery.commands.items():
        for param in command.params:
            variable = f"CELERY_{command_name.upper()}_{(param.name or '').upper()}"
            if variable.removeprefix("CELERY_").lower() in SETTINGS:
                found[variable] = param
    return found


def test_every_overlap_with_celerys_command_is_known() -> None:
    known = set(cli_env.WHOLE_NUMBERS) | cli_env.SAME_MEANING | {cli_env.BEAT_SCHEDULE}
    found = overlap()
    assert set(found) <= known, f"new overlap in this Celery: {set(found) - known}"
    whole = {v for v, p in found.items() if isinstance(p.type, click.types.IntParamType)}
    assert whole <= set(cli_env.WHOLE_NUMBERS)


def test_celery_worker_itself_refuses_none(tmp_path: Path) -> None:
    """The reason for the check: Celery's command stops with a usage error."""
    bin_dir = Path(sys.executable).parent
    run = subprocess.run(
        [str(bin_dir / "celery"), "worker"],
        env={**os.environ, "CELERY_WORKER_MAX_TASKS_PER_CHILD": "none"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--max-tasks-per-child" in run.stderr


@pytest.mark.parametrize("variable", sorted(cli_env.WHOLE_NUMBERS))
@pytest.mark.parametrize("value", ["none", "null", "1.5", "-1"])
def test_settings_refuse_what_the_worker_command_refuses(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load({"CELERY_BROKER_URL": "rediss://h/0", variable: value})
    assert caught.value.variable == variable
    assert cli_env.WHOLE_NUMBERS[variable] in str(caught.value)


@pytest.mark.parametrize("variable", sorted(cli_env.WHOLE_NUMBERS))
def test_whole_numbers_still_pass(variable: str) -> None:
    settings = load({"CELERY_BROKER_URL": "rediss://h/0", variable: "12"})
    assert int(settings[variable.removeprefix("CELERY_").lower()]) == 12


def test_beat_schedule_is_refused_with_the_fix() -> None:
    with pytest.raises(SettingsError, match=r"app\.conf\.beat_schedule") as caught:
        load({"CELERY_BROKER_URL": "rediss://h/0", "CELERY_BEAT_SCHEDULE": "{}"})
    assert caught.value.variable == "CELERY_BEAT_SCHEDULE"
