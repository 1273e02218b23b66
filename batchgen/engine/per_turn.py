"""Writes that arrive in the same turn of the event loop, committed in one transaction.

A wave of enqueues sent together comes back together; a chunk of the event stream holds many completions;
downloads finish within a millisecond of each other. One fenced write each was most of the runner's store time
(issue 15): the fence, the hold and the commit cost more than the update. `PerTurn.add` queues items and returns
at once (the event stream's reader goes on to its next event); a task of the run commits, after one checkpoint,
everything queued by then, and again while more came in meanwhile. An item waits at most one turn of the loop and
one commit; the caller marks it as on its way (a job whose success is heard is not heard twice).

What an item's commit would have done on its own it still does (its own fence, its own refusal): a batch is a
list of items applied in one transaction. An error in a commit ends the task, and with it the run's task group
(the run stops, as when the write was the caller's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio.lowlevel
from anyio.abc import TaskGroup

T = TypeVar("T")


class PerTurn(Generic[T]):
    """Items added in the same turn of the loop, handed to `commit` together by a task started in the task group
    `task_group()` gives (the owner's, set when the run starts)."""

    def __init__(
        self, commit: Callable[[list[T]], Awaitable[None]], task_group: Callable[[], TaskGroup | None]
    ) -> None:
        self._commit = commit
        self._task_group = task_group
        self._items: list[T] = []
        self._draining = False

    def __len__(self) -> int:
        return len(self._items)

    def add(self, *items: T) -> None:
        self._items.extend(items)
        if self._draining:
            return  # the task committing now takes them in its next round
        tg = self._task_group()
        assert tg is not None, "PerTurn.add before the run's task group started"
        self._draining = True
        tg.start_soon(self._drain)

    async def _drain(self) -> None:
        try:
            while True:
                await anyio.lowlevel.checkpoint()  # items added in this turn join the transaction
                batch, self._items = self._items, []
                if not batch:
                    return
                await self._commit(batch)
        finally:
            self._draining = False
