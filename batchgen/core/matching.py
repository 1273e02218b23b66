"""Reconciling an enqueue whose reply was lost: which remote generations could be ours.

The API has no idempotency key, so a generation is ours when its model, prompt and parameters equal the job's,
it was enqueued after our intent (less a clock-skew allowance), and no other job already owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from batchgen.core.remote import RemoteGeneration

CLOCK_SKEW = timedelta(minutes=5)


def _same_value(ours: Any, theirs: Any) -> bool:
    # the row echoes parameters as the server stored them: "4" and 4 may come back either way
    return ours == theirs or str(ours) == str(theirs)


def could_be_ours(
    generation: RemoteGeneration, *, model: str, params: Mapping[str, Any], intent_at: datetime | None
) -> bool:
    """True when the generation matches the request a job sent (or may have sent) at intent_at."""
    if generation.model is not None and generation.model != model:
        return False
    prompt = params.get("prompt")
    if prompt is not None and generation.prompt is not None and generation.prompt != prompt:
        return False
    echoed = generation.params or {}
    for key, value in params.items():
        if key in ("prompt", "num_generations") or key not in echoed:
            continue
        if not _same_value(value, echoed[key]):
            return False
    if intent_at is not None and generation.enqueued_at is not None:
        return generation.enqueued_at >= intent_at - CLOCK_SKEW
    return True


def assign_orphans(
    jobs: Sequence[tuple[int, str, Mapping[str, Any], datetime | None]],
    candidates: Iterable[RemoteGeneration],
    owned: set[str],
) -> dict[int, RemoteGeneration]:
    """Give each job (id, model, params, intent_at) at most one unowned matching generation, oldest first."""
    pool = sorted(
        {c.generation_id: c for c in candidates if c.generation_id not in owned}.values(),
        key=lambda c: (c.enqueued_at is None, c.enqueued_at, c.generation_id),
    )
    taken: set[str] = set()
    result: dict[int, RemoteGeneration] = {}
    for job_id, model, params, intent_at in jobs:
        for candidate in pool:
            if candidate.generation_id in taken:
                continue
            if could_be_ours(candidate, model=model, params=params, intent_at=intent_at):
                result[job_id] = candidate
                taken.add(candidate.generation_id)
                break
    return result
