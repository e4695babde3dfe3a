"""celery_fleet.logs: the JSON formatter's fields, and the json/text switch."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery._state import _task_stack
from celery.app.log import TaskFormatter
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init
from celery.utils.log import ColorFormatter

from celery_fleet import logs
from celery_fleet.settings import LOG_FORMAT_VAR, SettingsError, load, log_format

URL = "rediss://celery:s3cr3t-pass@redis.example:6379/0"


def record(
    msg: Any, *args: Any, name: str = "celery.app.trace", exc_info: Any = None
) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args or None, exc_info)


def fmt(rec: logging.LogRecord) -> dict[str, Any]:
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_line_has_the_fixed_fields_and_nothing_of_the_records_extras() -> None:
    rec = record("hello %s", "world", name="proj.tasks")
    rec.data = {"args": [URL], "kwargs": {"password": "s3cr3t-pass"}}  # Celery's extra=
    rec.password = "s3cr3t-pass"
    out = fmt(rec)
    assert out["message"] == "hello world"
    assert out["level"] == "INFO"
    assert out["logger"] == "proj.tasks"
    assert out["timestamp"].endswith("+00:00")
    assert set(out) <= set(logs.FIELDS)
    assert "s3cr3t-pass" not in json.dumps(out)


def test_a_dict_message_becomes_text_not_fields() -> None:
    out = fmt(record({"password": "x", "level": "fake"}))
    assert out["level"] == "INFO"
    assert "password" not in out
    assert set(out) <= set(logs.FIELDS)


def test_url_passwords_are_masked_in_message_and_traceback() -> None:
    try:
        raise ConnectionError(f"cannot reach {URL}")
    except ConnectionError:
        rec = record("lost %s", URL, exc_info=sys.exc_info())
    out = fmt(rec)
    assert "s3cr3t-pass" not in json.dumps(out)
    assert "rediss://celery:***@redis.example" in out["message"]
    assert out["exc_type"] == "ConnectionError"
    assert out["traceback"].startswith("Traceback (most recent call last):")
    assert (
        out["traceback"].rstrip().endswith("cannot reach rediss://celery:***@redis.example:6379/0")
    )


def test_masking_stops_at_a_space() -> None:
    text = "GET http://web:8080/health by ops@example.org, broker redis://:pw@h:6379/0"
    assert logs.mask(text) == (
        "GET http://web:8080/health by ops@example.org, broker redis://:***@h:6379/0"
    )


def test_celerys_received_line_carries_the_task_from_its_arguments() -> None:
    context = {"id": "abc-123", "name": "proj.add", "args": "(1, 2)", "kwargs": "{}"}
    rec = record("Task %(name)s[%(id)s] received", context, name="celery.worker.strategy")
    out = fmt(rec)
    assert out["message"] == "Task proj.add[abc-123] received"
    assert (out["task_id"], out["task_name"]) == ("abc-123", "proj.add")
    assert "args" not in out
    # Another library's dict arguments are not read as a task.
    assert "task_id" not in fmt(record("%(id)s %(name)s", context, name="other.lib"))


@pytest.fixture
def task() -> Iterator[Any]:
    app = Celery("unit-logs", set_as_current=False)

    @app.task(name="proj.retrying", bind=True)
    def retrying(self: Any) -> None:
        return None

    retrying.push_request(
        id="t-1", retries=2, delivery_info={"exchange": "", "routing_key": "critical"}
    )
    _task_stack.push(retrying)
    try:
        yield retrying
    finally:
        _task_stack.pop()
        retrying.pop_request()


def test_inside_a_task_every_line_carries_the_task_queue_and_retries(task: Any) -> None:
    out = fmt(record("working", name="proj.tasks"))
    assert out["task_id"] == "t-1"
    assert out["task_name"] == "proj.retrying"
    assert out["queue"] == "critical"
    assert out["retries"] == 2


def test_the_worker_node_name_comes_from_celeryd_init() -> None:
    logs.install("json")
    try:
        celeryd_init.send(sender="w1@host", instance=None, conf=None, options={})
        assert fmt(record("x"))["worker"] == "w1@host"
    finally:
        logs._state.pop("worker", None)
        logs.install("text")


def handlers() -> tuple[logging.Logger, logging.Handler, logging.Handler, logging.Handler]:
    logger = logging.Logger("unit-logs")
    celery_text = logging.StreamHandler(io.StringIO())
    celery_text.setFormatter(ColorFormatter("%(message)s", use_color=False))
    celery_task = logging.StreamHandler(io.StringIO())
    celery_task.setFormatter(TaskFormatter("%(message)s", use_color=False))
    theirs = logging.StreamHandler(io.StringIO())
    theirs.setFormatter(logging.Formatter("%(message)s"))
    for handler in (celery_text, celery_task, theirs):
        logger.addHandler(handler)
    return logger, celery_text, celery_task, theirs


@pytest.mark.parametrize("signal", [after_setup_logger, after_setup_task_logger])
def test_json_swaps_the_formatters_celery_installed_and_only_those(signal: Any) -> None:
    logger, celery_text, celery_task, theirs = handlers()
    logs.install("json")
    logs.install("json")  # idempotent
    try:
        signal.send(
            sender=None, logger=logger, loglevel=20, logfile=None, format="", colorize=False
        )
    finally:
        logs.install("text")
    assert isinstance(celery_text.formatter, logs.JsonFormatter)
    assert isinstance(celery_task.formatter, logs.JsonFormatter)
    assert type(theirs.formatter) is logging.Formatter


def test_text_leaves_celerys_format() -> None:
    logger, celery_text, celery_task, _ = handlers()
    logs.install("json")
    logs.install("text")
    after_setup_logger.send(sender=None, logger=logger, loglevel=20, logfile=None, format="")
    after_setup_task_logger.send(sender=None, logger=logger, loglevel=20, logfile=None, format="")
    assert type(celery_text.formatter) is ColorFormatter
    assert type(celery_task.formatter) is TaskFormatter


@pytest.mark.parametrize(
    ("raw", "value"), [(None, "json"), ("", "json"), ("json", "json"), (" TEXT ", "text")]
)
def test_log_format_switch(raw: str | None, value: str) -> None:
    env = {} if raw is None else {LOG_FORMAT_VAR: raw}
    assert log_format(env) == value


def test_a_bad_log_format_names_the_variable_at_load() -> None:
    with pytest.raises(SettingsError) as bad:
        log_format({LOG_FORMAT_VAR: "logfmt"})
    assert bad.value.variable == LOG_FORMAT_VAR
    assert "use json (one object per line) or text" in str(bad.value)
    with pytest.raises(SettingsError, match=LOG_FORMAT_VAR):
        load({"CELERY_BROKER_URL": "redis://h/0", LOG_FORMAT_VAR: "yaml"})
