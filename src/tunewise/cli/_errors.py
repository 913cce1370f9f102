"""One-line errors for the command line: bad input exits 2 without a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from tunewise.errors import TunewiseError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    first = " ".join(str(message).split("\n")[0].split())
    print(f"error: {first}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Decorate a Typer command so TunewiseError becomes ``error: ...`` and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TunewiseError as err:
            raise fail(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted; finished work is kept, unfinished output was not published", 130) from None

    return wrapper  # type: ignore[return-value]


def run_cli(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with the same error handling as :func:`handle_errors`."""
    return handle_errors(fn)(*args, **kwargs)
