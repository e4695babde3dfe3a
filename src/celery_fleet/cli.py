"""The ``celery-fleet`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from . import envfile
from .settings import SettingsError, load, masked

EXIT_OK, EXIT_FINDINGS, EXIT_CANNOT = 0, 1, 2


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

    try:
        env = _read_env(args)
        auth = None
        if args.flower_auth_file:
            auth = Path(args.flower_auth_file).read_text(encoding="utf-8").strip()
        options = doctor.Options(
            expect_workers=[w for w in (args.expect_workers or "").split(",") if w],
            flower_url=args.flower_url,
            flower_auth=auth,
            timeout=args.timeout,
        )
        results = doctor.run(env, options)
    except (SettingsError, envfile.EnvFileError, OSError) as exc:
        print(textwrap.fill(f"error: cannot check: {exc}", width=100), file=sys.stderr)
        return EXIT_CANNOT
    if args.json:
        json.dump(doctor.as_json(results), sys.stdout, indent=2)
        print()
    else:
        print(doctor.render(results))
    return doctor.exit_status(results)


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
        "1 findings, 2 cannot check.",
    )
    doc.add_argument("--env-file", metavar="FILE", help="the app's env file (celery.env)")
    doc.add_argument("--expect-workers", metavar="NAMES", help="comma-separated node names")
    doc.add_argument("--flower-url", metavar="URL", help="Flower's base URL")
    doc.add_argument("--flower-auth-file", metavar="FILE", help="file with user:password")
    doc.add_argument("--timeout", type=float, default=5.0, help="seconds per probe")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.set_defaults(func=_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
