"""PerTurn: what a turn of the loop adds is committed together, nothing is lost or committed twice, and an error in
a commit reaches the run's task group."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskGroup

from batchgen.engine.per_turn import PerTurn


async def test_items_added_in_one_turn_are_committed_together_and_later_ones_after() -> None:
    commits: list[list[int]] = []
    committing = anyio.Event()
    release = anyio.Event()
    tg_box: list[TaskGroup] = []

    async def commit(batch: list[int]) -> None:
        commits.append(batch)
        if len(commits) == 1:
            committing.set()
            await release.wait()  # items added while this commit runs must wait for the next one

    batcher: PerTurn[int] = PerTurn(commit, lambda: tg_box[0])
    async with anyio.create_task_group() as tg:
        tg_box.append(tg)
        batcher.add(1)
        batcher.add(2, 3)  # the same turn: no checkpoint between the adds
        await committing.wait()
        batcher.add(4)
        batcher.add(5)
        release.set()
    assert commits == [[1, 2, 3], [4, 5]]
    assert len(batcher) == 0


async def test_each_turn_gets_its_own_commit_once_the_last_one_is_done() -> None:
    commits: list[list[str]] = []
    tg_box: list[TaskGroup] = []

    async def commit(batch: list[str]) -> None:
        commits.append(batch)

    batcher: PerTurn[str] = PerTurn(commit, lambda: tg_box[0])
    async with anyio.create_task_group() as tg:
        tg_box.append(tg)
        for turn in range(3):
            batcher.add(f"{turn}a", f"{turn}b")
            for _ in range(3):  # let the commit of this turn run to its end
                await anyio.lowlevel.checkpoint()
    assert commits == [["0a", "0b"], ["1a", "1b"], ["2a", "2b"]]


async def test_an_error_in_a_commit_reaches_the_task_group() -> None:
    tg_box: list[TaskGroup] = []

    async def commit(batch: list[int]) -> None:
        raise RuntimeError(f"refused {batch}")

    batcher: PerTurn[int] = PerTurn(commit, lambda: tg_box[0])
    with pytest.raises(BaseExceptionGroup) as caught:
        async with anyio.create_task_group() as tg:
            tg_box.append(tg)
            batcher.add(7)
    assert "refused [7]" in str(caught.value.exceptions[0])
