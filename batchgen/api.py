"""The Python API: `batchgen.run(...)` and `batchgen.resume(...)` for scripts and notebooks.

Both do what the commands of the same names do, return a RunSummary instead of printing, and raise
BatchgenError subclasses for anything a user can fix. In a notebook (a running event loop) use the `*_async`
variants with `await`.

Settings not passed in come from the environment, as for the commands (`batchgen.settings` has the table); only
the public entry points below read it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from batchgen.core.jobs import JobStatus
from batchgen.core.progress import Progress
from batchgen.engine.book import OUT_OF_CREDITS
from batchgen.engine.client import OxenClient, RetryPolicy
from batchgen.engine.options import RunOptions
from batchgen.engine.outputs import write_results_csv
from batchgen.engine.oxen_repo import DatasetCommit, check_ready, commit_run
from batchgen.engine.planning import make_plan
from batchgen.engine.runner import Runner
from batchgen.engine.store import Lease, NewJob, RunInfo, Store
from batchgen.errors import StateError
from batchgen.settings import Settings, resolve_settings


@dataclass(frozen=True, slots=True)
class RunSummary:
    """How a run ended: counts per status, where the results are, and the exit code the CLI uses."""

    run: str
    counts: dict[JobStatus, int]
    csv_path: Path | None
    out_dir: Path
    stopped_reason: str | None
    elapsed_s: float
    requests: int
    new_jobs: int = 0  # jobs this run added to the database (an edited manifest adds only its new ones)
    retired_jobs: int = 0  # pending jobs cancelled because the edited manifest no longer has them
    oxen_commit: DatasetCommit | None = None  # what `output: {oxen_repo: DIR}` committed at the end (None: not set)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def exit_code(self) -> int:
        return 0 if set(self.counts) <= {JobStatus.SUCCEEDED} else 1


@contextlib.contextmanager
def _api_endpoint(settings: Settings, emulate: bool, time_scale: float) -> Iterator[tuple[str, str | None]]:
    """The API's base URL and key: the settings', or those of a fresh built-in emulator for the call's duration."""
    if not emulate:
        yield settings.base_url, settings.require_key()  # no key (or a broken auth file): said before any request
        return
    from batchgen.emulator import EmulatorConfig, running_emulator

    # a fresh seed per emulator: like the real API, a new one never hands out an id an earlier one did
    with running_emulator(EmulatorConfig(time_scale=time_scale, seed=secrets.randbits(32))) as emu:
        yield emu.base_url, emu.api_key


async def _execute(
    store: Store,
    run: RunInfo,
    lease: Lease,
    *,
    base_url: str,
    api_key: str | None,
    options: RunOptions,
    on_progress: Callable[[Progress], None] | None,
    retry: RetryPolicy | None,
    new_jobs: int,
    retired_jobs: int = 0,
) -> RunSummary:
    out_dir = Path(run.out_dir)
    try:
        async with OxenClient(base_url, api_key, retry=retry) as client:
            outcome = await Runner(store, client, run, lease, out_dir, options, on_progress).execute()
    finally:
        store.release_run(lease)  # synchronous: a Ctrl-C cannot cut it half-way
    csv_path = write_results_csv(store, run, out_dir, options.results_split)
    oxen_repo = run.settings.get("oxen_repo")
    oxen_commit = commit_run(store, run, Path(oxen_repo)) if oxen_repo else None
    return RunSummary(
        run=run.name,
        counts=outcome.counts,
        csv_path=csv_path,
        out_dir=out_dir,
        stopped_reason=_credits_advice(outcome.stopped_reason, store, run, outcome.counts),
        elapsed_s=outcome.elapsed_s,
        requests=outcome.requests,
        new_jobs=new_jobs,
        retired_jobs=retired_jobs,
        oxen_commit=oxen_commit,
    )


def _credits_advice(reason: str | None, store: Store, run: RunInfo, counts: dict[JobStatus, int]) -> str | None:
    """A stop for want of credits says what the run spent and how to go on; any other reason stays as it is."""
    if reason is None or not reason.startswith(OUT_OF_CREDITS):
        return reason
    spent = store.money(run.id).spent
    waiting = counts.get(JobStatus.PENDING, 0)
    failed = counts.get(JobStatus.FAILED, 0)
    again = f"batchgen resume {run.name}" + (" --retry-failed" if failed else "")
    return (
        f"{reason}. This run has spent ${spent:.2f}; {waiting} job(s) were not sent"
        f"{f' and {failed} failed' if failed else ''}. Add credits at oxen.ai, then `{again}` finishes the run "
        "without paying again for what is done"
    )


async def run_async(
    manifest: str | Path,
    *,
    db: str | Path | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    emulate: bool = False,
    time_scale: float = 0.01,
    concurrency: int | None = None,
    out: str | Path | None = None,
    max_cost: float | None = None,
    retry_failed: bool = False,
    download: bool = True,
    poll_only: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    retry: RetryPolicy | None = None,
    **option_overrides: Any,
) -> RunSummary:
    """Plan the manifest (refusing invalid or over-budget plans), then run it; running it again continues it."""
    resolved = resolve_settings(os.environ, base_url=base_url, api_key=api_key, db=db)
    with _api_endpoint(resolved, emulate, time_scale) as (url, key):
        cache = resolved.model_cache(emulated=emulate)
        plan = await make_plan(manifest, base_url=url, api_key=key, state_dir=cache, max_cost=max_cost)
        plan.check()
        settings = plan.manifest.settings
        out_dir = Path(out) if out else Path(settings.out_dir)
        oxen_repo = settings.oxen_repo.absolute() if settings.oxen_repo else None
        if oxen_repo:
            check_ready()  # a missing oxenai or oxen user is said before the run spends anything, not after
        options = RunOptions(
            concurrency=concurrency or settings.concurrency,
            download=download,
            poll_only=poll_only,
        )
        options = replace(options, **option_overrides)
        store = Store.open(resolved.db)
        try:
            run = store.ensure_run(
                plan.manifest.name,
                manifest_path=str(plan.manifest.path),
                manifest_sha256=hashlib.sha256(await anyio.Path(plan.manifest.path).read_bytes()).hexdigest(),
                base_url=url,
                out_dir=str(out_dir),
                settings={
                    "concurrency": options.concurrency,
                    "download": download,
                    "poll_only": poll_only,
                    "max_cost": plan.budget,
                    "emulated": emulate,
                    **({"oxen_repo": str(oxen_repo)} if oxen_repo else {}),
                },
                budget=plan.budget,
            )
            lease = store.acquire_run(run.id, lease_seconds=options.lease_seconds)
            try:
                if emulate:  # a fresh emulator knows none of the old one's generations, which cost nothing
                    store.forget_remote(lease)
                added = store.add_jobs(lease, (NewJob(j.spec, j.estimated_cost, j.media_type) for j in plan.jobs))
                retired = store.retire_jobs(lease, {j.spec.key for j in plan.jobs})
                if retry_failed:
                    store.retry_failed(lease)
            except BaseException:
                store.release_run(lease)
                raise
            # the database holds the jobs now: the plan (at a million jobs, most of a gigabyte with the manifest's
            # rows) is not kept for the hours the run may take
            del plan
            gc.collect()
            return await _execute(
                store,
                run,
                lease,
                base_url=url,
                api_key=key,
                options=options,
                on_progress=on_progress,
                retry=retry,
                new_jobs=added,
                retired_jobs=retired,
            )
        finally:
            store.close()


async def resume_async(
    run: str | None = None,
    *,
    db: str | Path | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int | None = None,
    retry_failed: bool = False,
    resubmit_unknown: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    retry: RetryPolicy | None = None,
    **option_overrides: Any,
) -> RunSummary:
    """Finish a run from the database alone (no manifest needed): the same API, the same settings."""
    store = Store.open(resolve_settings(os.environ, db=db).db, create=False)
    try:
        info = store.get_run(run)
        settings = info.settings
        if settings.get("emulated") and not base_url:
            raise StateError(
                f"run {info.name!r} ran on the built-in emulator, which stopped with its process; "
                f"continue it with `batchgen run {info.manifest_path} --emulate`"
            )
        resolved = resolve_settings(os.environ, base_url=base_url, api_key=api_key, db=db, run_base_url=info.base_url)
        key = resolved.require_key()  # before the run is taken: no key leaves it as it was
        options = RunOptions(
            concurrency=concurrency or int(settings.get("concurrency", 4)),
            download=bool(settings.get("download", True)),
            poll_only=bool(settings.get("poll_only", False)),
            resubmit_unknown=resubmit_unknown,
        )
        options = replace(options, **option_overrides)
        lease = store.acquire_run(info.id, lease_seconds=options.lease_seconds)
        try:
            if retry_failed:
                store.retry_failed(lease)
        except BaseException:
            store.release_run(lease)
            raise
        return await _execute(
            store,
            info,
            lease,
            base_url=resolved.base_url,
            api_key=key,
            options=options,
            on_progress=on_progress,
            retry=retry,
            new_jobs=0,
        )
    finally:
        store.close()


def run(manifest: str | Path, **kwargs: Any) -> RunSummary:
    """Synchronous `run_async`."""
    result: RunSummary = anyio.run(lambda: run_async(manifest, **kwargs))
    return result


def resume(run_name: str | None = None, **kwargs: Any) -> RunSummary:
    """Synchronous `resume_async`."""
    result: RunSummary = anyio.run(lambda: resume_async(run_name, **kwargs))
    return result
