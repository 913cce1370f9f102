"""Errors that reach the user as one line and exit code 2.

Anything raised as a :class:`TunewiseError` is a problem with the user's input (a file,
a field, an option) and the message must say which, and how to fix it. The CLI prints it
as ``error: <message>`` without a traceback and exits with code 2. Any other exception is
a bug in tunewise and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TunewiseError(Exception):
    """A user-facing error: bad input, a missing file, an impossible option."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
