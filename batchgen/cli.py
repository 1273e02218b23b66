"""The command line: the only module that reads argv and the environment, prints, and exits.

Exit codes: 0 all jobs succeeded; 1 finished with failed jobs; 2 invalid input (nothing enqueued);
3 API unreachable or key refused; 4 another runner took the run over (this one was paused past its lease);
130 interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from batchgen import errors
from batchgen.api import DEFAULT_BASE_URL, RunSummary, default_db, resume_async, run_async, write_results_csv
from batchgen.core.jobs import JobStatus
from batchgen.core.manifest import load_manifest
from batchgen.core.progress import Progress
from batchgen.engine.cancel import cancel_run
from batchgen.engine.store import Store
from batchgen.engine.unused import fetch_unused

EXIT_OK = 0
EXIT_FAILED_JOBS = 1
EXIT_INVALID = 2
EXIT_API = 3
EXIT_LEASE_LOST = 4
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
    if isinstance(error, errors.LeaseLostError):
        return EXIT_LEASE_LOST
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

# ---- run, resume, status, runs, cancel ----

DbOption = Annotated[
    Path | None, typer.Option("--db", help="State database [env BATCHGEN_DB; default state/batchgen.db].")
]
BaseUrlOption = Annotated[
    str | None, typer.Option("--base-url", help="API base URL [env BATCHGEN_BASE_URL; default https://hub.oxen.ai].")
]


SubmitRateOption = Annotated[
    float, typer.Option("--submit-rate", min=0.01, help="Enqueue requests per second at most (429s slow it further).")
]


class _ProgressView:
    """Progress on stderr: a live line on a terminal, a plain line every 10 s otherwise."""

    def __init__(self) -> None:
        self.tty = stderr.is_terminal
        self.last_plain = 0.0
        self.status: Any = None
        self.latest: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        self.latest = progress
        if self.tty:
            if self.status is None:
                self.status = stderr.status(escape(progress.line()))
                self.status.start()
            self.status.update(escape(progress.line()))
        elif time.monotonic() - self.last_plain >= 10.0:
            self.last_plain = time.monotonic()
            stderr.print(progress.line(), markup=False)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
        if self.latest is not None:
            stderr.print(self.latest.line(), markup=False)


def _run_with_signals(work: Callable[[Callable[[Progress], None]], Awaitable[RunSummary]]) -> RunSummary | None:
    """Run `work` until done; on SIGINT/SIGTERM stop cleanly and return None."""
    view = _ProgressView()
    outcome: list[RunSummary] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def do_work() -> None:
                outcome.append(await work(view))
                tg.cancel_scope.cancel()

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        stderr.print("\nstopping: no new jobs will be submitted; state is saved")
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_signals)
            tg.start_soon(do_work)

    try:
        anyio.run(main)
    finally:
        view.close()
    return outcome[0] if outcome else None


def _finish(summary: RunSummary | None, db: Path | None, run_name: str | None) -> None:
    if summary is None:
        store = Store.open(db or default_db(), create=False)
        try:
            info = store.get_run(run_name)
            csv_path = write_results_csv(store, info, Path(info.out_dir))
        finally:
            store.close()
        stdout.print(str(csv_path))
        again = (
            f"batchgen run {info.manifest_path} --emulate"
            if info.settings.get("emulated")
            else f"batchgen resume {info.name}"
        )
        stderr.print(f"interrupted. Nothing is lost; continue with:  {again}")
        raise SystemExit(EXIT_INTERRUPTED)
    counts = ", ".join(f"{n} {s.value}" for s, n in summary.counts.items())
    stderr.print(f"run {summary.run!r}: {counts} in {summary.elapsed_s:.1f} s ({summary.requests} API requests)")
    if summary.retired_jobs:
        stderr.print(f"{summary.retired_jobs} pending job(s) no longer in the manifest were cancelled")
    if summary.stopped_reason:
        stderr.print(f"[yellow]stopped submitting:[/yellow] {summary.stopped_reason}")
    unknown = summary.counts.get(JobStatus.UNKNOWN, 0)
    if unknown:
        stderr.print(
            f"[yellow]{unknown} job(s) have an enqueue whose outcome could not be checked[/yellow]; "
            "look for them in your Oxen queue, then `batchgen resume --resubmit-unknown` to send them again"
        )
    if summary.exit_code == EXIT_FAILED_JOBS:
        stderr.print(
            f"some jobs did not succeed: `batchgen export {summary.run}` shows why; `--retry-failed` retries them"
        )
    stdout.print(str(summary.csv_path))
    raise SystemExit(summary.exit_code)


@app.command()
def run(
    manifest: Annotated[Path, typer.Argument(help="The YAML manifest.")],
    db: DbOption = None,
    base_url: BaseUrlOption = None,
    emulate: Annotated[
        bool, typer.Option("--emulate", help="Run against the built-in emulator (free, offline).")
    ] = False,
    concurrency: Annotated[
        int | None, typer.Option("-j", "--concurrency", min=1, help="Generations in flight at most.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Download directory [default: the manifest's output].")
    ] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", help="Refuse to spend more than this (USD).")] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Submit failed and cancelled jobs again.")
    ] = False,
    no_download: Annotated[bool, typer.Option("--no-download", help="Do not download results.")] = False,
    poll_only: Annotated[
        bool, typer.Option("--poll-only", help="Track completions by polling, without the event stream.")
    ] = False,
    submit_rate: SubmitRateOption = 10.0,
) -> None:
    """Plan, then run a manifest. Running it again continues the same run; finished jobs are never redone."""
    summary = _run_with_signals(
        lambda view: run_async(
            manifest, db=db, base_url=base_url, emulate=emulate, concurrency=concurrency, out=out, max_cost=max_cost,
            retry_failed=retry_failed, download=not no_download, poll_only=poll_only, on_progress=view,
            submit_rate=submit_rate,
        )
    )  # fmt: skip
    _finish(summary, db, None if summary else _run_name_of(manifest))


def _run_name_of(manifest: Path) -> str | None:
    try:
        return load_manifest(manifest).name
    except errors.BatchgenError:
        return None


@app.command()
def resume(
    run_name: Annotated[str | None, typer.Argument(metavar="[RUN]", help="Run name [default: the latest].")] = None,
    db: DbOption = None,
    base_url: BaseUrlOption = None,
    concurrency: Annotated[int | None, typer.Option("-j", "--concurrency", min=1)] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Submit failed and cancelled jobs again.")
    ] = False,
    resubmit_unknown: Annotated[
        bool, typer.Option("--resubmit-unknown", help="Send again the jobs whose enqueue outcome could not be checked.")
    ] = False,
    submit_rate: SubmitRateOption = 10.0,
) -> None:
    """Finish an interrupted run from the database alone (the manifest is not needed)."""
    summary = _run_with_signals(
        lambda view: resume_async(
            run_name, db=db, base_url=base_url, concurrency=concurrency, retry_failed=retry_failed,
            resubmit_unknown=resubmit_unknown, on_progress=view, submit_rate=submit_rate,
        )
    )  # fmt: skip
    _finish(summary, db, run_name)


@app.command()
def status(
    run_name: Annotated[str | None, typer.Argument(metavar="[RUN]", help="Run name [default: the latest].")] = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    """Counts per state, cost and where the files are, for one run."""
    store = Store.open(db or default_db(), create=False)
    try:
        info = store.get_run(run_name)
        counts = store.status_counts(info.id)
        estimated = store.estimated_total(info.id)
        money = store.money(info.id)
        unused = store.unused_generations(info.id)
    finally:
        store.close()
    data = {
        "run": info.name,
        "jobs": sum(counts.values()),
        "counts": {s.value: n for s, n in counts.items()},
        "estimated_cost": round(estimated, 6),
        "cost_so_far": round(money.spent, 6),
        "spent": round(money.spent, 6),
        "reserved": round(money.reserved, 6),
        "budget": money.budget,
        "left": None if money.left is None else round(money.left, 6),
        "unused_generations": [
            {
                "generation_id": u.generation_id,
                "status": u.remote_status,
                "cost": u.cost,
                "estimated_cost": u.estimated_cost,
            }
            for u in unused
        ],
        "out_dir": info.out_dir,
        "base_url": info.base_url,
        "running": info.owner is not None,
    }
    if as_json:
        stdout.print_json(json.dumps(data))
        return
    table = Table(title=f"run {info.name}", show_header=False)
    for status_value, n in counts.items():
        table.add_row(status_value.value, str(n))
    table.add_row("spent", f"${money.spent:.2f} (estimate for every job: ~${estimated:.2f})")
    table.add_row("reserved", f"${money.reserved:.2f} in flight")
    if money.budget is not None:
        table.add_row("budget", f"${money.budget:.2f} (${money.left or 0.0:.2f} left)")
    table.add_row("files", info.out_dir)
    stdout.print(table)
    if unused:
        stderr.print(
            f"[yellow]{len(unused)} generation(s) of this run are paid for (or running) but no job uses them "
            f"(${money.unused_cost:.2f})[/yellow]: `batchgen unused {info.name} --download` fetches them"
        )


@app.command()
def runs(db: DbOption = None) -> None:
    """Every run in the database, newest first."""
    store = Store.open(db or default_db(), create=False)
    try:
        table = Table("run", "jobs", "succeeded", "created", "base url")
        for info in store.list_runs():
            counts = store.status_counts(info.id)
            table.add_row(
                info.name, str(sum(counts.values())), str(counts.get(JobStatus.SUCCEEDED, 0)),
                info.created_at.strftime("%Y-%m-%d %H:%M"), info.base_url,
            )  # fmt: skip
    finally:
        store.close()
    stdout.print(table)


@app.command()
def cancel(
    run_name: Annotated[str | None, typer.Argument(metavar="[RUN]", help="Run name [default: the latest].")] = None,
    db: DbOption = None,
    base_url: BaseUrlOption = None,
) -> None:
    """Cancel every in-flight generation of a run remotely and mark its unfinished jobs cancelled."""
    store = Store.open(db or default_db(), create=False)
    try:
        info = store.get_run(run_name)
        url = base_url or info.base_url or os.environ.get("BATCHGEN_BASE_URL") or DEFAULT_BASE_URL
        done = anyio.run(lambda: cancel_run(store, info, url, os.environ.get("OXEN_API_KEY")))
    finally:
        store.close()
    stderr.print(f"cancelled {done.remote} generation(s) remotely and {done.local} job(s) in total")
    if done.kept:
        stderr.print(f"{done.kept} generation(s) had already succeeded (paid for): their jobs succeeded, files kept")
    for line in done.left:
        stderr.print(f"[yellow]left in flight:[/yellow] {line}")
    if done.left:
        stderr.print("run `batchgen cancel` again to retry, or `batchgen resume` to let them finish")
        raise SystemExit(EXIT_FAILED_JOBS)


@app.command()
def unused(
    run_name: Annotated[str | None, typer.Argument(metavar="[RUN]", help="Run name [default: the latest].")] = None,
    db: DbOption = None,
    base_url: BaseUrlOption = None,
    download: Annotated[
        bool, typer.Option("--download", help="Fetch them into OUT_DIR/unused/ (they are paid for).")
    ] = False,
) -> None:
    """Generations the run paid for (or still runs) that no job uses: listed, and fetched with --download."""
    store = Store.open(db or default_db(), create=False)
    try:
        info = store.get_run(run_name)
        rows = store.unused_generations(info.id)
        for row in rows:
            cost = row.cost if row.cost is not None else row.estimated_cost
            stdout.print(f"{row.generation_id}\t{row.remote_status}\t{row.model}\t${cost or 0.0:.2f}\t{row.how}")
        if not download or not rows:
            stderr.print(f"{len(rows)} paid-but-unused generation(s) in run {info.name!r}")
            return
        url = base_url or info.base_url or os.environ.get("BATCHGEN_BASE_URL") or DEFAULT_BASE_URL
        dest = Path(info.out_dir) / "unused"
        fetched = anyio.run(lambda: fetch_unused(store, info, url, os.environ.get("OXEN_API_KEY"), dest))
    finally:
        store.close()
    for item in fetched:
        stderr.print(f"{item.generation_id}: {item.path}" if item.path else f"{item.generation_id}: {item.reason}")


# ---- export and report commands ----
# This section's own imports sit here, next to the code that uses them (os and Callable come from the top).
import contextlib  # noqa: E402
import io  # noqa: E402
import tempfile  # noqa: E402
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
        raise errors.BatchgenError(f"--faults: unknown preset {faults_preset!r}; the only preset is 'chaos'")
    chosen = Faults.chaos(seed) if faults_preset == "chaos" else Faults()
    try:
        chosen = chosen.with_overrides(dict(parse_assignment(text) for text in fault or []))
    except ValueError as error:
        raise errors.BatchgenError(f"--fault: {error}") from None
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


# ---- plan command ----

from decimal import Decimal  # noqa: E402

from batchgen.core.plan import Plan  # noqa: E402
from batchgen.engine.planning import make_plan  # noqa: E402

PLAN_ROWS_SHOWN = 40  # a 100,000-job table helps nobody; --json has every job


@app.command("plan")
def plan_command(
    manifest: Annotated[Path, typer.Argument(help="The manifest (YAML) to expand, validate and price.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole plan as JSON on stdout.")] = False,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="API base URL (default: $BATCHGEN_BASE_URL or hub.oxen.ai).")
    ] = None,
    emulate: Annotated[bool, typer.Option("--emulate", help="Plan against the built-in emulator.")] = False,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="Refuse (exit 2) when the estimate exceeds this many USD.")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Use only cached model entries; fetch nothing.")] = False,
    rows: Annotated[int, typer.Option("--rows", help="How many jobs the table shows.")] = PLAN_ROWS_SHOWN,
) -> None:
    """Expand, validate and price a manifest, and show the jobs. Never enqueues anything."""
    state_dir = Path(os.environ.get("BATCHGEN_STATE_DIR") or "state")
    api_key = os.environ.get("OXEN_API_KEY") or None
    url = base_url or os.environ.get("BATCHGEN_BASE_URL") or DEFAULT_BASE_URL

    async def plan_at(where: str, cache_dir: Path) -> Plan:
        return await make_plan(
            manifest, base_url=where, api_key=api_key, state_dir=cache_dir, max_cost=max_cost, offline=offline
        )

    try:
        if emulate:
            from batchgen.emulator import EmulatorConfig, running_emulator

            with running_emulator(EmulatorConfig()) as emulator:
                # The emulator's placeholder prices must never land in the real model cache.
                plan = anyio.run(plan_at, emulator.base_url, state_dir / "emulator")
        else:
            plan = anyio.run(plan_at, url, state_dir)
    except errors.ManifestError as error:
        if as_json:
            problems = [{"where": p.where, "message": p.message, "hint": p.hint} for p in error.problems]
            print(json.dumps({"valid": False, "problems": problems, "jobs": []}, indent=2))
        raise
    for warning in plan.warnings:
        stderr.print(f"[yellow]warning:[/yellow] {warning}", markup=True, highlight=False)
    if as_json:
        print(json.dumps(plan.to_json(), indent=2, ensure_ascii=False, default=str))
    else:
        _print_plan(plan, rows)
    plan.check()


def _print_plan(plan: Plan, shown: int) -> None:
    settings = plan.manifest.settings
    stdout.print(
        f"[bold]{plan.manifest.name}[/bold]: {len(plan.jobs)} job(s), concurrency {settings.concurrency}, "
        f"output {settings.out_dir}",
        markup=True,
    )
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("key", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("parameters", overflow="fold")
    table.add_column("est. cost", justify="right", no_wrap=True)
    for job in plan.jobs[: max(shown, 0)]:
        cost = "unknown" if job.estimated_cost is None else _usd(Decimal(str(job.estimated_cost)))
        table.add_row(job.spec.key, job.spec.model, _describe_params(job.spec.params, job.spec.repeat), cost)
    if plan.jobs and shown > 0:
        stdout.print(table)
    hidden = len(plan.jobs) - max(shown, 0)
    if hidden > 0:
        stdout.print(f"... and {hidden} more job(s) not shown (use --rows N, or --json for all)")
    total = _usd(plan.total_cost_exact)
    if not plan.priced:
        total = f"at least {total} ({plan.unpriced_jobs} job(s) have no price)"
    budget = f" of a ${plan.budget:,.2f} budget" if plan.budget is not None else ""
    stdout.print(f"estimated total: {total}{budget}")
    if not plan.validated:
        stdout.print("validation against the model schemas was skipped for some jobs (see warnings)")


def _usd(amount: Decimal) -> str:
    """Dollars to the cent, or to a hundredth of a cent when cents would round a real price away ($0.025)."""
    if amount == amount.quantize(Decimal("0.01")):
        return f"${amount:,.2f}"
    return f"${amount.quantize(Decimal('0.0001')).normalize():,f}"


def _describe_params(params: Any, repeat: int) -> str:
    parts = [f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in params.items()]
    if repeat:
        parts.append(f"sample #{repeat + 1}")
    text = " ".join(parts)
    return text if len(text) <= 160 else text[:157] + "..."


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
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception:
        _internal_error()


def _internal_error() -> NoReturn:
    if _verbose:
        raise
    import traceback

    stderr.print("[red]internal error[/red] (a bug in batchgen; run with -v for the traceback):")
    stderr.print(traceback.format_exc().strip().splitlines()[-1], markup=False)
    raise SystemExit(70) from None


if __name__ == "__main__":
    main()
