"""The doctor's systemd units (systemd/celery-fleet-doctor.service.j2 and .timer.j2) as role
celery renders them: the command writes the metrics file into celery_doctor_metrics_dir as
the service user, sandboxed like the workers with only that folder writable, and
`systemd-analyze verify` accepts both units (the check the role's validate: runs)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import render

REPO = Path(__file__).resolve().parents[2]
UNITS = ("celery-fleet-doctor.service", "celery-fleet-doctor.timer")


def units(**variables: Any) -> dict[str, str]:
    return {
        name: render.render_file(
            REPO / "systemd" / f"{name}.j2", role="celery", role_vars=True, variables=variables
        )
        for name in UNITS
    }


def directives(text: str) -> dict[str, list[str]]:
    """KEY -> values, continuation lines joined (what systemd reads)."""
    found: dict[str, list[str]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_service_runs_the_doctor_as_the_service_user_into_the_metrics_folder() -> None:
    service = directives(
        units(
            celery_doctor_metrics_dir="/srv/textfile",
            celery_doctor_expect_workers=["default@node1", "io@node2"],
        )["celery-fleet-doctor.service"]
    )
    assert service["Type"] == ["oneshot"]
    assert service["User"] == ["celery"]
    assert service["Group"] == ["celery"]
    argv = shlex.split(service["ExecStart"][0])
    assert argv == [
        "/opt/celery-fleet/venv/bin/celery-fleet",
        "doctor",
        "--env-file",
        "/etc/celery-fleet/celery.env",
        "--expect-workers",
        "default@node1,io@node2",
        "--metrics-file",
        "/srv/textfile/celery-fleet-doctor.prom",
    ]
    # Sandboxed as the workers are; the metrics folder is the one writable path.
    assert service["ProtectSystem"] == ["strict"]
    assert service["NoNewPrivileges"] == ["true"]
    assert service["ReadWritePaths"] == ["/srv/textfile"]
    assert "Restart" not in service  # a failed run is retried by the next timer tick


def test_no_expected_workers_no_flag_and_no_sandbox_when_off() -> None:
    service = directives(units(celery_systemd_sandbox=False)["celery-fleet-doctor.service"])
    assert "--expect-workers" not in service["ExecStart"][0]
    assert "ProtectSystem" not in service
    assert "ReadWritePaths" not in service


def test_the_timer_runs_the_service_every_interval() -> None:
    timer = directives(units(celery_doctor_interval="90s")["celery-fleet-doctor.timer"])
    assert timer["OnUnitActiveSec"] == ["90s"]
    assert timer["Unit"] == ["celery-fleet-doctor.service"]
    assert timer["WantedBy"] == ["timers.target"]


def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed (Debian package systemd)", pytrace=False)
    # ExecStart must name an executable that exists: this test's own venv's celery-fleet.
    venv = Path(sys.executable).parent.parent
    rendered = units(celery_venv=str(venv), celery_user="root", celery_group="root")
    for name, text in rendered.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [tool, "verify", *(str(tmp_path / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"},
    )
    # Hosts (and the molecule containers) without man pages: verify runs `man` for man: links.
    for text in rendered.values():
        assert all(v.startswith("https://") for v in directives(text)["Documentation"])
    problems = [ln for ln in done.stderr.splitlines() if "celery-fleet-doctor" in ln]
    assert done.returncode == 0, done.stderr
    assert problems == [], done.stderr
    # The check can fail: a unit systemd cannot parse is refused.
    (tmp_path / UNITS[0]).write_text(rendered[UNITS[0]].replace("Type=oneshot", "Type=never"))
    bad = subprocess.run(
        [tool, "verify", str(tmp_path / UNITS[0])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"},
    )
    assert "celery-fleet-doctor.service" in bad.stderr, bad.stderr
