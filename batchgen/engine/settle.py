"""After a run: what the event stream never says (actual cost, start time, result_url, final status), read from
the history into the ledger and the jobs."""

from __future__ import annotations

import math

from batchgen.engine.client import OxenClient
from batchgen.engine.store import Lease, Store
from batchgen.errors import ApiError

PAGE_SIZE = 1000


async def settle_details(client: OxenClient, store: Store, lease: Lease) -> None:
    """Fill cost, times, status and result_url of the run's generations from GET /api/ai/generations in pages of
    1,000 rows: a handful of requests for the whole run instead of one per job. Best effort: the estimate stands
    in for a cost the history does not give."""
    missing = store.generations_missing_details(lease.run_id)
    pages = math.ceil(len(missing) / PAGE_SIZE) + 1 if missing else 0
    for page in range(1, pages + 1):
        try:
            rows, total_pages = await client.history_page(page=page, page_size=PAGE_SIZE)
        except ApiError:
            return
        mine = [(remote, cost) for remote, cost in rows if remote.generation_id in missing]
        store.record_remote_rows(lease, mine)
        missing.difference_update(remote.generation_id for remote, _ in mine)
        if not missing or page >= total_pages:
            return
