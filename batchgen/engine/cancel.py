"""`batchgen cancel`: stop a run's generations remotely, keep what is already paid for, and record it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import anyio

from batchgen.core.backoff import backoff
from batchgen.core.jobs import JobStatus
from batchgen.core.matching import Window
from batchgen.core.remote import RemoteGeneration
from batchgen.engine.claims import EVERYTHING
from batchgen.engine.client import OxenClient, RetryPolicy
from batchgen.engine.downloads import destination, fetch_result, refresh_result_url
from batchgen.engine.reconcile import read_candidates
from batchgen.engine.store import JobState, Lease, RunInfo, Store
from batchgen.errors import ApiError, AuthError

IN_FLIGHT = [JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.UNKNOWN]


@dataclass(slots=True)
class Cancelled:
    remote: int = 0  # generations the API confirmed cancelling
    local: int = 0  # jobs marked cancelled
    kept: int = 0  # generations that had already succeeded: paid for, so downloaded and their jobs succeeded
    left: list[str] = field(default_factory=list)  # jobs left in flight: why, one line each


async def cancel_run(
    store: Store, run: RunInfo, base_url: str, api_key: str | None, *, retry: RetryPolicy | None = None
) -> Cancelled:
    """DELETE every in-flight generation and read it back: a cancelled one cancels its job; one that had already
    succeeded is paid for, so it is downloaded and its job succeeds; a DELETE that failed leaves the job in flight
    (and says so). Pending jobs are cancelled too. The run must have no live runner (RunLockedError): on
    PostgreSQL too, where other runners would go on sending what this cancels."""
    lease = store.acquire_run(run.id, exclusive=True)
    done = Cancelled()
    try:
        store.claim_jobs(lease, EVERYTHING)  # every earlier runner was ended: their jobs are this one's now
        async with OxenClient(base_url, api_key, retry=retry) as client:
            await client.check_access()
            pending = store.load_jobs(run.id, [JobStatus.PENDING])
            store.mark_cancelled_by_user(lease, [j.id for j in pending])
            done.local += len(pending)
            in_flight = store.load_jobs(run.id, IN_FLIGHT)
            await _claim_lost_enqueues(client, store, lease, in_flight, done)
            limiter = anyio.CapacityLimiter(16)

            async def one(job: JobState) -> None:
                async with limiter:
                    await _cancel_one(client, store, lease, run, job, done)

            async with anyio.create_task_group() as tg:
                for job in in_flight:
                    if job.generation_id:
                        tg.start_soon(one, job)
    finally:
        store.release_run(lease)
    return done


async def _claim_lost_enqueues(
    client: OxenClient, store: Store, lease: Lease, jobs: list[JobState], done: Cancelled
) -> None:
    """Jobs whose enqueue reply never arrived: adopt what they created (to cancel it), or cancel them when the
    queue shows nothing; when the queue cannot be read they are left as they are."""
    lost = [j for j in jobs if j.status in (JobStatus.SUBMITTING, JobStatus.UNKNOWN)]
    for model in sorted({j.model for j in lost}):
        group = [j for j in lost if j.model == model]
        try:
            candidates = await read_candidates(client, model, namespace=group[0].namespace, since=None)
        except AuthError:
            raise
        except ApiError as exc:
            done.left += [f"job {j.key}: the queue could not be read to find its enqueue ({exc})" for j in group]
            continue
        window = Window(clock_offset=client.clock_offset, server_now=client.server_now())
        found = store.claim_orphans(lease, group, candidates, window)
        for job in group:
            if job.id in found:
                job.generation_id, job.status = found[job.id].generation_id, JobStatus.QUEUED
        never_created = [j.id for j in group if j.id not in found]
        store.mark_cancelled_by_user(lease, never_created)
        done.local += len(never_created)


async def _cancel_one(
    client: OxenClient, store: Store, lease: Lease, run: RunInfo, job: JobState, done: Cancelled
) -> None:
    generation_id = job.generation_id or ""
    try:
        if await client.cancel(generation_id):
            done.remote += 1
        remote = await client.current_state(generation_id)
    except AuthError:
        raise
    except ApiError as exc:
        done.left.append(f"job {job.key}: generation {generation_id} could not be cancelled ({exc}); still in flight")
        return
    if remote is not None and remote.status == "succeeded":
        await _keep_paid_result(client, store, lease, run, job, remote, done)
    elif remote is not None and remote.status in ("queued", "processing"):
        done.left.append(f"job {job.key}: generation {generation_id} is still {remote.status} after the cancel")
    else:
        store.mark_cancelled_by_user(lease, [job.id])
        done.local += 1


async def _keep_paid_result(
    client: OxenClient,
    store: Store,
    lease: Lease,
    run: RunInfo,
    job: JobState,
    remote: RemoteGeneration,
    done: Cancelled,
) -> None:
    job.result_url = remote.result_url or job.result_url
    job.download_url = remote.download_url or job.download_url
    download = bool(run.settings.get("download", True))
    store.mark_succeeded_remotely(lease, job, remote, download=download)
    done.kept += 1
    if not download:
        return
    out_dir = Path(run.out_dir)
    await anyio.Path(out_dir).mkdir(parents=True, exist_ok=True)
    dest = destination(out_dir, run.name, job)
    fetched = await fetch_result(
        client,
        job,
        dest,
        attempts=3,
        backoff=lambda n: backoff(n, initial=0.5, maximum=5.0),
        refresh=lambda: refresh_result_url(client, store, lease, job),
    )
    if fetched is None:
        store.mark_download_failed(
            lease, job, error="the result could not be downloaded (it is paid for: resume retries it)"
        )
    else:
        store.mark_downloaded(lease, job, path=str(dest), sha256=fetched[0], size=fetched[1])
