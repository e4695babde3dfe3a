"""The ``celery-fleet`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

from . import envfile
from .settings import SettingsError, load, masked

EXIT_OK, EXIT_FINDINGS, EXIT_CANNOT = 0, 1, 2


def _settings(args: argparse.Namespace) -> int:
    try:
        env = envfile.read(args.env_file) if args.env_file else dict(os.environ)
        settings = load(env)
    except (SettingsError, envfile.EnvFileError) as exc:
        print(textwrap.fill(f"error: {exc}", width=100), file=sys.stderr)
        return EXIT_CANNOT
    json.dump(masked(settings), sys.stdout, indent=2, sort_keys=True, default=str)
    print()
    return EXIT_OK


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
