"""`batchgen run` and `batchgen resume`: the progress line, a clean stop on SIGINT/SIGTERM, the closing words."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, NoReturn

import anyio
import typer

from batchgen import errors
from batchgen.api import RunSummary, resume_async, run_async
from batchgen.cli.app import ExitCode, app, stderr, stdout, styled
from batchgen.cli.options import BaseUrlOption, DbOption, RunArgument, SubmitRateOption, existing_store, split_export
from batchgen.cli.progress_view import ProgressView
from batchgen.core.jobs import JobStatus
from batchgen.core.progress import Progress
from batchgen.engine.manifests import load_manifest
from batchgen.engine.outputs import write_results_csv

ConcurrencyOption = Annotated[
    int | None, typer.Option("-j", "--concurrency", min=1, help="Generations in flight at most.")
]
RetryFailedOption = Annotated[bool, typer.Option("--retry-failed", help="Submit failed and cancelled jobs again.")]


@app.command()
def run(
    manifest: Annotated[Path, typer.Argument(help="The YAML manifest.")],
    db: DbOption = None,
    base_url: BaseUrlOption = None,
    emulate: Annotated[
        bool, typer.Option("--emulate", help="Run against the built-in emulator (free, offline).")
    ] = False,
    concurrency: ConcurrencyOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Download directory (default: the manifest's output).")
    ] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", help="Refuse to spend more than this (USD).")] = None,
    retry_failed: RetryFailedOption = False,
    no_download: Annotated[bool, typer.Option("--no-download", help="Do not download results.")] = False,
    poll_only: Annotated[
        bool, typer.Option("--poll-only", help="Track completions by polling, without the event stream.")
    ] = False,
    submit_rate: SubmitRateOption = 10.0,
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale",
            min=0.0001,
            max=1.0,
            help="With --emulate: how fast the emulated API works (0.01: a 5-minute clip takes 3 s; 1: real time).",
        ),
    ] = 0.01,
) -> None:
    """Plan, then run a manifest. Running it again continues the same run; finished jobs are never redone."""
    summary = _run_with_signals(
        lambda view: run_async(
            manifest, db=db, base_url=base_url, emulate=emulate, time_scale=time_scale, concurrency=concurrency,
            out=out, max_cost=max_cost, retry_failed=retry_failed, download=not no_download, poll_only=poll_only,
            on_progress=view, submit_rate=submit_rate, results_split=split_export(),
        )
    )  # fmt: skip
    _finish(summary, db, None if summary else _run_name_of(manifest))


@app.command()
def resume(
    run_name: RunArgument = None,
    db: DbOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    retry_failed: RetryFailedOption = False,
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
            results_split=split_export(),
        )
    )  # fmt: skip
    _finish(summary, db, run_name)


def _run_with_signals(work: Callable[[Callable[[Progress], None]], Awaitable[RunSummary]]) -> RunSummary | None:
    """Run `work` until done; on SIGINT/SIGTERM stop cleanly and return None."""
    view = ProgressView()
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


def _run_name_of(manifest: Path) -> str | None:
    try:
        return load_manifest(manifest).name
    except errors.BatchgenError:
        return None


def _finish(summary: RunSummary | None, db: str | None, run_name: str | None) -> NoReturn:
    """Say how the run ended, print the results CSV's path on stdout, and exit with the run's code."""
    if summary is None:
        _interrupted(db, run_name)
    counts = ", ".join(f"{n} {s.value}" for s, n in summary.counts.items())
    stderr.print(f"run {summary.run!r}: {counts} in {summary.elapsed_s:.1f} s ({summary.requests} API requests)")
    if summary.retired_jobs:
        stderr.print(f"{summary.retired_jobs} pending job(s) no longer in the manifest were cancelled")
    if summary.oxen_commit is not None:
        done = summary.oxen_commit
        if done.commit_id is None:
            stderr.print(f"the Oxen repository {done.repo} already had this run's results (commit {done.head})")
        else:
            stderr.print(f"committed {done.commit_id} to the Oxen repository {done.repo}: {done.message}")
    if summary.stopped_reason:
        stderr.print(styled("stopped submitting:", "yellow", f" {summary.stopped_reason}"))
    unknown = summary.counts.get(JobStatus.UNKNOWN, 0)
    if unknown:
        lead = f"{unknown} job(s) have an enqueue whose outcome could not be checked"
        stderr.print(
            styled(
                lead,
                "yellow",
                "; look for them in your Oxen queue, then `batchgen resume --resubmit-unknown` to send them again",
            )
        )
    if summary.exit_code == ExitCode.FAILED_JOBS:
        stderr.print(
            f"some jobs did not succeed: `batchgen export {summary.run}` shows why; `--retry-failed` retries them"
        )
    stdout.print(str(summary.csv_path))
    raise SystemExit(summary.exit_code)


def _interrupted(db: str | None, run_name: str | None) -> NoReturn:
    """After Ctrl-C: write the results so far, and say how to continue."""
    with existing_store(db) as store:
        info = store.get_run(run_name)
        csv_path = write_results_csv(store, info, Path(info.out_dir), split_export())
    stdout.print(str(csv_path))
    again = (
        f"batchgen run {info.manifest_path} --emulate"
        if info.settings.get("emulated")
        else f"batchgen resume {info.name}"
    )
    stderr.print(f"interrupted. Nothing is lost; continue with:  {again}")
    raise SystemExit(ExitCode.INTERRUPTED)
