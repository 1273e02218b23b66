"""Taking up work: the jobs a runner works on are the ones it claimed (engine/runners.py).

A runner claims batches as its pending line runs low, first the jobs already sent (an earlier or lost runner's:
reconciled, polled or downloaded, never resent blindly), then pending ones in order. So it holds a page of the
run in memory, never the whole run: a run of a million jobs costs a runner what a run of a thousand does. On
SQLite the runner is the run's only one and its pages are large; on PostgreSQL they are small, so that runners
share the work evenly, and it sweeps now and then: runners whose lease ran out are ended and their jobs let go, for
whoever claims next. A runner stays until no job of the run is unfinished anywhere, so that there is always someone
to take over from a runner that dies; the run's submit rate is shared out among the live runners.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from batchgen.engine.book import JobBook
from batchgen.engine.options import RunOptions
from batchgen.engine.scheduler import SubmitGate
from batchgen.engine.store import JobState, Lease, Store

EVERYTHING = 1 << 30
LOOK_EVERY_S = 1.0  # with nothing to do: how often to look for work (released by a lost runner) and sweep


class Claimer:
    """Claims jobs for this runner, sweeps for lost runners, and says when the run is done for everyone."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        book: JobBook,
        options: RunOptions,
        take_up: Callable[[list[JobState]], None],
        gate: SubmitGate,
    ) -> None:
        self.store, self.lease, self.book, self.options = store, lease, book, options
        self.take_up, self.gate = take_up, gate
        self.shared = store.postgres
        self.batch = (
            max(16, 2 * options.concurrency) if self.shared else max(options.claim_page, 4 * options.concurrency)
        )
        self.sweep_every = max(0.5, options.lease_seconds / 6)
        self.live_runners = 1
        self.drained = False  # the last claim found nothing: the pending line refills only when the book is done

    def claim(self, *, only_sent: bool = False) -> int:
        """Claim the next batch (with `only_sent`, of jobs already sent only) and start working on it; how many
        jobs came."""
        jobs = self.store.claim_jobs(self.lease, self.batch, only_sent=only_sent)
        if jobs:
            self.take_up(jobs)
        return len(jobs)

    async def until_done(self) -> None:
        """Return when this runner holds nothing more and no job of the run is unfinished anywhere (or submitting
        stopped: budget, credits). Meanwhile keep the pending line fed and sweep."""
        last_sweep = float("-inf")
        while True:
            if self.book.done:
                if self.book.halted_submits is not None:
                    return
                if self.claim():
                    continue
                if self.store.unfinished_elsewhere(self.lease) == 0:
                    return
            elif len(self.book.pending) < self.batch // 2 and self.book.halted_submits is None and not self.drained:
                self.drained = self.claim() == 0  # nothing pending is left unclaimed: no need to ask on every wake
            now = time.monotonic()
            if self.shared and now - last_sweep >= self.sweep_every:
                last_sweep = now
                self._share_rate(self.store.sweep(self.lease))
                # the jobs a lost runner had sent, whatever this runner's line holds: they count against the run's
                # concurrency until someone finishes them, and when they fill every place no runner could send,
                # so none would run its line low enough to claim them
                self.claim(only_sent=True)
                self.drained = False  # a lost runner's pending jobs may have been let go
            self.book.changed = anyio.Event()
            with anyio.move_on_after(LOOK_EVERY_S if self.book.done else min(LOOK_EVERY_S, self.sweep_every)):
                await self.book.changed.wait()

    def _share_rate(self, live: int) -> None:
        """The run's submit rate is the account's: each of `live` runners sends its share."""
        self.live_runners = max(1, live)
        rate = self.options.submit_rate
        self.gate.interval = self.live_runners / rate if rate > 0 else 0.0
