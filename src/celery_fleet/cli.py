"""The ``celery-fleet`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import certfiles, envfile, metrics
from .settings import SettingsError, load, masked

EXIT_OK, EXIT_FINDINGS, EXIT_CANNOT = 0, 1, 2
# The metrics' name for the doctor's own run (1: it could check; 0: bad settings, env file).
METRICS_SELF_CHECK = "doctor"


def _settings(args: argparse.Namespace) -> int:
    try:
        settings = load(_read_env(args))
    except (SettingsError, envfile.EnvFileError) as exc:
        print(textwrap.fill(f"error: {exc}", width=100), file=sys.stderr)
        return EXIT_CANNOT
    json.dump(masked(settings), sys.stdout, indent=2, sort_keys=True, default=str)
    print()
    return EXIT_OK


def _read_env(args: argparse.Namespace) -> dict[str, str]:
    return envfile.read(args.env_file) if args.env_file else dict(os.environ)


def _doctor(args: argparse.Namespace) -> int:
    from . import doctor

    metrics_file = Path(args.metrics_file) if args.metrics_file else None
    if metrics_file is not None:
        try:
            metrics.check_path(metrics_file)
        except metrics.MetricsFileError as exc:
            print(textwrap.fill(f"error: {exc}", width=100), file=sys.stderr)
            return EXIT_CANNOT
    results: list[doctor.Result] = []
    certificates: dict[str, float] = {}
    try:
        env = _read_env(args)
        if metrics_file is not None:
            certificates = _certificates(load(env), results)
        auth = None
        if args.flower_auth_file:
            auth = Path(args.flower_auth_file).read_text(encoding="utf-8").strip()
        options = doctor.Options(
            expect_workers=[w for w in (args.expect_workers or "").split(",") if w],
            flower_url=args.flower_url,
            flower_auth=auth,
            timeout=args.timeout,
        )
        results = doctor.run(env, options) + results
    except (SettingsError, envfile.EnvFileError, OSError) as exc:
        print(textwrap.fill(f"error: cannot check: {exc}", width=100), file=sys.stderr)
        if metrics_file is None:
            return EXIT_CANNOT
        # The reason went to stderr (the journal); the metric says only that it failed.
        results.append(doctor.error(METRICS_SELF_CHECK, "cannot check"))
    else:
        if args.json:
            json.dump(doctor.as_json(results), sys.stdout, indent=2)
            print()
        else:
            print(doctor.render(results))
        if metrics_file is None:
            return doctor.exit_status(results)
        results.append(doctor.ok(METRICS_SELF_CHECK, "ran"))
    # With --metrics-file the verdicts are in the file and alerted on there: the exit status
    # says only whether the file was written, so a timer's unit fails on that alone.
    text = metrics.exposition(metrics.verdicts(results), certificates, time.time())
    try:
        metrics.write(metrics_file, text)
    except metrics.MetricsFileError as exc:
        print(textwrap.fill(f"error: {exc}", width=100), file=sys.stderr)
        return EXIT_CANNOT
    return EXIT_OK


def _certificates(settings: Mapping[str, Any], results: list[Any]) -> dict[str, float]:
    """notAfter of each certificate file the settings name; a check result per file."""
    from . import doctor

    expiry: dict[str, float] = {}
    for path in certfiles.paths(settings):
        check = f"certificate {path}"
        try:
            expiry[path] = certfiles.not_after(path).timestamp()
        except certfiles.CertificateFileError as exc:
            results.append(doctor.finding(check, str(exc)))
        else:
            results.append(doctor.ok(check, "readable"))
    return expiry


def _dead_letters(args: argparse.Namespace) -> int:
    from .deadletter import commands, operator

    try:
        options = dict(vars(args))
        if args.action == "purge":
            options["older_than"] = commands.parse_age(args.older_than)
        if args.action == "requeue" and bool(args.ids) == bool(args.all):
            raise ValueError("give entry IDs or --all, not both and not neither")
        env: dict[str, str] = {}
        for path in args.env_file or []:
            env.update(envfile.read(path))
        if not args.env_file:
            env = dict(os.environ)
        for name in (operator.USERNAME_VAR, operator.PASSWORD_VAR):
            if name in os.environ:
                env[name] = os.environ[name]
        return commands.run(args.action, env, options)
    except (SettingsError, envfile.EnvFileError, ValueError) as exc:
        print(textwrap.fill(f"error: {exc}", width=100), file=sys.stderr)
        return EXIT_CANNOT
    except Exception as exc:  # a Redis or Kombu error: say which, without a traceback
        hint = ""
        if type(exc).__name__ == "NoPermissionError":
            hint = (
                f" (the app user may only add entries: set {operator.USERNAME_VAR} and "
                f"{operator.PASSWORD_VAR} to the dead-letter operator user)"
            )
        print(f"error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return EXIT_CANNOT


def _add_dead_letters(sub: Any) -> None:
    dl = sub.add_parser(
        "dead-letters",
        help="list, show, requeue and purge tasks that failed for good",
        description="The dead-letter stream (docs/deadletters.md). Connects as "
        "CELERY_FLEET_DEAD_LETTER_USERNAME/_PASSWORD (the operator user), with the rest "
        "of the app's settings. Exit 0 done, 1 some entries not found or not requeued, "
        "2 cannot run, or a requeue stopped by an error (it says what was requeued before).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        metavar="FILE",
        action="append",
        help="KEY=value file (the app's celery.env); repeat to add one with the operator "
        "credentials; default: the process environment",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    actions = dl.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[common], help="newest entries first")
    listing.add_argument("--name", help="only this task name")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    show = actions.add_parser("show", parents=[common], help="one entry in full")
    show.add_argument("id", help="the entry ID (first column of list)")
    again = actions.add_parser(
        "requeue",
        parents=[common],
        help="send entries' tasks again (new id) and delete the entries",
    )
    again.add_argument("ids", nargs="*", metavar="ID", help="entry IDs")
    again.add_argument("--all", action="store_true", help="every entry (see --name)")
    again.add_argument("--name", help="with --all: only this task name")
    purge = actions.add_parser("purge", parents=[common], help="delete old entries")
    purge.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 7d, 12h")
    actions.add_parser("stats", parents=[common], help="entries in all and per task name")
    dl.set_defaults(func=_dead_letters)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celery-fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser(
        "settings",
        help="print the Celery settings an environment resolves to (secrets masked)",
        description="Resolve CELERY_* variables the way the app will, print JSON with "
        "passwords masked. Exit 2 on bad input.",
    )
    show.add_argument(
        "--env-file",
        metavar="FILE",
        help="read this KEY=value file instead of the process environment",
    )
    show.set_defaults(func=_settings)
    doc = sub.add_parser(
        "doctor",
        help="check a running deployment: TLS, auth, replication, Sentinels, workers, beat",
        description="Check the deployment the env file points at. Exit 0 healthy, "
        "1 findings, 2 cannot check. With --metrics-file: exit 0 when the file is written "
        "(the verdicts are in it), 2 when it is not.",
    )
    doc.add_argument("--env-file", metavar="FILE", help="the app's env file (celery.env)")
    doc.add_argument("--expect-workers", metavar="NAMES", help="comma-separated node names")
    doc.add_argument("--flower-url", metavar="URL", help="Flower's base URL")
    doc.add_argument("--flower-auth-file", metavar="FILE", help="file with user:password")
    doc.add_argument("--timeout", type=float, default=5.0, help="seconds per probe")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="also write the verdicts and certificate expiry in Prometheus' text format to "
        "PATH (*.prom, for node exporter's textfile collector; docs/monitoring.md)",
    )
    doc.set_defaults(func=_doctor)
    _add_dead_letters(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
