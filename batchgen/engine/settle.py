"""After a run: what the event stream never says (actual cost, start time, result_url), read from the history."""

from __future__ import annotations

import math

from batchgen.engine.client import OxenClient
from batchgen.engine.store import Store
from batchgen.errors import ApiError

PAGE_SIZE = 1000


async def settle_details(client: OxenClient, store: Store, run_id: int) -> None:
    """Fill cost, started_at, enqueued_at and result_url from GET /api/ai/generations in pages of 1,000 rows:
    a handful of requests for the whole run instead of one per job. Best effort: the estimate stands in."""
    missing = store.jobs_missing_details(run_id)
    pages = math.ceil(len(missing) / PAGE_SIZE) + 1 if missing else 0
    for page in range(1, pages + 1):
        try:
            rows, total_pages = await client.history_page(page=page, page_size=PAGE_SIZE)
        except ApiError:
            return
        for remote, cost in rows:
            job_id = missing.pop(remote.generation_id, None)
            if job_id is None:
                continue
            fields: dict[str, object] = {
                "cost": cost,
                "started_at": remote.started_at,
                "enqueued_at": remote.enqueued_at,
            }
            if remote.result_url:
                fields["result_url"] = remote.result_url
            store.update_job(job_id, None, **{k: v for k, v in fields.items() if v is not None})
        if not missing or page >= total_pages:
            return
