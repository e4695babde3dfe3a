"""`celery-fleet doctor --metrics-file`: the doctor's verdicts in Prometheus' text format.

The file is meant for node exporter's textfile collector (Debian's
prometheus-node-exporter reads ``/var/lib/prometheus/node-exporter/*.prom``). Format:
https://prometheus.io/docs/instrumenting/exposition_formats/ (label values escape ``\\``,
``"`` and newlines). The collector may read the file at any moment, so it is written to a
temporary file in the same folder (not ending in ``.prom``, so never read half-written)
and renamed over the old one, as node exporter's documentation asks
(https://github.com/prometheus/node_exporter#textfile-collector).

Only check names, 0/1 verdicts, times and certificate paths are written: never a detail
text, a URL or an exception message, which could carry a password.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .doctor import Result

CHECK_OK = "celery_fleet_doctor_check_ok"
LAST_RUN = "celery_fleet_doctor_last_run_timestamp_seconds"
CERT_EXPIRY = "celery_fleet_certificate_expiry_seconds"
SUFFIX = ".prom"
MODE = 0o644

HELP = {
    CHECK_OK: "1 when every result of this celery-fleet doctor check was ok on the last run, "
    "0 on a finding or when it could not check (docs/doctor.md)",
    LAST_RUN: "Unix time the last celery-fleet doctor run ended",
    CERT_EXPIRY: "notAfter of the certificate file the app's settings point at (the earliest "
    "in a bundle), as Unix time",
}


class MetricsFileError(Exception):
    """The metrics file cannot be used or written; the message says which and why."""


def verdicts(results: Sequence[Result]) -> dict[str, bool]:
    """One verdict per check name: ok only when all of its results are ok."""
    verdict: dict[str, bool] = {}
    for result in results:
        verdict[result.check] = verdict.get(result.check, True) and result.status == "ok"
    return verdict


def exposition(checks: Mapping[str, bool], expiry: Mapping[str, float], finished: float) -> str:
    """The text exposition of the three metric families (sorted: stable diffs)."""
    lines: list[str] = []

    def family(name: str) -> None:
        lines.append(f"# HELP {name} {HELP[name]}")
        lines.append(f"# TYPE {name} gauge")

    family(CHECK_OK)
    lines += [f'{CHECK_OK}{{check="{_label(c)}"}} {int(v)}' for c, v in sorted(checks.items())]
    family(LAST_RUN)
    lines.append(f"{LAST_RUN} {finished:.3f}")
    if expiry:
        family(CERT_EXPIRY)
        lines += [f'{CERT_EXPIRY}{{path="{_label(p)}"}} {t:.0f}' for p, t in sorted(expiry.items())]
    return "\n".join(lines) + "\n"


def check_path(path: Path) -> None:
    """Refuse what node exporter would not read, before the checks run."""
    if path.suffix != SUFFIX:
        raise MetricsFileError(
            f"--metrics-file {path}: the name must end in {SUFFIX} (node exporter's textfile "
            "collector reads only *.prom files)"
        )
    if not path.parent.is_dir():
        raise MetricsFileError(
            f"--metrics-file {path}: folder {path.parent} does not exist; create it "
            "(role celery creates celery_doctor_metrics_dir)"
        )


def write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (same-folder temporary file, then rename)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), MODE)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise MetricsFileError(
            f"cannot write --metrics-file {path}: {exc.strerror} (the service user needs "
            f"write access to {path.parent})"
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
