"""Beat high availability settings (celery_fleet.settings.beat_lock) and what the celery
role writes for them into celery.env. The lock itself runs against real Redis in
tests/integration/test_beat_lock.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from celery_fleet import doctor, envfile
from celery_fleet.beatlock import LOCK_KEY
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


class FakeRedis:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    def scan_iter(self, match: str) -> list[bytes]:
        return [k.encode() for k in self.keys if k.startswith(match.rstrip("*"))]

    def get(self, key: str) -> bytes | None:
        value = self.keys.get(key)
        return None if value is None else value.encode()


class FakeDeployment:
    def __init__(self, env: dict[str, str], keys: dict[str, str]) -> None:
        self.settings = load(env)
        self.client = FakeRedis(keys)

    def data_client(self, host: str, port: int) -> FakeRedis:
        return self.client


def beat_check(env: dict[str, str], keys: dict[str, str]) -> tuple[str, str]:
    result = doctor.check_beat(FakeDeployment(env, keys), "h", 6379)  # type: ignore[arg-type]
    return result.status, result.detail


LIVE = {"celery-fleet:beat:b1": "{}", "celery-fleet:beat:b2": "{}"}
LOCKED = {**BROKER, BEAT_LOCK_VAR: "true"}


def test_doctor_two_beats_without_the_lock_is_a_finding() -> None:
    status, detail = beat_check(BROKER, LIVE)
    assert status == "finding"
    assert detail.endswith("tasks run twice")


def test_doctor_two_beats_with_the_lock_one_holding_it_is_ok() -> None:
    keys = {**LIVE, LOCK_KEY: "b2:4242:00ff00ff00ff00ff"}
    assert beat_check(LOCKED, keys) == ("ok", "active on b2, standby on b1")


def test_doctor_beats_with_the_lock_but_no_holder_is_a_finding() -> None:
    status, detail = beat_check(LOCKED, LIVE)
    assert status == "finding"
    assert "none holds" in detail


def test_doctor_a_holder_without_a_live_beat_is_a_finding() -> None:
    status, detail = beat_check(LOCKED, {"celery-fleet:beat:b1": "{}", LOCK_KEY: "b9:1:ab"})
    assert status == "finding"
    assert "b9" in detail
