"""Filters shared by every celery-fleet role: the collection's filter plugins, called by their
full name (``celery_fleet.fleet.fleet_password_problem``) in the checkout and in an installed
collection alike (a role inside a collection cannot carry plugins of its own).

``fleet_password_problem``: the one password check of the fleet. It returns "" for a good
password and otherwise the reason, so that a role's ``assert`` can name the variable and
say what to change.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

ALPHABET = re.compile(r"^[A-Za-z0-9._~+=-]+$")
# Words that mark a value copied from an example instead of generated.
PLACEHOLDERS = re.compile(r"change.?me|placeholder|example|secret|password|redacted|todo|xxx")
# Runs of this many consecutive characters (abcdefgh, 98765432) are a keyboard pattern.
RUN = 6
# A generated 16-character password has ~14 distinct characters; 6 is far below that.
MIN_DISTINCT = 6


def _longest_run(value: str) -> int:
    best = run = 1
    step = 0
    for a, b in itertools.pairwise(value):
        diff = ord(b) - ord(a)
        if diff in (1, -1) and (run == 1 or diff == step):
            run, step = run + 1, diff
        else:
            run, step = (2, diff) if diff in (1, -1) else (1, 0)
        best = max(best, run)
    return best


def _repeats_a_short_unit(value: str) -> bool:
    return any(
        len(value) % size == 0 and value == value[:size] * (len(value) // size)
        for size in range(1, 5)
    )


def fleet_password_problem(value: Any, min_length: int = 16) -> str:
    """'' if ``value`` is a usable password, else what is wrong with it."""
    text = "" if value is None else str(value)
    if not text:
        return "is empty"
    if len(text) < int(min_length):
        return f"has {len(text)} characters; use at least {int(min_length)}"
    if not ALPHABET.match(text):
        return "has characters outside A-Z a-z 0-9 . _ ~ + = - (they break URLs and config files)"
    if PLACEHOLDERS.search(text.lower()):
        return "looks like a placeholder copied from an example"
    if len(set(text)) < MIN_DISTINCT or _repeats_a_short_unit(text):
        return "repeats a few characters"
    if _longest_run(text) >= RUN:
        return "contains a run such as abcdef or 123456"
    return ""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"fleet_password_problem": fleet_password_problem}
