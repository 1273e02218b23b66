"""Noticing that the runner itself was paused (a laptop's sleep, SIGSTOP, a frozen VM): its connections may be
dead without a word, completions may have been missed, and its lease may be gone. Time is read on a clock that
keeps counting while the machine sleeps, so a sleep shows as a gap between two ticks."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from batchgen.engine.heartbeat import lease_clock

TICK_S = 1.0


class PauseWatch:
    """Calls `on_pause(seconds)` after every tick that came `after_s` or more late."""

    def __init__(
        self, after_s: float, on_pause: Callable[[float], None], clock: Callable[[], float] = lease_clock
    ) -> None:
        self.after_s, self.on_pause, self.clock = after_s, on_pause, clock
        self.pauses = 0

    async def watch(self) -> None:
        tick = min(TICK_S, self.after_s / 2)
        last = self.clock()
        while True:
            await anyio.sleep(tick)
            now = self.clock()
            gap = now - last - tick
            last = now
            if gap >= self.after_s:
                self.pauses += 1
                self.on_pause(gap)
