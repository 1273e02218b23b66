"""Hold/release: a test keeps generations running until it says they may finish.

With `EmulatorConfig(hold=True)` every generation stops at a gate once it is `processing` (started_at set,
credits held, or its start-time failure decided but not yet reported) and waits there until the test calls
`RunningEmulator.release()`. The gate is awaited on the server's event loop and opened from any thread
(tests run in the main thread), so nothing here depends on how long anything takes: no timers, no polling.

    with running_emulator(EmulatorConfig(hold=True, duration_s=0)) as emu:
        ...                     # enqueue; wait until len(emu.held) == 2
        emu.release(1)          # the oldest held generation goes on; later arrivals keep waiting
        emu.release()           # everything held goes on, and the gate stays open from now on
        emu.hold()              # close the gate again for generations that reach it later
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

import anyio


@dataclass(eq=False)
class _Waiter:
    generation_id: str
    loop: asyncio.AbstractEventLoop
    event: anyio.Event


class Hold:
    """The gate. Thread-safe: `wait` runs on the server's loop, everything else on any thread.

    `alive(generation_id)` says whether a held generation can still finish (it was not cancelled meanwhile);
    a generation that cannot is let go for free, without using up a release. `on_hold(generation_id)` is
    told of each generation that stops at the gate (the ledger's "hold" record).
    """

    def __init__(
        self, *, holding: bool, alive: Callable[[str], bool], on_hold: Callable[[str], None] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._holding = holding
        self._permits = 0  # releases not yet used: the next arrivals pass without waiting
        self._waiting: list[_Waiter] = []
        self._alive = alive
        self._on_hold = on_hold

    @property
    def holding(self) -> bool:
        with self._lock:
            return self._holding

    async def wait(self, generation_id: str) -> bool:
        """Pass the gate: at once when it is open or a release is left over, else once released.

        Returns whether the generation was held (waited) at all.
        """
        with self._lock:
            if not self._holding:
                return False
            if self._permits > 0:
                self._permits -= 1
                return False
            waiter = _Waiter(generation_id, asyncio.get_running_loop(), anyio.Event())
            self._waiting.append(waiter)
        if self._on_hold is not None:
            self._on_hold(generation_id)
        try:
            await waiter.event.wait()
        finally:
            with self._lock:  # cancelled (server shutdown): no longer held
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        return True

    def held(self) -> list[str]:
        """Ids of the generations waiting at the gate that can still finish, oldest first."""
        with self._lock:
            return [w.generation_id for w in self._waiting if self._alive(w.generation_id)]

    def release(self, count: int | None = None) -> list[str]:
        """Let `count` held generations go on (oldest first), or all of them and open the gate (None).

        When fewer than `count` are held, the rest of the releases go to the next generations to arrive.
        Generations cancelled while held go on too, without counting. Returns the ids released.
        """
        if count is not None and count < 0:
            raise ValueError("release count must be >= 0")
        with self._lock:
            if count is None:
                self._holding = False
                self._permits = 0
                woken, self._waiting = self._waiting, []
            else:
                woken, kept = [], []
                left = count
                for waiter in self._waiting:
                    if not self._alive(waiter.generation_id):
                        woken.append(waiter)
                    elif left > 0:
                        woken.append(waiter)
                        left -= 1
                    else:
                        kept.append(waiter)
                self._waiting = kept
                self._permits += left
        for waiter in woken:
            _set_soon(waiter)
        return [w.generation_id for w in woken]

    def close(self) -> None:
        """Close the gate again: generations that reach it from now on wait; unused releases are dropped."""
        with self._lock:
            self._holding = True
            self._permits = 0


def _set_soon(waiter: _Waiter) -> None:
    """Wake a waiter from whatever thread we are on (an anyio.Event must be set on its own loop)."""
    if waiter.loop.is_closed():
        return
    try:
        waiter.loop.call_soon_threadsafe(waiter.event.set)
    except RuntimeError:  # the loop closed between the check and the call (shutdown)
        pass
