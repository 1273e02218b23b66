"""Reconciling an enqueue whose reply was lost: which remote generations could be ours.

The API has no idempotency key, so a generation is ours when its model, prompt and parameters equal the job's,
the server enqueued it inside the job's window (after our intent, before the reading, both on the server's clock
with a small allowance either side), and no generation in the ledger already has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from batchgen.core.remote import RemoteGeneration

KNOWN_CLOCK_SLACK = timedelta(seconds=30)  # the server's clock is known (Date header): allow its 1 s resolution
UNKNOWN_CLOCK_SLACK = timedelta(minutes=10)  # no Date header: our clock may be minutes off, either way


@dataclass(frozen=True, slots=True)
class Window:
    """When, on the server's clock, a lost enqueue can have been created.

    clock_offset is the server's clock minus ours (None when the server never said its time); server_now is the
    server's time when the candidates were read (None: no upper bound)."""

    clock_offset: timedelta | None = None
    server_now: datetime | None = None

    @property
    def slack(self) -> timedelta:
        return KNOWN_CLOCK_SLACK if self.clock_offset is not None else UNKNOWN_CLOCK_SLACK

    def contains(self, enqueued_at: datetime, intent_at: datetime) -> bool:
        """Whether a generation enqueued at `enqueued_at` (server clock) can come from an intent at `intent_at`
        (our clock)."""
        intent_on_server = intent_at + (self.clock_offset or timedelta(0))
        if enqueued_at < intent_on_server - self.slack:
            return False
        return self.server_now is None or enqueued_at <= self.server_now + self.slack


def _same_value(ours: Any, theirs: Any) -> bool:
    # the row echoes parameters as the server stored them: "4" and 4 may come back either way
    return ours == theirs or str(ours) == str(theirs)


def could_be_ours(
    generation: RemoteGeneration,
    *,
    model: str,
    params: Mapping[str, Any],
    intent_at: datetime | None,
    window: Window | None = None,
) -> bool:
    """True when the generation matches the request a job sent (or may have sent) at intent_at."""
    if generation.model is not None and generation.model != model:
        return False
    prompt = params.get("prompt")
    if prompt is not None and generation.prompt is not None and generation.prompt != prompt:
        return False
    echoed = generation.params or {}
    for key, value in params.items():
        if key in ("prompt", "num_generations", "target_namespace") or key not in echoed:
            continue
        if not _same_value(value, echoed[key]):
            return False
    if intent_at is not None and generation.enqueued_at is not None:
        return (window or Window()).contains(generation.enqueued_at, intent_at)
    return True


def assign_orphans(
    jobs: Sequence[tuple[int, str, Mapping[str, Any], datetime | None]],
    candidates: Iterable[RemoteGeneration],
    owned: set[str],
    window: Window | None = None,
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
            if could_be_ours(candidate, model=model, params=params, intent_at=intent_at, window=window):
                result[job_id] = candidate
                taken.add(candidate.generation_id)
                break
    return result
