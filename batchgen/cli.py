"""The command line: the only module that reads argv and the environment, prints, and exits.

Exit codes: 0 all jobs succeeded; 1 finished with failed jobs; 2 invalid input (nothing enqueued);
3 API unreachable or key refused; 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import click
import typer
from rich.console import Console

from batchgen import errors

EXIT_OK = 0
EXIT_FAILED_JOBS = 1
EXIT_INVALID = 2
EXIT_API = 3
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="batchgen",
    help="Run large, resumable, budgeted batches of generations against Oxen.ai's async media API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)
_verbose = False


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show tracebacks of internal errors.")] = False,
) -> None:
    global _verbose
    _verbose = verbose


def exit_code_for(error: errors.BatchgenError) -> int:
    """The documented exit code for a user-facing error."""
    if isinstance(error, errors.AuthError | errors.ApiUnreachableError):
        return EXIT_API
    if isinstance(error, errors.ApiError):
        return EXIT_API
    return EXIT_INVALID


def _die(error: errors.BatchgenError) -> NoReturn:
    if isinstance(error, errors.ManifestError):
        for problem in error.problems:
            stderr.print(f"[red]error:[/red] {problem}", markup=True, highlight=False)
        stderr.print(f"{len(error.problems)} problem(s); nothing was enqueued.")
    else:
        stderr.print(f"[red]error:[/red] {error}")
    raise SystemExit(exit_code_for(error))


# ---- commands are registered by the modules below; each lives in its own section ----


# ---- export and report commands ----
# This section's imports sit here (not at the top) so that it stays one self-contained block of cli.py.
import contextlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from enum import StrEnum  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TextIO  # noqa: E402

from batchgen.core.export import write_csv, write_jsonl  # noqa: E402
from batchgen.core.jobs import JobRow  # noqa: E402

_DbOption = Annotated[
    str | None, typer.Option("--db", help="State database (default: $BATCHGEN_DB, else state/batchgen.db).")
]
_RunArgument = Annotated[str | None, typer.Argument(help="Run name (default: the most recent run).")]


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


def _read_run(db: str | None, run: str | None) -> tuple[str, str, list[JobRow]]:
    """The run's name, its output directory and its jobs, read from the state store."""
    from batchgen.api import default_db
    from batchgen.engine.store import Store

    store = Store.open(Path(db) if db else default_db(), create=False)
    try:
        info = store.get_run(run)
        return info.name, info.out_dir, store.job_rows(info.id)
    finally:
        store.close()


def _write_atomically(path: Path, write: Callable[[TextIO], object]) -> None:
    """Write to a temp file in the same directory, then os.replace: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise errors.OutputError(f"cannot write {path}: {exc.strerror} (check the directory is writable)") from exc
    try:
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp makes a private (0600) file; the result should not be
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise errors.OutputError(f"cannot write {path}: {exc.strerror}") from exc
        raise


def _write_stdout(write: Callable[[TextIO], object]) -> None:
    """Write UTF-8 to stdout whatever the locale; a closed pipe (`| head`) is not an error."""
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    try:
        write(out)
        out.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
    finally:
        out.detach()


def _output_file(output_path: str, out_dir: str) -> Path | None:
    """Where a job's file is on disk: as stored, or relative to the output directory's parent, or inside it."""
    stored = Path(output_path)
    for candidate in (stored, Path(out_dir).parent / stored, Path(out_dir) / stored.name):
        if candidate.is_file():
            return candidate
    return None


@app.command("export")
def export_command(
    run: _RunArgument = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="File to write; '-' or none: stdout.")] = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="csv or jsonl (default: jsonl for a .jsonl/.ndjson -o, else csv)."),
    ] = None,
    db: _DbOption = None,
) -> None:
    """Export one row per job (CSV or JSONL); works during a run and after it."""
    name, _, rows = _read_run(db, run)
    to_stdout = output in (None, "-")
    if fmt is None:
        jsonl = not to_stdout and str(output).endswith((".jsonl", ".ndjson"))
        fmt = ExportFormat.JSONL if jsonl else ExportFormat.CSV
    writer = write_jsonl if fmt is ExportFormat.JSONL else write_csv

    def write(out: TextIO) -> None:
        writer(rows, out)

    if to_stdout:
        _write_stdout(write)
    else:
        _write_atomically(Path(str(output)), write)
        stderr.print(f"exported {len(rows)} job(s) of run {name} to {output}")


@app.command("report")
def report_command(
    run: _RunArgument = None,
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="HTML file (default: report.html in the run's output dir).")
    ] = None,
    rows_axis: Annotated[str | None, typer.Option("--rows", help="Axis down the rows (default: automatic).")] = None,
    cols_axis: Annotated[
        str | None, typer.Option("--cols", help="Axis across the columns (default: automatic).")
    ] = None,
    db: _DbOption = None,
) -> None:
    """Write a self-contained HTML contact sheet of a run: two axes as a grid, the others as sections."""
    from batchgen.core.report import relative_href, render_report

    name, out_dir, rows = _read_run(db, run)
    target = Path(output) if output else Path(out_dir) / "report.html"
    report_dir = target.absolute().parent

    def media_href(row: JobRow) -> str | None:
        found = _output_file(row.output_path, out_dir) if row.output_path else None
        return relative_href(found.absolute(), report_dir) if found else None

    html = render_report(
        rows, title=f"batchgen · {name}", media_href=media_href, rows_axis=rows_axis, cols_axis=cols_axis
    )
    _write_atomically(target, lambda out: out.write(html))
    stderr.print(f"wrote {target} ({len(rows)} job(s) of run {name})")


# ---- emulator command ----


@app.command("emulator")
def emulator_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    key: Annotated[str, typer.Option(help="The API key the emulator accepts.")] = "emulator-key",
    credits_usd: Annotated[
        float, typer.Option("--credits", help="Starting balance of the key's account (USD).")
    ] = 1000.0,
    time_scale: Annotated[
        float, typer.Option("--time-scale", help="Multiplier on documented model run times (1 = real time).")
    ] = 0.01,
    seed: Annotated[int, typer.Option(help="Seed of every random choice and fault decision.")] = 0,
    duration_s: Annotated[
        float | None, typer.Option("--duration-s", help="Fixed run time of every generation (0 = instant).")
    ] = None,
    queue_delay_s: Annotated[
        float | None, typer.Option("--queue-delay-s", help="Fixed time from enqueue to processing.")
    ] = None,
    fault: Annotated[
        list[str] | None, typer.Option("--fault", help="A fault knob, NAME=VALUE (repeatable), e.g. sse_drop_rate=0.2.")
    ] = None,
    faults_preset: Annotated[str | None, typer.Option("--faults", help="A fault preset: chaos.")] = None,
) -> None:
    """Run the built-in emulator of Oxen's API on loopback, for tests, demos and benchmarks."""
    from batchgen.emulator import Account, EmulatorConfig, Faults, serve
    from batchgen.emulator.faults import parse_assignment

    if faults_preset not in (None, "chaos"):
        raise typer.BadParameter(f"unknown preset {faults_preset!r}; the only preset is 'chaos'", param_hint="--faults")
    chosen = Faults.chaos(seed) if faults_preset == "chaos" else Faults()
    try:
        chosen = chosen.with_overrides(dict(parse_assignment(text) for text in fault or []))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--fault") from None
    config = EmulatorConfig(
        keys={key: Account(username="emulator", credits_usd=credits_usd)},
        seed=seed,
        time_scale=time_scale,
        duration_s=duration_s,
        queue_delay_s=queue_delay_s,
        faults=chosen,
    )
    stderr.print(f"emulator: http://{host}:{port}  key: {key}  time scale: {time_scale}  seed: {seed}")
    serve(config, host, port)


def main() -> None:
    """Console-script entry point."""
    try:
        result = app(standalone_mode=False)
    except errors.BatchgenError as error:
        _die(error)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except click.exceptions.Abort:
        raise SystemExit(EXIT_INTERRUPTED) from None
    except click.ClickException as error:
        error.show()
        raise SystemExit(EXIT_INVALID) from None
    except click.exceptions.Exit as error:
        raise SystemExit(error.exit_code) from None
    except Exception:
        if _verbose:
            raise
        import traceback

        stderr.print("[red]internal error[/red] (a bug in batchgen; run with -v for the traceback):")
        stderr.print(traceback.format_exc().strip().splitlines()[-1])
        raise SystemExit(70) from None
    raise SystemExit(result if isinstance(result, int) else EXIT_OK)


if __name__ == "__main__":
    main()
