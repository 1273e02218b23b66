"""`batchgen cancel`: stop a run's generations remotely and record it."""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from batchgen.core.jobs import JobStatus
from batchgen.engine.client import OxenClient
from batchgen.engine.reconcile import find_orphans
from batchgen.engine.store import RunInfo, Store
from batchgen.errors import ApiError, AuthError


@dataclass(frozen=True, slots=True)
class Cancelled:
    remote: int  # generations the API confirmed cancelling
    local: int  # jobs marked cancelled


async def cancel_run(store: Store, run: RunInfo, base_url: str, api_key: str | None) -> Cancelled:
    """DELETE every in-flight generation, then mark every unfinished job cancelled (pending ones too)."""
    owner = store.acquire_run(run.id)
    remote = 0
    try:
        unfinished = store.load_jobs(
            run.id, [JobStatus.PENDING, JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.UNKNOWN]
        )
        async with OxenClient(base_url, api_key) as client:
            limiter = anyio.CapacityLimiter(16)

            async def one(generation_id: str) -> None:
                nonlocal remote
                async with limiter:
                    try:
                        if await client.cancel(generation_id):
                            remote += 1
                    except AuthError:
                        raise
                    except ApiError:
                        pass

            submitting = [j for j in unfinished if j.status is JobStatus.SUBMITTING]
            try:  # generations created by enqueues whose reply never arrived: only active ones need stopping
                found = await find_orphans(client, submitting, store.owned_generation_ids(), finished_too=False)
            except AuthError:
                raise
            except ApiError:
                found = {}
            orphans = {job_id: generation.generation_id for job_id, generation in found.items()}
            async with anyio.create_task_group() as tg:
                for job in unfinished:
                    generation_id = job.generation_id or orphans.get(job.id)
                    if generation_id:
                        tg.start_soon(one, generation_id)
        for job in unfinished:
            adopted = {"generation_id": orphans[job.id]} if job.id in orphans else {}
            store.update_job(
                job.id, JobStatus.CANCELLED, error="cancelled by the user", error_class="cancelled", **adopted
            )
    finally:
        store.release_run(run.id, owner)
    return Cancelled(remote, len(unfinished))
