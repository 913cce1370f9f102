"""One-line errors for the command line: bad input exits 2 without a traceback.

Two sources, one format (``error: <message>`` on stderr):

* a command's :class:`~tunewise.errors.TunewiseError` (:func:`handle_errors` on each command);
* the option parser's own errors (a bad ``--lr abc``, a missing value, an unknown option):
  :class:`OneLineErrorGroup`, the app's command group, runs click without its standalone
  mode and formats the UsageError itself instead of Typer's usage box.

Stops end the same way: Ctrl-C exits 130 and SIGTERM (a scheduler's or ``kill``'s stop) 143,
each with one line, after the run's staging folder is removed (:class:`Terminated`).
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from tunewise.errors import TunewiseError, did_you_mean

try:  # Typer >= 0.20 ships its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older Typer runs on click itself
    from click import exceptions as click_errors

F = TypeVar("F", bound=Callable[..., Any])

# pydantic's error types (Typer >= 0.20 converts option values with pydantic) -> what was expected
_EXPECTED = {"float_parsing": "a number", "int_parsing": "an integer", "int_from_float": "a whole number",
             "bool_parsing": "true or false"}


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    first = " ".join(str(message).split("\n")[0].split())
    print(f"error: {first}", file=sys.stderr)
    return typer.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a subclass of KeyboardInterrupt, so a run unwinds
    exactly as on Ctrl-C (``outputs.staged_dir`` removes its staging folder, a sweep keeps its
    finished points) instead of dying with the folder left behind."""


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated`; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_STOPPED = ("finished work is kept, unfinished output was not published; the same command continues it "
            "(fit: add --resume; a budget sweep picks up its finished points)")


def handle_errors(fn: F) -> F:
    """Decorate a Typer command so TunewiseError becomes ``error: ...`` and exit code 2.

    Ctrl-C ends with exit code 130 and SIGTERM with 143 (128 + the signal), one line each.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except TunewiseError as err:
            raise fail(str(err), err.exit_code) from None
        except Terminated:
            raise fail(f"interrupted (SIGTERM); {_STOPPED}", 128 + signal.SIGTERM) from None
        except KeyboardInterrupt:
            raise fail(f"interrupted; {_STOPPED}", 130) from None

    return wrapper  # type: ignore[return-value]


def _sentence(text: str) -> str:
    text = " ".join(text.split()).rstrip(".")
    return text[:1].lower() + text[1:]


def _param_name(param: Any) -> str:
    """``--output-dir`` for an option (its long name), ``config`` for an argument."""
    long = [opt for opt in param.opts if opt.startswith("--")]
    return long[0] if long else str(param.human_readable_name).lower()


def _bad_value(err: Any) -> str:
    """``'abc' is not a number`` from the conversion error behind ``err``, else click's message."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover - older Typer: click's message already quotes the value
        ValidationError = ()
    cause = err.__cause__
    if isinstance(cause, ValidationError):
        first = cause.errors()[0]
        if first["type"] in _EXPECTED:
            return f"{first['input']!r} is not {_EXPECTED[first['type']]}"
    return _sentence(err.format_message() if err.param is None else err.message)


def usage_message(err: Any) -> str:
    """One line for a click UsageError: the option it is about, then what is wrong."""
    ctx = err.ctx
    hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    if isinstance(err, click_errors.NoSuchOption):
        options = [opt for param in ctx.command.params for opt in param.opts if opt.startswith("-")] if ctx else []
        return f"{err.option_name}: unknown option{did_you_mean(err.option_name, options)}{hint}"
    if isinstance(err, click_errors.BadOptionUsage):  # "Option '--lr' requires an argument."
        reason = re.sub(rf"^Option {re.escape(repr(err.option_name))} ", "", err.message)
        return f"{err.option_name}: {_sentence(reason).replace('requires an argument', 'needs a value')}"
    if isinstance(err, click_errors.BadParameter) and not isinstance(err, click_errors.MissingParameter) \
            and err.param is not None:
        return f"{_param_name(err.param)}: {_bad_value(err)}"
    return f"{_sentence(err.format_message())}{hint}"


class OneLineErrorGroup(TyperGroup):
    """The app's command group: the parser's errors print one line too (exit code 2).

    ``--help`` and a bare ``tunewise`` (which shows the help) behave as in Typer.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as err:  # the help is already printed
            sys.exit(err.exit_code)
        except click_errors.UsageError as err:
            print(f"error: {usage_message(err)}", file=sys.stderr)
            sys.exit(err.exit_code)
        except click_errors.ClickException as err:
            print(f"error: {_sentence(err.format_message())}", file=sys.stderr)
            sys.exit(err.exit_code)
        except typer.Abort:
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        # Without standalone mode click returns an Exit's code (--help, handle_errors) or the
        # command's return value (None for every tunewise command).
        sys.exit(code if isinstance(code, int) else 0)
