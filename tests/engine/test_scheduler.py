"""Admission control with an injected clock: no test here waits on the wall clock."""

from __future__ import annotations

import pytest

from batchgen.engine.scheduler import AdaptiveLimit, SubmitGate


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_the_gate_spaces_enqueues_at_the_rate() -> None:
    clock = FakeClock()
    gate = SubmitGate(4.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await gate.wait_turn()
    assert clock.slept == [pytest.approx(0.25), pytest.approx(0.25)]
    assert clock.now == pytest.approx(100.5)


@pytest.mark.parametrize(("pauses", "expected_wait"), [([5.0], 5.0), ([5.0, 2.0], 5.0), ([2.0, 7.0], 7.0)])
async def test_a_pause_holds_every_submitter_until_its_longest_end(pauses: list[float], expected_wait: float) -> None:
    clock = FakeClock()
    gate = SubmitGate(1000.0, clock=clock, sleep=clock.sleep)
    for seconds in pauses:
        gate.pause(seconds)
    await gate.wait_turn()
    assert sum(clock.slept) == pytest.approx(expected_wait)


async def test_a_rate_of_zero_means_no_spacing() -> None:
    clock = FakeClock()
    gate = SubmitGate(0.0, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        await gate.wait_turn()
    assert clock.slept == []


@pytest.mark.parametrize(
    ("maximum", "shrinks", "clean", "expected"),
    [
        (8, 1, 0, 4),  # a 429 halves the limit
        (8, 3, 0, 1),  # never below one
        (5, 1, 0, 3),  # rounds up
        (8, 1, 10, 5),  # grows by one after `grow_after` clean enqueues
        (8, 1, 30, 7),
        (8, 0, 50, 8),  # never above the maximum
    ],
)
async def test_the_limit_halves_on_429_and_grows_back(maximum: int, shrinks: int, clean: int, expected: int) -> None:
    limit = AdaptiveLimit(maximum, grow_after=10)
    for _ in range(shrinks):
        limit.shrink()
    for _ in range(clean):
        limit.succeeded()
    assert limit.limit == expected


async def test_a_slot_is_held_once_and_given_back_once() -> None:
    limit = AdaptiveLimit(2)
    assert limit.try_acquire("a") and limit.try_acquire("b")
    assert not limit.try_acquire("c")
    assert limit.release("a") and not limit.release("a")  # a second release of the same holder is a no-op
    assert limit.try_acquire("c")
