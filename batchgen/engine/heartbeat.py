"""Keeping the run's lease: a heartbeat, and a check before every enqueue that the lease still holds.

The lease is the runner's row in `runners` with its fencing token. A heartbeat that changes no row means another runner
took the run over: this one stops at once. Before an enqueue, a lease last confirmed longer ago than a third of
its length (a pause, a closed laptop) is confirmed again first, so a runner woken past its lease sends nothing.
"""

from __future__ import annotations

import time

import anyio

from batchgen.engine.book import Halt, JobBook
from batchgen.engine.store import Lease, Store
from batchgen.errors import BatchgenError


def lease_clock() -> float:
    """Seconds that keep counting while the machine sleeps (CLOCK_BOOTTIME), so a lease check after a laptop's
    sleep sees the time that passed; monotonic where there is no such clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class LeaseKeeper:
    """Confirms the lease every sixth of its length, and on demand before an enqueue."""

    def __init__(self, store: Store, lease: Lease, book: JobBook) -> None:
        self.store, self.lease, self.book = store, lease, book
        self.confirmed_at = lease_clock()

    async def heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.lease.seconds / 6)
            self.confirm()

    def ensure(self) -> None:
        """Before an enqueue: re-confirm a lease not confirmed for a third of its length (Halt when it is lost)."""
        if lease_clock() - self.confirmed_at > self.lease.seconds / 3:
            self.confirm()

    def confirm(self) -> None:
        try:
            self.store.confirm_lease(self.lease)
        except BatchgenError as exc:
            self.book.halted_submits = str(exc)
            raise Halt(exc) from exc
        self.confirmed_at = lease_clock()
