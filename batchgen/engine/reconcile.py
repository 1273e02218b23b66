"""Lost enqueue replies: reading back what the API holds, and deciding, for each job, between "it was created:
adopt it" and "nothing was created: send it again". Choosing among the candidates is the store's
(`Store.claim_orphans`, in one transaction with the ledger), never this module's."""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio

from batchgen.core.jobs import JobStatus
from batchgen.core.matching import Window
from batchgen.core.remote import RemoteGeneration
from batchgen.engine.book import Halt, JobBook, request_key
from batchgen.engine.client import OxenClient
from batchgen.engine.options import RunOptions
from batchgen.engine.store import JobState, Lease, Store
from batchgen.engine.tracker import NOT_FOUND_READS, Tracker
from batchgen.errors import ApiError, AuthError

FINISHED = ("succeeded", "failed", "cancelled")
HISTORY_PAGES = 5  # at most this many pages of 1,000 history rows are read per reconciliation
HISTORY_PAGE_SIZE = 1000


async def read_candidates(
    client: OxenClient, model: str, *, namespace: str | None, since: datetime | None, finished_too: bool = True
) -> list[RemoteGeneration]:
    """Every generation of `model` the API shows that a lost enqueue may have created: the active list, the
    finished lists, and (where finished rows leave the list, as under the legacy API) the history.

    Raises ApiError when the queue cannot be read: then nothing can be decided."""
    found: dict[str, RemoteGeneration] = {}
    for generation in await client.list_queue(model=model, namespace=namespace):
        found[generation.generation_id] = generation
    if finished_too:
        for status in FINISHED:
            for generation in await client.list_queue(model=model, status=status, namespace=namespace):
                found.setdefault(generation.generation_id, generation)
        for generation in await _recent_history(client, model, since):
            found.setdefault(generation.generation_id, generation)
    return list(found.values())


async def _recent_history(client: OxenClient, model: str, since: datetime | None) -> list[RemoteGeneration]:
    """The history's rows of `model`, page by page until the rows are older than `since` (when the pages are
    newest first, as far as can be seen) or HISTORY_PAGES pages were read."""
    rows: list[RemoteGeneration] = []
    for page in range(1, HISTORY_PAGES + 1):
        page_rows, total_pages = await client.history_page(page=page, page_size=HISTORY_PAGE_SIZE)
        rows += [g for g, _cost in page_rows if g.model in (None, model)]
        times = [g.enqueued_at for g, _cost in page_rows if g.enqueued_at is not None]
        newest_first = len(times) < 2 or times[0] >= times[-1]
        if page >= total_pages or not page_rows:
            break
        if since is not None and newest_first and times and max(times) < since:
            break
    return rows


class Reconciler:
    """Decides enqueues whose reply was lost: adopt what they created, or send them again once the queue has
    been read NOT_FOUND_READS times without a trace of them; `unknown` when it cannot be read at all.

    One reconciliation at a time per request, so identical requests (repeats) never race for the same candidates;
    each adoption is reserved in the ledger in the transaction that assigns it (`Store.claim_orphans`)."""

    def __init__(
        self, store: Store, lease: Lease, client: OxenClient, book: JobBook, tracker: Tracker, options: RunOptions
    ) -> None:
        self.store, self.lease, self.client, self.book, self.tracker = store, lease, client, book, tracker
        self.options = options
        self.locks: dict[str, anyio.Lock] = {}

    async def reconcile(self, group: list[JobState], *, resubmit_undecidable: bool = False) -> list[JobState]:
        """Settle the group; return the jobs that were not created (back in the pending line, to be sent again)."""
        async with self.locks.setdefault(request_key(group[0]), anyio.Lock()):
            left = list(group)
            empty_reads = 0
            for attempt in range(1, self.options.reconcile_tries + 1):
                await anyio.sleep(self.options.reconcile_grace * attempt)
                try:
                    found = await self._claim(left)
                except AuthError as exc:
                    raise Halt(exc) from exc
                except ApiError:
                    continue
                for job in left:
                    if job.id in found:
                        self.book.adopted(job, found[job.id].generation_id)
                        await self.tracker.adopted(job, found[job.id])
                left = [j for j in left if j.id not in found]
                if not left:
                    return []
                empty_reads += 1
                if empty_reads >= NOT_FOUND_READS:
                    # the queue, read again and again after the failed POST, has no such generation
                    error = "the enqueue created nothing (the queue was read twice); sending it again"
                    self.store.mark_not_created(
                        self.lease, [j.id for j in left], error=error, error_class="not_created"
                    )
                    self.book.back_in_line(left)
                    return left
            if resubmit_undecidable:
                self.store.resubmit_unknown(self.lease, [j.id for j in left])
                self.book.back_in_line(left)
                return left
            error = "the enqueue reply was lost and the queue could not be read to check whether it was created"
            self.store.mark_undecidable(self.lease, [j.id for j in left], error=error)
            for job in left:
                self.book.moved(job, JobStatus.UNKNOWN)
            return []

    async def _claim(self, jobs: list[JobState]) -> dict[int, RemoteGeneration]:
        offset = self.client.clock_offset
        earliest = min((j.intent_at for j in jobs if j.intent_at), default=None)
        since = None if earliest is None else earliest + (offset or timedelta(0)) - Window(clock_offset=offset).slack
        candidates = await read_candidates(self.client, jobs[0].model, namespace=jobs[0].namespace, since=since)
        window = Window(clock_offset=self.client.clock_offset, server_now=self.client.server_now())
        return self.store.claim_orphans(self.lease, jobs, candidates, window)
