"""Which remote generations a lost enqueue can have created: the window on the server's clock, the request
comparison, and the one-generation-per-job assignment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from batchgen.core.matching import (
    KNOWN_CLOCK_SLACK,
    UNKNOWN_CLOCK_SLACK,
    Window,
    assign_orphans,
    could_be_ours,
)
from batchgen.core.remote import RemoteGeneration

T = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)  # our clock at the intent
SEC = timedelta(seconds=1)
MODEL = "openai-sora-2-pro"
PARAMS: dict[str, Any] = {"prompt": "an ox in snow", "seconds": "4", "size": "1280x720"}


def gen(gid: str, at: datetime | None = None, *, model: str | None = MODEL, **overrides: Any) -> RemoteGeneration:
    params = {k: v for k, v in PARAMS.items() if k != "prompt"}
    prompt = overrides.pop("prompt", PARAMS["prompt"])
    params.update(overrides)
    return RemoteGeneration(gid, "queued", model=model, prompt=prompt, enqueued_at=at, params=params)


# ---- the window --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_min", [-7, 0, 7], ids=["server-behind", "same-clock", "server-ahead"])
def test_a_known_offset_bounds_the_window_on_both_sides(offset_min: int) -> None:
    offset = timedelta(minutes=offset_min)
    intent_on_server = T + offset
    server_now = intent_on_server + 20 * SEC
    window = Window(clock_offset=offset, server_now=server_now)
    assert window.slack == KNOWN_CLOCK_SLACK
    # our own generation, created a second after the intent on the server's clock
    assert window.contains(intent_on_server + SEC, T)
    # the slack is honoured exactly at both edges
    assert window.contains(intent_on_server - KNOWN_CLOCK_SLACK, T)
    assert window.contains(server_now + KNOWN_CLOCK_SLACK, T)
    # enqueued well before our intent (someone else's identical request, or ours from an earlier attempt)
    assert not window.contains(intent_on_server - KNOWN_CLOCK_SLACK - SEC, T)
    assert not window.contains(intent_on_server - timedelta(minutes=2), T)
    # created after the candidates were read: cannot be the enqueue we are reconciling
    assert not window.contains(server_now + KNOWN_CLOCK_SLACK + SEC, T)


def test_a_server_minutes_ahead_refuses_what_our_clock_alone_would_accept() -> None:
    # 4 minutes after our intent on our clock, but 3 minutes before it on the server's clock (5 min ahead)
    window = Window(clock_offset=timedelta(minutes=5))
    assert not window.contains(T + timedelta(minutes=4), T)
    assert window.contains(T + timedelta(minutes=5, seconds=2), T)


def test_a_server_minutes_behind_accepts_its_own_generation() -> None:
    # the server's clock is 5 min behind ours: our generation is stamped 'before' our intent, yet it is ours
    window = Window(clock_offset=timedelta(minutes=-5))
    assert window.contains(T - timedelta(minutes=5) + 2 * SEC, T)
    assert not window.contains(T - timedelta(minutes=5) - timedelta(minutes=1), T)


def test_an_unknown_offset_uses_the_wider_slack_both_sides() -> None:
    window = Window(clock_offset=None, server_now=T + timedelta(minutes=1))
    assert window.slack == UNKNOWN_CLOCK_SLACK > KNOWN_CLOCK_SLACK
    assert window.contains(T - UNKNOWN_CLOCK_SLACK, T)
    assert window.contains(T - timedelta(minutes=9), T)
    assert not window.contains(T - UNKNOWN_CLOCK_SLACK - SEC, T)
    assert window.contains(T + timedelta(minutes=1) + UNKNOWN_CLOCK_SLACK, T)
    assert not window.contains(T + timedelta(minutes=1) + UNKNOWN_CLOCK_SLACK + SEC, T)
    # a zero offset is known, not unknown: it does not get the wide slack
    assert not Window(clock_offset=timedelta(0)).contains(T - timedelta(minutes=9), T)


def test_no_server_now_means_no_upper_bound() -> None:
    assert Window(clock_offset=timedelta(0)).contains(T + timedelta(days=3), T)


# ---- comparing a candidate with the request --------------------------------------------------------------


def ours(candidate: RemoteGeneration, params: dict[str, Any] | None = None, **kw: Any) -> bool:
    return could_be_ours(
        candidate,
        model=kw.pop("model", MODEL),
        params=PARAMS if params is None else params,
        intent_at=kw.pop("intent_at", T),
        window=kw.pop("window", Window(clock_offset=timedelta(0))),
    )


def test_the_same_request_in_the_window_could_be_ours() -> None:
    assert ours(gen("g", T + SEC))


def test_model_prompt_and_params_must_all_match() -> None:
    assert not ours(gen("g", T + SEC, model="other-model"))
    assert not ours(gen("g", T + SEC, prompt="an ox in rain"))
    assert not ours(gen("g", T + SEC, seconds="8"))
    assert not ours(gen("g", T + SEC, size="720x1280"))


def test_a_number_echoed_as_a_string_is_the_same_value() -> None:
    assert ours(gen("g", T + SEC, seconds=4))  # we sent "4", the row says 4
    assert ours(gen("g", T + SEC, seconds="4"), {**PARAMS, "seconds": 4})  # we sent 4, the row says "4"
    assert not ours(gen("g", T + SEC, seconds=8))


def test_target_namespace_is_not_compared() -> None:
    # the row may echo the namespace differently (or the account's default): it says nothing about the request
    assert ours(gen("g", T + SEC, target_namespace="someone-else"), {**PARAMS, "target_namespace": "acme"})


def test_what_the_row_does_not_echo_is_not_held_against_it() -> None:
    sparse = RemoteGeneration("g", "queued", model=None, prompt=None, enqueued_at=T + SEC, params={})
    assert ours(sparse, {**PARAMS, "seed": 7})


def test_the_window_applies_only_when_both_times_are_known() -> None:
    long_before = gen("g", T - timedelta(hours=2))
    assert not ours(long_before)
    assert ours(long_before, intent_at=None)
    assert ours(gen("g", None))
    # without a window argument the default (unknown offset, wide slack) is used
    assert could_be_ours(gen("g", T - timedelta(minutes=9)), model=MODEL, params=PARAMS, intent_at=T)
    assert not could_be_ours(gen("g", T - timedelta(minutes=11)), model=MODEL, params=PARAMS, intent_at=T)


# ---- assigning candidates to jobs ----------------------------------------------------------------------------


WIN = Window(clock_offset=timedelta(0), server_now=T + timedelta(minutes=1))


def job(job_id: int, params: dict[str, Any] | None = None) -> tuple[int, str, dict[str, Any], datetime]:
    return (job_id, MODEL, PARAMS if params is None else params, T)


def test_one_candidate_is_never_given_to_two_identical_jobs() -> None:
    found = assign_orphans([job(1), job(2)], [gen("g1", T + SEC)], set(), WIN)
    assert list(found) == [1] and found[1].generation_id == "g1"


def test_identical_jobs_get_distinct_candidates_oldest_first() -> None:
    candidates = [gen("newest", T + 9 * SEC), gen("oldest", T + SEC), gen("middle", T + 5 * SEC)]
    found = assign_orphans([job(1), job(2), job(3), job(4)], candidates, set(), WIN)
    assert {k: v.generation_id for k, v in found.items()} == {1: "oldest", 2: "middle", 3: "newest"}


def test_a_candidate_listed_twice_is_still_given_once() -> None:
    found = assign_orphans([job(1), job(2)], [gen("g1", T + SEC), gen("g1", T + SEC)], set(), WIN)
    assert [g.generation_id for g in found.values()] == ["g1"]


def test_owned_ids_are_skipped() -> None:
    candidates = [gen("owned", T + SEC), gen("free", T + 2 * SEC)]
    found = assign_orphans([job(1), job(2)], candidates, {"owned"}, WIN)
    assert {k: v.generation_id for k, v in found.items()} == {1: "free"}
    assert assign_orphans([job(1)], [gen("owned", T + SEC)], {"owned"}, WIN) == {}


def test_each_job_gets_a_candidate_of_its_own_request() -> None:
    other = {**PARAMS, "prompt": "a yak"}
    candidates = [gen("yak", T + SEC, prompt="a yak"), gen("ox", T + 2 * SEC)]
    found = assign_orphans([job(1), job(2, other)], candidates, set(), WIN)
    assert {k: v.generation_id for k, v in found.items()} == {1: "ox", 2: "yak"}


def test_candidates_outside_the_window_are_not_assigned() -> None:
    candidates = [gen("before", T - timedelta(minutes=3)), gen("after", T + timedelta(minutes=5))]
    assert assign_orphans([job(1)], candidates, set(), WIN) == {}


def test_a_candidate_without_a_time_comes_after_the_dated_ones() -> None:
    found = assign_orphans([job(1)], [gen("undated", None), gen("dated", T + SEC)], set(), WIN)
    assert found[1].generation_id == "dated"
