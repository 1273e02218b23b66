"""The commands that read a run from the database: runs, cancel, unused, export and report (status: status.py)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.table import Table

from batchgen.cli.app import ExitCode, app, stderr, stdout, styled, terminate_as_interrupt, write_stdout
from batchgen.cli.options import (
    BaseUrlOption,
    ColsAxisOption,
    DbOption,
    RowsAxisOption,
    RunArgument,
    existing_store,
    settings,
    split_export,
)
from batchgen.core.export import write_csv, write_jsonl
from batchgen.core.jobs import JobStatus
from batchgen.engine.exports import write_export
from batchgen.engine.outputs import write_atomically
from batchgen.engine.report_pages import job_media_file, write_report


@app.command()
def runs(db: DbOption = None) -> None:
    """Every run in the database, newest first."""
    table = Table("run", "jobs", "succeeded", "created", "base url")
    with existing_store(db) as store:
        for info in store.list_runs():
            counts = store.status_counts(info.id)
            table.add_row(
                info.name, str(sum(counts.values())), str(counts.get(JobStatus.SUCCEEDED, 0)),
                info.created_at.strftime("%Y-%m-%d %H:%M"), info.base_url,
            )  # fmt: skip
    stdout.print(table)


@app.command()
def cancel(run_name: RunArgument = None, db: DbOption = None, base_url: BaseUrlOption = None) -> None:
    """Cancel every in-flight generation of a run remotely and mark its unfinished jobs cancelled."""
    import anyio  # here, with the HTTP client: `status` and `export` never load them

    from batchgen.engine.cancel import cancel_run

    with existing_store(db) as store:
        info = store.get_run(run_name)
        api = settings(db=db, base_url=base_url, run=info)
        done = anyio.run(lambda: cancel_run(store, info, api.base_url, api.api_key))
    stderr.print(f"cancelled {done.remote} generation(s) remotely and {done.local} job(s) in total")
    if done.kept:
        stderr.print(f"{done.kept} generation(s) had already succeeded (paid for): their jobs succeeded, files kept")
    for line in done.left:
        stderr.print(styled("left in flight:", "yellow", f" {line}"))
    if done.left:
        stderr.print("run `batchgen cancel` again to retry, or `batchgen resume` to let them finish")
        raise SystemExit(ExitCode.FAILED_JOBS)


@app.command()
def unused(
    run_name: RunArgument = None,
    db: DbOption = None,
    base_url: BaseUrlOption = None,
    download: Annotated[
        bool, typer.Option("--download", help="Fetch them into OUT_DIR/unused/ (they are paid for).")
    ] = False,
) -> None:
    """Generations the run paid for (or still runs) that no job uses: listed, and fetched with --download."""
    with existing_store(db) as store:
        info = store.get_run(run_name)
        rows = store.unused_generations(info.id)
        for row in rows:
            cost = row.cost if row.cost is not None else row.estimated_cost
            stdout.print(f"{row.generation_id}\t{row.remote_status}\t{row.model}\t${cost or 0.0:.2f}\t{row.how}")
        if not download or not rows:
            stderr.print(f"{len(rows)} paid-but-unused generation(s) in run {info.name!r}")
            return
        import anyio  # here, with the HTTP client: `status` and `export` never load them

        from batchgen.engine.unused import fetch_unused

        api = settings(db=db, base_url=base_url, run=info)
        dest = Path(info.out_dir) / "unused"
        fetched = anyio.run(lambda: fetch_unused(store, info, api.base_url, api.api_key, dest))
    for item in fetched:
        stderr.print(f"{item.generation_id}: {item.path}" if item.path else f"{item.generation_id}: {item.reason}")


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


@app.command("export")
def export_command(
    run: RunArgument = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="File to write; '-' or none: stdout.")] = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="csv or jsonl (default: jsonl for a .jsonl/.ndjson -o, else csv)."),
    ] = None,
    db: DbOption = None,
    oxen_repo: Annotated[
        Path | None,
        typer.Option(
            "--oxen-repo",
            metavar="DIR",
            help="Commit the run's files, results table and manifest to the local Oxen repository DIR (made if "
            "need be; only what changed). Needs pip install 'batchgen[oxen]'.",
        ),
    ] = None,
) -> None:
    """Export one row per job (CSV or JSONL); works during a run and after it."""
    to_stdout = output in (None, "-")
    if fmt is None:
        jsonl = not to_stdout and str(output).endswith((".jsonl", ".ndjson"))
        fmt = ExportFormat.JSONL if jsonl else ExportFormat.CSV
    writer = write_jsonl if fmt is ExportFormat.JSONL else write_csv
    written = 0
    with terminate_as_interrupt(), existing_store(db) as store:  # stopped, it leaves no part of a file behind
        info = store.get_run(run)
        name = info.name
        overview = store.overview(info.id)  # money and the unused in one read over indexes: any size
        money, unused = overview.money, overview.unused
        done = None
        if oxen_repo is not None:
            from batchgen.engine.oxen_repo import commit_run  # here: a plain export never loads it

            done = commit_run(store, info, oxen_repo)
        if done is None or output is not None:  # with --oxen-repo alone the dataset was the export asked for
            # a large run's second half is written by a helper process, on the second core
            part_dir = None if to_stdout else Path(str(output)).absolute().parent
            split = split_export(part_dir)
            with store.job_row_stream(info.id) as jobs:  # the rows stream, none held

                def write(out: TextIO) -> None:
                    nonlocal written
                    written = write_export(jobs, writer, out, rewindable=not to_stdout, split=split)

                if to_stdout:
                    write_stdout(write)
                else:
                    write_atomically(Path(str(output)), write)
    if done is not None:
        if done.commit_id is None:
            stderr.print(f"nothing changed in run {name} since commit {done.head} of {done.repo}: no new commit")
        else:
            changes = f"{len(done.added)} added, {len(done.modified)} modified, {len(done.removed)} removed"
            stderr.print(f"committed {done.commit_id} to {done.repo} ({changes}): {done.message}")
        if output is None:
            return
    if not to_stdout:
        stderr.print(f"exported {written} job(s) of run {name} to {output}")
    budget = f" of a ${money.budget:.2f} budget" if money.budget is not None else ""
    stderr.print(f"spent ${money.spent:.2f}, reserved ${money.reserved:.2f}{budget}")
    if unused:
        lead = f"{len(unused)} generation(s) are paid for but used by no job (${money.unused_cost:.2f})"
        stderr.print(styled(lead, "yellow", f": `batchgen unused {name} --download` fetches them"))


@app.command("report")
def report_command(
    run: RunArgument = None,
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="HTML file (default: report.html in the run's output dir).")
    ] = None,
    rows_axis: RowsAxisOption = None,
    cols_axis: ColsAxisOption = None,
    db: DbOption = None,
) -> None:
    """Write a self-contained HTML contact sheet of a run: two axes as a grid, the others as sections. Past
    10,000 jobs it is an index page with the sections' pages (1,000 jobs each at most) in a folder next to it."""
    with existing_store(db) as store:
        info = store.get_run(run)
        target = Path(output) if output else Path(info.out_dir) / "report.html"
        out_dir = info.out_dir
        written = write_report(
            store, info, target, media_file=lambda row: job_media_file(row, out_dir), rows_axis=rows_axis,
            cols_axis=cols_axis,
        )  # fmt: skip
    pages = f", {written.pages:,} page(s) in {written.folder}" if written.folder else ""
    stderr.print(f"wrote {target} ({written.jobs:,} job(s) of run {info.name}{pages})")
