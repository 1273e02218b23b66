"""Admission control for enqueues: a concurrency limit that shrinks on 429 and grows back (AIMD), a submission
rate limit, and a shared pause that a Retry-After or an outage sets for every submitter at once."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio


class AdaptiveLimit:
    """At most `limit` generations in flight; halves on a 429, grows by one per `grow_after` clean enqueues."""

    def __init__(self, maximum: int, *, grow_after: int = 10) -> None:
        self.maximum = max(1, maximum)
        self.limiter = anyio.CapacityLimiter(self.maximum)
        self.grow_after = grow_after
        self._clean = 0

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    def shrink(self) -> None:
        self.limiter.total_tokens = max(1, math.ceil(self.limit / 2))
        self._clean = 0

    def succeeded(self) -> None:
        self._clean += 1
        if self._clean >= self.grow_after and self.limit < self.maximum:
            self.limiter.total_tokens = self.limit + 1
            self._clean = 0

    async def acquire(self, holder: object) -> None:
        await self.limiter.acquire_on_behalf_of(holder)

    def try_acquire(self, holder: object) -> bool:
        try:
            self.limiter.acquire_on_behalf_of_nowait(holder)
        except anyio.WouldBlock:
            return False
        return True

    def release(self, holder: object) -> bool:
        try:
            self.limiter.release_on_behalf_of(holder)
        except RuntimeError:
            return False  # it held no slot (resumed beyond the limit): nothing to give back
        return True


class SubmitGate:
    """Spaces enqueues at least 1/rate apart and holds every submitter during a shared pause."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.clock, self.sleep = clock, sleep  # injected by tests: no test waits on the wall clock
        self._next = 0.0
        self._paused_until = 0.0
        self._lock = anyio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self.clock() + seconds)

    async def wait_turn(self) -> None:
        async with self._lock:
            while True:
                wait = max(self._paused_until, self._next) - self.clock()
                if wait <= 0:
                    break
                await self.sleep(wait)
            self._next = self.clock() + self.interval
