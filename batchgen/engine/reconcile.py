"""Reading back what the API holds, for the moments the event stream cannot be trusted: an enqueue whose reply
was lost, a reconnect (no replay), a job silent for too long."""

from __future__ import annotations

from collections.abc import Sequence

from batchgen.core.matching import assign_orphans
from batchgen.core.remote import RemoteGeneration
from batchgen.engine.client import OxenClient
from batchgen.engine.store import JobState

FINISHED = ("succeeded", "failed", "cancelled")


async def find_orphans(
    client: OxenClient, jobs: Sequence[JobState], owned: set[str], *, finished_too: bool = True
) -> dict[int, RemoteGeneration]:
    """job id -> the generation its lost enqueue created, from the queue listing (active, and finished too when
    asked), matched on model, prompt, parameters and time, never one in `owned`. Raises ApiError when the queue
    cannot be read: then nothing can be decided."""
    found: dict[int, RemoteGeneration] = {}
    taken = set(owned)
    for model in sorted({j.model for j in jobs}):
        candidates = await client.list_queue(model=model)
        for status in FINISHED if finished_too else ():
            candidates += await client.list_queue(model=model, status=status)
        same_model = [(j.id, j.model, j.params, j.intent_at) for j in jobs if j.model == model]
        for job_id, generation in assign_orphans(same_model, candidates, taken).items():
            found[job_id] = generation
            taken.add(generation.generation_id)
    return found


async def current_state(client: OxenClient, generation_id: str) -> RemoteGeneration | None:
    """The generation's row; under the legacy API (404 once finished) its history row; None when the API knows
    nothing of it. Raises ApiError when it cannot be read."""
    remote = await client.get_generation(generation_id)
    if remote is None:
        details = await client.get_generation_details(generation_id)
        remote = details[0] if details else None
    return remote
