"""Fetching a paid result to disk: the event's presigned URL first, then result_url, refreshed from the status
row when both are refused. The file is streamed to a part file that survives a cut (engine/partial.py), checked,
hashed and renamed by the client; every retry continues where the last one stopped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from batchgen.core.backoff import backoff
from batchgen.core.jobs import JobStatus
from batchgen.core.progress import safe_file_stem
from batchgen.engine.book import Halt, JobBook
from batchgen.engine.client import OxenClient
from batchgen.engine.options import RunOptions
from batchgen.engine.per_turn import PerTurn
from batchgen.engine.records import Fetched
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
    on_bytes: Callable[[int], None] | None = None,
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
                return await client.download(url, dest, generation_id=job.generation_id or "", on_bytes=on_bytes)
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


class Downloader:
    """Fetches each paid result as soon as it exists, a bounded number at a time, and commits the outcome."""

    def __init__(
        self, store: Store, lease: Lease, client: OxenClient, book: JobBook, out_dir: Path, run_name: str,
        options: RunOptions,
    ) -> None:  # fmt: skip
        self.store, self.lease, self.client, self.book = store, lease, client, book
        self.out_dir, self.run_name, self.options = out_dir, run_name, options
        self.limiter = anyio.CapacityLimiter(options.download_concurrency)
        self.tg: TaskGroup | None = None
        # results on disk, their commit waiting for this turn's batch (engine/per_turn.py)
        self._fetched = PerTurn(self._commit_fetched, lambda: self.tg)

    def start(self, job: JobState) -> None:
        """Download `job`'s result in the background (the run's task group)."""
        assert self.tg is not None, "the downloader is not started"
        self.tg.start_soon(self.download, job)

    async def download(self, job: JobState) -> None:
        """Fetch the result now (presigned URLs expire). A paid result that cannot be fetched stays recoverable:
        it is marked failed with error_class "download", and the next run or resume fetches it again."""
        dest = destination(self.out_dir, self.run_name, job)
        async with self.limiter:
            try:
                fetched = await fetch_result(
                    self.client, job, dest, attempts=self.options.download_attempts,
                    backoff=lambda n: backoff(n, initial=self.options.backoff_initial, maximum=self.options.backoff_max),
                    refresh=lambda: refresh_result_url(self.client, self.store, self.lease, job),
                    on_bytes=self.book.received,
                )  # fmt: skip
            except OutputError as exc:
                raise Halt(exc) from exc
        if fetched is None:
            error = "the result could not be downloaded (it is paid for: resume retries it)"
            self.store.mark_download_failed(self.lease, job, error=error)
            self.book.moved(job, JobStatus.FAILED)
            return
        digest, size = fetched
        self._fetched.add(Fetched(job, str(dest), digest, size))

    async def _commit_fetched(self, batch: list[Fetched]) -> None:
        """The downloads finished in one turn of the loop, recorded in one transaction."""
        self.store.mark_many_downloaded(self.lease, batch)
        for fetched in batch:
            self.book.moved(fetched.job, JobStatus.SUCCEEDED)
