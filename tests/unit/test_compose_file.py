"""compose/compose.yaml agrees with the roles where it has to name the same path: the folder
where role celery's doctor writes its metrics file and node exporter reads it (one YAML
anchor in the file, role celery's celery_doctor_metrics_dir in the role)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness import render

COMPOSE = Path(__file__).resolve().parents[2] / "compose" / "compose.yaml"


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_the_doctor_metrics_folder_is_role_celerys() -> None:
    folder = render.role_defaults("celery")["celery_doctor_metrics_dir"]
    services = _services()
    assert services["bundle"]["entrypoint"][-1] == folder
    mounts = {
        name: [
            v["target"]
            for v in s.get("volumes", [])
            if isinstance(v, dict) and v.get("source") == "doctor-metrics"
        ]
        for name, s in services.items()
    }
    assert {name: targets for name, targets in mounts.items() if targets} == {
        "bundle": [folder],
        "node-exporter": [folder],
        "doctor": [folder],
    }
