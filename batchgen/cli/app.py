"""The typer app, its two consoles, the exit codes, and the one place an error becomes a message and a code.

Exit codes (the README's table is this one):

    0    every job succeeded (and its file is on disk); any other command did what it was asked
    1    the run finished with failed, cancelled or undecidable jobs; `cancel` left generations in flight
    2    a user's mistake: bad usage, an invalid manifest or plan, over budget, an unusable state database or
         output directory (a run refused before it starts has enqueued nothing)
    3    the API is unreachable or refused the key
    4    another runner took the run over while this one was paused past its lease; this one sent nothing more
    70   internal error: a bug in batchgen (EX_SOFTWARE); one line on stderr, the traceback with -v
    130  interrupted (Ctrl-C / SIGTERM); `batchgen resume` continues

Data goes to stdout (`stdout`), everything said to the user to stderr (`stderr`). Neither console reads rich markup
or emoji codes in what it prints, since that text holds names, prompts and paths a user or the API chose (a run
named `[/x]` once crashed `status`); colour is given explicitly, with `styled`.
"""

from __future__ import annotations

import importlib
import io
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from enum import IntEnum
from typing import Annotated, Any, NoReturn, TextIO

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup
from typer.main import get_command_from_info

from batchgen import errors


class ExitCode(IntEnum):
    """What the process's exit status means (the module docstring says when each happens)."""

    OK = 0
    FAILED_JOBS = 1
    INVALID = 2
    API = 3
    LEASE_LOST = 4
    INTERNAL = 70
    INTERRUPTED = 130


# Every command, and the module whose import registers it on `app`. A command's module is imported only when the
# command is asked for (run, or listed by --help): `batchgen status` never pays for the planner, the HTTP client,
# the emulator or the gallery's server (about 0.3 s of a 1 s budget at a million jobs; BENCHMARKS.md).
COMMAND_MODULES = {
    "plan": "batchgen.cli.plan",
    "run": "batchgen.cli.running",
    "resume": "batchgen.cli.running",
    "status": "batchgen.cli.status",
    "runs": "batchgen.cli.inspection",
    "cancel": "batchgen.cli.inspection",
    "unused": "batchgen.cli.inspection",
    "export": "batchgen.cli.inspection",
    "report": "batchgen.cli.inspection",
    "serve": "batchgen.cli.serve",
    "emulator": "batchgen.cli.emulator",
    "doctor": "batchgen.cli.doctor",
}


class _Commands(MutableMapping[str, Any]):  # values: typer's click commands (its own vendored click)
    """The app's click commands by name, each made when first asked for, by importing the module that registers it."""

    def __init__(self, made: Mapping[str, Any]) -> None:
        self._made = dict(made)

    def __getitem__(self, name: str) -> Any:
        if name not in self._made and name in COMMAND_MODULES:
            importlib.import_module(COMMAND_MODULES[name])
            for info in app.registered_commands:
                command = get_command_from_info(
                    info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode
                )
                if command.name is not None:
                    self._made.setdefault(command.name, command)
        return self._made[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._made[name] = command

    def __delitem__(self, name: str) -> None:
        del self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*COMMAND_MODULES, *self._made]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*COMMAND_MODULES, *self._made]))


class _LazyGroup(TyperGroup):
    """typer's group, its commands made on demand (`_Commands`)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.commands = _Commands(self.commands)


app = typer.Typer(
    name="batchgen",
    help="Run large, resumable, budgeted batches of generations against Oxen.ai's async media API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_LazyGroup,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
stdout = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
_verbose = False


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show tracebacks of internal errors.")] = False,
) -> None:
    global _verbose
    _verbose = verbose


def styled(lead: str, style: str, rest: str = "") -> Text:
    """`lead` in `style` (e.g. "red"), then `rest` as plain text: nothing in either is read as markup."""
    return Text.assemble((lead, style), rest)


def write_stdout(write: Callable[[TextIO], object]) -> None:
    """Bulk data (an export, a plan as JSON) to stdout: UTF-8 whatever the locale, no rich rendering (which took 3x
    the time and memory for a 100,000-job plan), and a closed pipe (`| head`) is not an error."""
    sys.stdout.flush()  # whatever the console printed first stays first
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    try:
        write(out)
        out.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
    finally:
        out.detach()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM as Ctrl-C for the block: its clean-up runs (a temp file removed, a helper process stopped) and the
    exit is INTERRUPTED, where Python's default would end the process on the spot and leave them behind."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code_for(error: errors.BatchgenError) -> int:
    """The documented exit code for a user-facing error."""
    if isinstance(error, errors.ApiError):
        return ExitCode.API
    if isinstance(error, errors.LeaseLostError):
        return ExitCode.LEASE_LOST
    return ExitCode.INVALID


def main() -> None:
    """Console-script entry point. Usage errors are click's (exit 2); user errors print one clear message."""
    try:
        # standalone mode: click (typer's vendored copy) reports usage errors itself with exit code 2
        app(standalone_mode=True)
    except errors.BatchgenError as error:
        _die(error)
    except BaseExceptionGroup as group:
        found = _user_error_in(group)
        if found is None:
            _internal_error()
        _die(found)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise SystemExit(ExitCode.INTERRUPTED) from None
    except Exception:
        _internal_error()


def _die(error: errors.BatchgenError) -> NoReturn:
    """Print a user-facing error (every problem of a manifest, one per line) and exit with its code."""
    if isinstance(error, errors.ManifestError):
        for problem in error.problems:
            stderr.print(styled("error:", "red", f" {problem}"))
        stderr.print(f"{len(error.problems)} problem(s); nothing was enqueued.")
    else:
        stderr.print(styled("error:", "red", f" {error}"))
    raise SystemExit(exit_code_for(error))


def _user_error_in(group: BaseExceptionGroup[BaseException]) -> errors.BatchgenError | None:
    """The first BatchgenError inside a task group's exception group (errors raised in tasks arrive wrapped)."""
    for exc in group.exceptions:
        if isinstance(exc, errors.BatchgenError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _user_error_in(exc)
            if found is not None:
                return found
    return None


def _internal_error() -> NoReturn:
    """A bug: one line and exit 70, or (with -v) the traceback. Called only while an exception is handled."""
    if _verbose:
        raise
    stderr.print(styled("internal error", "red", " (a bug in batchgen; run with -v for the traceback):"))
    stderr.print(traceback.format_exc().strip().splitlines()[-1])
    raise SystemExit(ExitCode.INTERNAL) from None
