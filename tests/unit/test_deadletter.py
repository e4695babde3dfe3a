"""celery_fleet.deadletter without Redis: settings, entries, output, the role's ACL globs."""

from __future__ import annotations

import contextlib
import fnmatch
import json
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import redis
import yaml
from kombu.exceptions import OperationalError

from celery_fleet import cli
from celery_fleet.deadletter import Config, Entry
from celery_fleet.deadletter.commands import parse_age, table
from celery_fleet.deadletter.config import stream_key
from celery_fleet.deadletter.entry import ARGS_CAP, dump_json
from celery_fleet.deadletter.webhook import Notifier
from celery_fleet.settings import SettingsError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_on_with_a_bounded_stream() -> None:
    config = Config.from_env({})
    assert (config.enabled, config.key, config.maxlen) == (True, "celery-fleet:dead-letters", 10000)
    assert not Config.from_env({"CELERY_FLEET_DEAD_LETTERS": "off"}).enabled


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CELERY_FLEET_DEAD_LETTERS": "maybe"}, "CELERY_FLEET_DEAD_LETTERS"),
        ({"CELERY_FLEET_DEAD_LETTER_MAXLEN": "many"}, "CELERY_FLEET_DEAD_LETTER_MAXLEN"),
        ({"CELERY_FLEET_DEAD_LETTER_MAXLEN": "0"}, "CELERY_FLEET_DEAD_LETTER_MAXLEN"),
        ({"CELERY_FLEET_DEAD_LETTER_KEY": "dead letters*"}, "CELERY_FLEET_DEAD_LETTER_KEY"),
        ({"CELERY_FLEET_DEAD_LETTER_WEBHOOK": "ftp://x"}, "CELERY_FLEET_DEAD_LETTER_WEBHOOK"),
        (
            {"CELERY_FLEET_DEAD_LETTER_WEBHOOK_INTERVAL": "-1"},
            "CELERY_FLEET_DEAD_LETTER_WEBHOOK_INTERVAL",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        Config.from_env(env)
    assert error.value.variable == variable


def test_kombus_global_keyprefix_goes_in_front() -> None:
    assert stream_key("dl", {"global_keyprefix": "app1:"}) == "app1:dl"
    assert stream_key("dl", {}) == "dl"


def test_an_entry_survives_the_stream() -> None:
    item = Entry(
        reason="failed",
        task_id="id-1",
        name="t",
        queue="q",
        args='[1,"a"]',
        kwargs='{"k":2}',
        retries=3,
        failed_at=12.5,
        exc_type="Boom",
    )
    raw = {k.encode(): v.encode() for k, v in item.to_fields().items()}
    back = Entry.from_fields(b"1-0", raw)
    assert back == Entry(**{**item.__dict__, "entry_id": "1-0"})
    assert back.call() == ([1, "a"], {"k": 2})
    assert back.requeueable
    assert back.as_dict()["args"] == [1, "a"]


def test_oversized_or_non_json_arguments_are_marked_and_not_requeueable() -> None:
    text, cut = dump_json(["x" * (ARGS_CAP + 10)])
    assert cut
    assert len(text) == ARGS_CAP
    text, cut = dump_json([object()])
    assert cut
    assert text.startswith('["<object')
    assert dump_json({"a": 1}) == ('{"a":1}', False)
    assert not Entry(reason="failed", name="t", args="[]", kwargs="{}", truncated=True).requeueable
    assert not Entry(reason="undecodable", body="garbage").requeueable


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("7d", 604800)])
def test_ages(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


def test_bad_arguments_exit_2_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    env = ["--env-file", "/nonexistent/celery.env"]
    assert cli.main(["dead-letters", "purge", "--older-than", "7 years", *env]) == 2
    assert "not an age" in capsys.readouterr().err
    assert cli.main(["dead-letters", "requeue", *env]) == 2
    assert "IDs or --all" in capsys.readouterr().err
    assert cli.main(["dead-letters", "list", *env]) == 2
    assert "cannot read env file" in capsys.readouterr().err


def test_table_shows_one_line_per_entry() -> None:
    item = Entry(reason="failed", name="t", entry_id="1-0", exc_type="E", exc_message="a\nb")
    lines = table([item]).splitlines()
    assert lines[0].split()[:3] == ["ENTRY", "FAILED", "(UTC)"]
    assert lines[1].startswith("1-0")
    assert "E: a b" in lines[1]
    assert json.dumps(item.as_dict())


def _rendered_keys() -> list[str]:
    defaults = yaml.safe_load((REPO / "roles/redis/defaults/main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)  # noqa: S701 (not HTML)
    template = env.from_string(defaults["redis_app_acl_keys"])
    return template.render(**defaults).split()


def _redis_glob(pattern: str, key: str) -> bool:
    # Redis globs spell a negated class [^x]; fnmatch spells it [!x]. Nothing else differs
    # for the characters a dead-letter key may hold.
    return fnmatch.fnmatchcase(key, pattern.replace("[^", "[!"))


@pytest.mark.parametrize(
    "key",
    [
        "default",
        "celery",
        "c",
        "unacked",
        "_kombu.binding.default",
        "celery-task-meta-1234",
        "celery-fleet:beat:host1",
        "celery-fleet:dead-letter",
        "celery-fleet:dead-letters2",
        "celery-fleet:dead-letterz",
    ],
)
def test_the_app_users_key_globs_cover_every_key_but_the_stream(key: str) -> None:
    patterns = [p.removeprefix("~") for p in _rendered_keys()]
    assert any(_redis_glob(p, key) for p in patterns)
    assert not any(_redis_glob(p, "celery-fleet:dead-letters") for p in patterns)


def test_the_webhook_is_called_at_most_once_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    posts: list[dict[str, object]] = []
    hook = Notifier(
        "https://hooks.example/x",
        60,
        clock=lambda: now[0],
        post=lambda url, payload: posts.append(payload),
    )
    item = Entry(reason="failed", task_id="t", name="n", args="[1]", kwargs="{}")
    assert hook.notify("k", "1-0", item)
    now[0] += 30
    assert not hook.notify("k", "2-0", item)
    assert not hook.notify("k", "3-0", item)
    now[0] += 31
    assert hook.notify("k", "4-0", item)
    assert [(p["entry_id"], p["suppressed"]) for p in posts] == [("1-0", 0), ("4-0", 2)]
    assert "args" not in posts[0]  # no task arguments leave the broker this way
    assert Config.from_env({"CELERY_FLEET_DEAD_LETTER_WEBHOOK_INTERVAL": "5"}).webhook_interval == 5


def test_install_takes_an_app_configured_another_way(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import Celery

    import celery_fleet
    from celery_fleet import guards
    from celery_fleet.deadletter import capture

    monkeypatch.setattr(guards, "_state", {})  # this process's hooks, restored after
    monkeypatch.setattr(capture, "_state", {})
    monkeypatch.setenv("CELERY_FLEET_DEAD_LETTER_MAXLEN", "50")
    app = Celery("other", set_as_current=False)
    app.conf.broker_transport_options = {"visibility_timeout": 1234}
    celery_fleet.install(app)
    assert guards._state["visibility_timeout"] == 1234
    assert capture._state["config"].maxlen == 50
    monkeypatch.setenv("CELERY_FLEET_DEAD_LETTER_MAXLEN", "lots")
    with pytest.raises(SettingsError, match="CELERY_FLEET_DEAD_LETTER_MAXLEN"):
        celery_fleet.install(app)


class FakeStream:
    """The two stream commands requeue makes (XRANGE, XDEL) on one key, in memory;
    ``xdel`` raises ``fail_delete`` on its call number ``fail_delete_at`` (from 0)."""

    def __init__(self, rows: dict[str, dict[str, str]]) -> None:
        self.rows = dict(rows)
        self.deletes = 0
        self.fail_delete_at: int | None = None

    @staticmethod
    def _at(entry_id: str) -> tuple[int, int]:
        ms, _, seq = entry_id.partition("-")
        return int(ms), int(seq or 0)

    def xrange(
        self, key: str, min: str = "-", max: str = "+", count: int | None = None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        ids = sorted(self.rows, key=self._at)
        if min.startswith("("):
            ids = [i for i in ids if self._at(i) > self._at(min[1:])]
        elif min != "-":
            ids = [i for i in ids if self._at(i) >= self._at(min)]
        if max != "+":
            ids = [i for i in ids if self._at(i) <= self._at(max)]
        found = [
            (i.encode(), {k.encode(): v.encode() for k, v in self.rows[i].items()}) for i in ids
        ]
        return found[:count] if count else found

    def xdel(self, key: str, *ids: str) -> int:
        self.deletes += 1
        if self.deletes - 1 == self.fail_delete_at:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return sum(self.rows.pop(i, None) is not None for i in ids)


class FakeApp:
    """send_task as Celery's, which raises OperationalError once its publish retries are
    spent; the publish number ``fail_at`` (from 0) fails so."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.sent: list[tuple[str, list[object], str, object]] = []
        self.attempts = 0
        self.amqp = SimpleNamespace(Producer=lambda connection: contextlib.nullcontext(object()))

    def send_task(
        self, name: str, *, args: list[object], task_id: str, producer: object, **_: object
    ) -> None:
        self.attempts += 1
        if self.attempts - 1 == self.fail_at:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append((name, args, task_id, producer))


class FakeConnection:
    def __init__(self, stream: FakeStream) -> None:
        self.default_channel = SimpleNamespace(client=stream)

    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def ensure_connection(self, **_: object) -> FakeConnection:
        return self


def _dead(count: int) -> dict[str, dict[str, str]]:
    return {
        f"{i + 1}-0": Entry(
            reason="failed", task_id=f"t{i}", name="proj.charge", args=f"[{i}]", kwargs="{}"
        ).to_fields()
        for i in range(count)
    }


def _requeue_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    app: FakeApp,
    stream: FakeStream,
    *args: str,
) -> tuple[int, str]:
    from celery_fleet.deadletter import commands

    operator = SimpleNamespace(
        app=app,
        key="celery-fleet:dead-letters",
        connection=lambda: FakeConnection(stream),
        close=lambda: None,
    )
    monkeypatch.setattr(commands, "Operator", lambda env: operator)
    status = cli.main(["dead-letters", "requeue", *args])
    return status, capsys.readouterr().out


def test_a_broker_error_mid_requeue_stops_and_says_what_was_requeued_and_kept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stream, app = FakeStream(_dead(6)), FakeApp(fail_at=2)
    status, out = _requeue_cli(monkeypatch, capsys, app, stream, "--all", "--json")
    assert status == 2
    report = json.loads(out)
    assert [r["entry_id"] for r in report["requeued"]] == ["1-0", "2-0"]
    assert [r["new_task_id"] for r in report["requeued"]] == [s[2] for s in app.sent]
    assert report["problems"] == []
    stopped = report["stopped"]
    assert stopped["entry_id"] == "3-0"
    assert stopped["error"].startswith("OperationalError: Error 111 connecting")
    assert stopped["not_tried"] == ["4-0", "5-0", "6-0"]
    assert stopped["sent_as"] == ""
    assert app.attempts == 3  # stopped: nothing more sent to a failing broker
    assert sorted(stream.rows) == ["3-0", "4-0", "5-0", "6-0"]  # deleted only once sent
    assert len({id(s[3]) for s in app.sent}) == 1  # one producer for the batch

    stream, app = FakeStream(_dead(6)), FakeApp(fail_at=2)
    status, out = _requeue_cli(monkeypatch, capsys, app, stream, "--all")
    assert status == 2
    lines = out.splitlines()
    assert lines[0].startswith("requeued 1-0: proj.charge[t0] -> ")
    assert lines[1].startswith("requeued 2-0: proj.charge[t1] -> ")
    assert lines[2] == (
        "stopped at 3-0: OperationalError: Error 111 connecting to 127.0.0.1:6379. "
        "Connection refused."
    )
    assert lines[3] == "3-0: not requeued (its publish failed)"
    assert lines[4] == (
        "it and the 3 entries after it (not tried) are still in the stream: "
        "requeue again once the error is gone"
    )
    assert lines[5] == "2 requeued, 0 not, stopped with 4 kept"


def test_a_delete_that_fails_after_the_publish_says_the_task_was_sent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stream, app = FakeStream(_dead(3)), FakeApp()
    stream.fail_delete_at = 1
    status, out = _requeue_cli(monkeypatch, capsys, app, stream, "2-0", "1-0", "3-0", "--json")
    assert status == 2
    report = json.loads(out)
    assert [r["entry_id"] for r in report["requeued"]] == ["2-0"]
    stopped = report["stopped"]
    assert (stopped["entry_id"], stopped["not_tried"]) == ("1-0", ["3-0"])
    assert stopped["sent_as"] == app.sent[1][2]
    assert stopped["error"] == "ConnectionError: Connection closed by server."
    assert sorted(stream.rows) == ["1-0", "3-0"]

    stream, app = FakeStream(_dead(3)), FakeApp()
    stream.fail_delete_at = 1
    status, out = _requeue_cli(monkeypatch, capsys, app, stream, "2-0", "1-0", "3-0")
    assert status == 2
    assert out.splitlines()[1:] == [
        "stopped at 1-0: ConnectionError: Connection closed by server.",
        f"1-0: sent again as {app.sent[1][2]}, but its entry could not be deleted: "
        "do not requeue it again (the task would run twice)",
        "the 1 entry after it (not tried) is still in the stream: "
        "requeue again once the error is gone",
        "1 requeued, 0 not, stopped with 2 kept",
    ]


def test_a_requeue_without_errors_reports_no_stop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stream, app = FakeStream(_dead(2)), FakeApp()
    status, out = _requeue_cli(monkeypatch, capsys, app, stream, "2-0", "9-9", "--json")
    assert status == 1
    report = json.loads(out)
    assert [r["entry_id"] for r in report["requeued"]] == ["2-0"]
    assert report["problems"] == ["9-9: no such entry"]
    assert report["stopped"] is None
    assert sorted(stream.rows) == ["1-0"]


def test_the_operator_app_keeps_no_results_and_sends_no_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery_fleet.deadletter.operator import Operator

    # A worker container's environment: Celery prefers this over its configuration.
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://127.0.0.1:1/1")
    operator = Operator({"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    try:
        assert type(operator.app.backend).__name__ == "DisabledBackend"
        assert operator.app.conf.task_send_sent_event is False
    finally:
        operator.close()
