"""Reading back what the API holds, for the moments the event stream cannot be trusted: an enqueue whose reply
was lost, a reconnect (no replay), a job silent for too long. Choosing among what is read is the store's
(`Store.claim_orphans`, in one transaction with the ledger), never this module's."""

from __future__ import annotations

from datetime import datetime

from batchgen.core.remote import RemoteGeneration
from batchgen.engine.client import OxenClient

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


async def current_state(client: OxenClient, generation_id: str) -> RemoteGeneration | None:
    """The generation's row; under the legacy API (404 once finished) its history row; None when the API knows
    nothing of it. Raises ApiError when it cannot be read."""
    remote = await client.get_generation(generation_id)
    if remote is None:
        details = await client.get_generation_details(generation_id)
        remote = details[0] if details else None
    return remote
