"""The stream's trust, as a table of what happened and what mode follows; the poll schedule it falls back to."""

from __future__ import annotations

import pytest

from batchgen.core.sse import SSEDecoder
from batchgen.core.stream_health import (
    FIRST_PROBE_S,
    FRESH_TO_RETURN,
    PollSchedule,
    StreamHealth,
    StreamMode,
)

M = StreamMode


def replay(steps: list[tuple[str, float, tuple[object, ...]]], **kwargs: object) -> StreamHealth:
    health = StreamHealth(**kwargs)  # type: ignore[arg-type]
    for method, now, args in steps:
        getattr(health, method)(now, *args)
    return health


@pytest.mark.parametrize(
    ("steps", "mode"),
    [
        ([], M.CONNECTING),
        ([("connected", 0, ())], M.UNPROVEN),
        ([("connected", 0, ()), ("received", 1, ())], M.LIVE),  # a keep-alive proves it
        ([("connected", 0, ()), ("check", 22, ())], M.UNPROVEN),  # quiet, within 1.5 keep-alive periods
        ([("connected", 0, ()), ("check", 23, ())], M.BUFFERED),  # connected, nothing delivered: not delivering
        ([("connected", 0, ()), ("received", 1, ()), ("check", 24, ())], M.BUFFERED),  # went quiet
        ([("connected", 0, ()), ("received", 1, ()), ("check", 23, ())], M.LIVE),
        ([("connected", 0, ()), ("event", 1, (30.0, True))], M.BUFFERED),  # arrived 30 s after the end: late
        ([("connected", 0, ()), ("event", 1, (0.5, True))], M.LIVE),
        ([("connected", 0, ()), ("event", 1, (None, True))], M.LIVE),  # no timestamps: not judged late
        # a poll finds what the stream never told, long after the connection opened
        ([("connected", 0, ()), ("received", 1, ()), ("missed", 60, (10.0,))], M.BUFFERED),
        # ... but one that finished while the stream was down, or just now, is not the stream's fault
        ([("connected", 0, ()), ("received", 1, ()), ("missed", 12, (10.0,))], M.LIVE),
        ([("connected", 0, ()), ("received", 1, ()), ("missed", 60, (2.0,))], M.LIVE),
        ([("connected", 0, ()), ("received", 1, ()), ("missed", 60, (None,))], M.LIVE),
        ([("connected", 0, ()), ("disconnected", 5, ())], M.CONNECTING),
        # buffered stays buffered across a reconnect until the new connection delivers
        ([("connected", 0, ()), ("check", 30, ()), ("disconnected", 31, ())], M.BUFFERED),
        ([("connected", 0, ()), ("check", 30, ()), ("disconnected", 31, ()), ("connected", 32, ())], M.UNPROVEN),
    ],
)
def test_the_stream_is_trusted_only_while_it_delivers(
    steps: list[tuple[str, float, tuple[object, ...]]], mode: StreamMode
) -> None:
    health = replay(steps)
    assert health.mode is mode
    assert health.polls_needed is (mode is not M.LIVE)


def test_a_buffered_stream_returns_after_timely_news_in_a_row_only() -> None:
    health = replay([("connected", 0, ()), ("check", 30, ())])
    assert health.mode is M.BUFFERED and "delivered nothing for 30 s" in health.reasons[-1]
    for i in range(FRESH_TO_RETURN - 1):
        health.event(31 + i, 0.5, True)
    health.event(40, 0.5, False)  # a poll told us first: it does not count, and the run of fresh ones restarts
    assert health.mode is M.BUFFERED
    for i in range(FRESH_TO_RETURN - 1):
        health.event(41 + i, 0.5, True)
    assert health.mode is M.BUFFERED
    health.event(50, 0.5, True)
    assert health.mode is M.LIVE


def test_probes_of_a_buffered_stream_back_off() -> None:
    health = replay([("connected", 0, ()), ("check", 30, ())])
    assert not health.probe_due(30 + FIRST_PROBE_S - 1)
    assert health.probe_due(30 + FIRST_PROBE_S)
    assert not health.probe_due(30 + FIRST_PROBE_S + 1)  # the next one waits twice as long
    assert health.probe_due(30 + FIRST_PROBE_S * 3)


def test_poll_only_is_polling_whatever_happens() -> None:
    health = replay([("connected", 0, ()), ("received", 1, ()), ("check", 100, ())], poll_only=True)
    assert health.mode is M.POLLING and health.polls_needed


def test_the_schedule_starts_from_the_docs_cadence_then_learns_the_run() -> None:
    schedule = PollSchedule()
    assert schedule.next_poll_at("image", 100.0, None) == 105.0
    assert schedule.next_poll_at("image", 100.0, 105.0) == 110.0  # nothing learned yet: a 5 s poller's cadence
    assert schedule.next_poll_at("video", 100.0, None) == 130.0
    for duration in [2.0] * 9 + [3.0]:
        schedule.finished("image", duration)
    assert schedule.typical_s("image") == 3.0  # the longest of what this run's images took
    assert schedule.next_poll_at("image", 100.0, None) == 103.0
    assert schedule.next_poll_at("image", 100.0, 103.0) == 104.0  # then every quarter of it, at least 1 s
    schedule.finished("image", 60.0)  # one outlier: the first poll waits twice the median at most
    assert schedule.typical_s("image") == 4.0
    for _ in range(50):
        schedule.finished("video", 600.0)
    assert schedule.next_poll_at("video", 0.0, 700.0) == 730.0  # at most 30 s apart


def test_the_schedule_takes_a_floor_and_a_first_guess() -> None:
    schedule = PollSchedule(first_after_s=0.3, min_step_s=0.05)
    assert schedule.next_poll_at("image", 10.0, None) == pytest.approx(10.3)
    assert schedule.next_poll_at("image", 10.0, 10.3) == pytest.approx(10.6)
    schedule.finished("image", 0.3)
    assert schedule.next_poll_at("image", 10.0, 10.3) == pytest.approx(10.375)


@pytest.mark.parametrize(
    ("lines", "events"),
    [
        (["event: a", "data: {}", ""], [("a", "{}")]),
        ([": keep-alive", ""], []),
        (["data: x", "data: y", ""], [("message", "x\ny")]),
        (["event: a", ""], []),  # no data: nothing dispatched, and the type does not leak into the next
        (["event: a", "", "data: 1", ""], [("message", "1")]),
        (["event:a", "data:1", "id: 7", "retry: 10", ""], [("a", "1")]),
        (["data:  two spaces", ""], [("message", " two spaces")]),
    ],
)
def test_sse_framing(lines: list[str], events: list[tuple[str, str]]) -> None:
    decoder = SSEDecoder()
    assert [e for e in (decoder.feed(line) for line in lines) if e is not None] == events
