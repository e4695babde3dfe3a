"""`celery-fleet settings` on common snippets' configurations (tests/unit/snippets), run as the
real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli

SNIPPETS = Path(__file__).parent / "snippets"


@pytest.fixture
def snippet(tmp_path: Path, pem: dict[str, str]):  # type: ignore[no-untyped-def]
    def materialise(name: str) -> Path:
        text = (SNIPPETS / name).read_text()
        text = text.replace("@CA@", pem["ca_crt"]).replace("@CERT@", pem["client_crt"])
        path = tmp_path / name
        path.write_text(text.replace("@KEY@", pem["client_key"]))
        return path

    return materialise


@pytest.mark.parametrize(
    "name",
    [
        "redis-tcp-pool-limits.env",
        "rediss-url-query-params.env",
        "rediss-ssl-dicts.env",
        "managed-rediss-verified.env",
        "local-development.env",
    ],
)
def test_snippets_resolve_cleanly(name: str, snippet) -> None:  # type: ignore[no-untyped-def]
    result = cli.settings(snippet(name))
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["broker_url"].startswith(("redis://", "rediss://"))
    assert "password@" not in result.stdout  # masked
    if settings["broker_url"].startswith("rediss://"):
        assert settings["broker_use_ssl"]["ssl_cert_reqs"] == "CERT_REQUIRED"
        assert settings["redis_backend_use_ssl"]["ssl_cert_reqs"] == "CERT_REQUIRED"
    assert "WARNING" not in result.stderr


@pytest.mark.parametrize(
    ("name", "warning"),
    [
        ("result-backend-socket-scheme.env", "Unknown result backend"),
        ("sentinel-short-socket-timeout.env", "below 0.5 s"),
    ],
)
def test_snippets_that_work_with_a_warning(name: str, warning: str, snippet) -> None:  # type: ignore[no-untyped-def]
    result = cli.settings(snippet(name))
    assert result.returncode == 0, result.stderr
    assert warning in result.stderr


@pytest.mark.parametrize(
    ("name", "words"),
    [
        (
            "managed-rediss-cert-none.env",
            ["CELERY_RESULT_BACKEND_USE_SSL", "CELERY_REDIS_BACKEND_USE_SSL"],
        ),
        (
            "celeryconfig-send-sent-signal.env",
            ["CELERY_TASK_SEND_SENT_SIGNAL", "CELERY_TASK_SEND_SENT_EVENT"],
        ),
        ("sentinel-without-master-name.env", ["CELERY_SENTINEL_MASTER_NAME"]),
    ],
)
def test_snippet_mistakes_exit_2_with_one_paragraph(name: str, words: list[str], snippet) -> None:  # type: ignore[no-untyped-def]
    result = cli.settings(snippet(name))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert "\n\n" not in result.stderr.strip()
    for word in words:
        assert word in result.stderr


def test_cert_none_snippet_without_the_bogus_name_still_warns(snippet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = snippet("managed-rediss-cert-none.env")
    lines = [ln for ln in path.read_text().splitlines() if "RESULT_BACKEND_USE_SSL" not in ln]
    path.write_text("\n".join(lines))
    result = cli.settings(path)
    assert result.returncode == 0
    assert "man-in-the-middle" in result.stderr
    settings = json.loads(result.stdout)
    assert settings["broker_use_ssl"]["ssl_cert_reqs"] == "CERT_NONE"


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"CELERY_BROKER_URL": "rediss://:hunter2@h:6379/0", "PATH": "/usr/bin:/bin"}
    result = cli.run("settings", env=env)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert json.loads(result.stdout)["broker_url"] == "rediss://:***@h:6379/0"


def test_unreadable_env_file_exits_2(tmp_path: Path) -> None:
    result = cli.settings(tmp_path / "missing.env")
    assert result.returncode == 2
    assert "cannot read env file" in result.stderr


def test_pickle_exits_2_naming_the_variable_and_the_opt_in(tmp_path: Path) -> None:
    env_file = tmp_path / "celery.env"
    env_file.write_text(
        "CELERY_BROKER_URL=rediss://:pw@h:6379/0\nCELERY_ACCEPT_CONTENT=json,pickle\n"
    )
    result = cli.settings(env_file)
    assert result.returncode == 2
    assert "CELERY_ACCEPT_CONTENT" in result.stderr
    assert "CELERY_FLEET_ALLOW_UNSAFE_SERIALIZERS=true" in result.stderr
