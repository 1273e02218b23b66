"""Fetching a paid result to disk: the event's presigned URL first, then result_url, refreshed from the status
row when both are refused. The file is streamed to a temporary name, checked, hashed and renamed by the client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from batchgen.core.progress import safe_file_stem
from batchgen.engine.client import OxenClient
from batchgen.engine.store import JobState, Lease, Store
from batchgen.errors import (
    ApiError,
    ApiUnreachableError,
    OutputError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)

EXTENSIONS = {"video": ".mp4", "image": ".png"}


def destination(out_dir: Path, run_name: str, job: JobState) -> Path:
    """Where a job's file goes: a name made only of [a-z0-9-], so no prompt can leave `out_dir`, and starting
    with the run's name, so two runs sharing an output directory never write the same file."""
    stem = safe_file_stem(run_name, job.key, job.prompt_slug_source)
    return out_dir / f"{stem}{EXTENSIONS.get(job.media_type, '.bin')}"


async def refresh_result_url(client: OxenClient, store: Store, lease: Lease, job: JobState) -> None:
    """Read result_url again from the status row (when the URLs at hand were refused or never known)."""
    try:
        remote = await client.get_generation(job.generation_id or "")
    except ApiError:
        return
    if remote is not None and remote.result_url:
        job.result_url = remote.result_url
        store.record_result_url(lease, job, remote.result_url)


async def fetch_result(
    client: OxenClient,
    job: JobState,
    dest: Path,
    *,
    attempts: int,
    backoff: Callable[[int], float],
    refresh: Callable[[], Awaitable[None]],
) -> tuple[str, int] | None:
    """Download the job's result to `dest`; (sha256, bytes), or None when every attempt failed.

    An unwritable destination or a full disk raises OutputError at once: retrying cannot help."""
    for attempt in range(1, attempts + 1):
        if attempt > 1 and (attempt % 3 == 0 or not job.result_url):
            await refresh()
        urls = [u for u in (job.download_url if attempt < 3 else None, job.result_url) if u]
        wait = backoff(attempt)
        for url in urls:
            try:
                return await client.download(url, dest)
            except RequestRejectedError:
                continue  # an expired presigned URL: try the next one
            except RateLimitedError as exc:
                wait = exc.retry_after if exc.retry_after is not None else wait
            except (ServerError, ApiUnreachableError):
                continue
            except OSError as exc:
                raise OutputError(f"cannot write {dest}: {exc.strerror}; fix it, then `batchgen resume`") from exc
        await anyio.sleep(wait)
    return None
