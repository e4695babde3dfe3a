"""Beat high availability settings (celery_fleet.settings.beat_lock) and what the celery
role writes for them into celery.env. The lock itself runs against real Redis in
tests/integration/test_beat_lock.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from celery_fleet import envfile
from celery_fleet.settings import (
    BEAT_LOCK_SCHEDULER,
    BEAT_LOCK_TTL_VAR,
    BEAT_LOCK_VAR,
    SettingsError,
    beat_lock,
    load,
)
from harness.render import render

BROKER = {"CELERY_BROKER_URL": "redis://h/0"}


def test_off_by_default_and_celerys_scheduler_stays() -> None:
    assert beat_lock({}).enabled is False
    assert beat_lock({}).ttl == 30.0
    assert "beat_scheduler" not in load(BROKER)


def test_on_makes_the_locked_scheduler_beats_scheduler() -> None:
    settings = load({**BROKER, BEAT_LOCK_VAR: "true", BEAT_LOCK_TTL_VAR: "12"})
    assert settings["beat_scheduler"] == BEAT_LOCK_SCHEDULER
    assert beat_lock({BEAT_LOCK_VAR: "yes", BEAT_LOCK_TTL_VAR: "12"}).ttl == 12.0


@pytest.mark.parametrize("raw", ["2", "0", "-5", "2.9"])
def test_a_ttl_below_three_seconds_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as bad:
        load({**BROKER, BEAT_LOCK_VAR: "true", BEAT_LOCK_TTL_VAR: raw})
    assert bad.value.variable == BEAT_LOCK_TTL_VAR
    assert "at least" in str(bad.value) or "below 3" in str(bad.value)


@pytest.mark.parametrize("raw", ["thirty", "30s", "none"])
def test_a_ttl_that_is_no_number_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as bad:
        beat_lock({BEAT_LOCK_TTL_VAR: raw})
    assert bad.value.variable == BEAT_LOCK_TTL_VAR


def test_a_bad_switch_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as bad:
        load({**BROKER, BEAT_LOCK_VAR: "maybe"})
    assert bad.value.variable == BEAT_LOCK_VAR


def test_another_scheduler_conflicts_with_the_lock() -> None:
    env = {**BROKER, BEAT_LOCK_VAR: "true", "CELERY_BEAT_SCHEDULER": "django_celery_beat:X"}
    with pytest.raises(SettingsError) as bad:
        load(env)
    assert bad.value.variable == "CELERY_BEAT_SCHEDULER"
    assert BEAT_LOCK_VAR in str(bad.value)


ROLE_INPUTS = {"celery_redis_password": "pw", "celery_broker_url": "redis://h/0"}


def celery_env(tmp_path: Path, **variables: object) -> dict[str, str]:
    text = render("celery.env.j2", role="celery", variables={**ROLE_INPUTS, **variables})
    path = tmp_path / "celery.env"
    path.write_text(text)
    return envfile.read(path)


def test_the_role_writes_the_lock_only_when_asked(tmp_path: Path) -> None:
    assert BEAT_LOCK_VAR not in celery_env(tmp_path)
    env = celery_env(tmp_path, celery_beat_lock=True, celery_beat_lock_ttl=12)
    assert env[BEAT_LOCK_VAR] == "true"
    assert env[BEAT_LOCK_TTL_VAR] == "12"
    assert beat_lock(env).ttl == 12.0
