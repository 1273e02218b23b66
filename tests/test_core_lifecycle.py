"""The job lifecycle table: every (status, event) pair, and the business facts the table must keep.

The expected moves are written out here by hand, independently of `LIFECYCLE`: a change to the table has to be a
deliberate change to this spec too.
"""

from __future__ import annotations

import itertools

import pytest

from batchgen.core.jobs import TERMINAL, JobStatus
from batchgen.core.lifecycle import LIFECYCLE, RESERVING, IllegalTransition, JobEvent, Move, next_status, sources

S = JobStatus
E = JobEvent

# event -> (the statuses it may start from, the one status it leads to)
SPEC: dict[JobEvent, tuple[set[JobStatus], JobStatus]] = {
    E.INTENT: ({S.PENDING}, S.SUBMITTING),
    E.UNSENT: ({S.SUBMITTING}, S.PENDING),
    E.NOT_CREATED: ({S.SUBMITTING, S.UNKNOWN}, S.PENDING),
    E.ENQUEUED: ({S.SUBMITTING, S.UNKNOWN}, S.QUEUED),
    E.UNDECIDABLE: ({S.SUBMITTING, S.UNKNOWN}, S.UNKNOWN),
    E.REJECTED: ({S.SUBMITTING}, S.FAILED),
    E.STARTED: ({S.QUEUED}, S.PROCESSING),
    E.SUCCEEDED_REMOTELY: ({S.QUEUED, S.PROCESSING}, S.DOWNLOADING),
    E.FINISHED_WITHOUT_DOWNLOAD: ({S.QUEUED, S.PROCESSING, S.DOWNLOADING}, S.SUCCEEDED),
    E.DOWNLOADED: ({S.DOWNLOADING}, S.SUCCEEDED),
    E.DOWNLOAD_FAILED: ({S.DOWNLOADING}, S.FAILED),
    E.REDOWNLOAD: ({S.FAILED}, S.DOWNLOADING),
    E.FAILED_REMOTELY: ({S.QUEUED, S.PROCESSING}, S.FAILED),
    E.CANCELLED_REMOTELY: ({S.QUEUED, S.PROCESSING}, S.CANCELLED),
    E.VANISHED: ({S.QUEUED, S.PROCESSING}, S.FAILED),
    E.TIMED_OUT: ({S.QUEUED, S.PROCESSING}, S.FAILED),
    E.CANCELLED_BY_USER: ({S.PENDING, S.SUBMITTING, S.UNKNOWN, S.QUEUED, S.PROCESSING}, S.CANCELLED),
    E.RETIRED: ({S.PENDING}, S.CANCELLED),
    E.RETRY: ({S.FAILED, S.CANCELLED}, S.PENDING),
    E.RESUBMIT: ({S.UNKNOWN}, S.PENDING),
    E.FORGOTTEN: (
        {S.SUBMITTING, S.UNKNOWN, S.QUEUED, S.PROCESSING, S.DOWNLOADING, S.FAILED},
        S.PENDING,
    ),
}

PAIRS = list(itertools.product(JobStatus, JobEvent))
ALLOWED = [(s, e) for s, e in PAIRS if s in SPEC[e][0]]
REFUSED = [(s, e) for s, e in PAIRS if s not in SPEC[e][0]]


def _id(pair: tuple[JobStatus, JobEvent]) -> str:
    return f"{pair[0].value}-{pair[1].value}"


def test_the_table_is_the_spec_and_covers_every_event() -> None:
    assert set(LIFECYCLE) == set(JobEvent)
    assert {e: (set(m.sources), m.target) for e, m in LIFECYCLE.items()} == SPEC
    assert all(isinstance(m, Move) and m.sources for m in LIFECYCLE.values())
    assert len(ALLOWED) + len(REFUSED) == len(JobStatus) * len(JobEvent)
    assert ALLOWED and REFUSED


@pytest.mark.parametrize("pair", ALLOWED, ids=_id)
def test_an_allowed_pair_leads_to_the_events_target(pair: tuple[JobStatus, JobEvent]) -> None:
    status, event = pair
    assert next_status(status, event) is SPEC[event][1]


@pytest.mark.parametrize("pair", REFUSED, ids=_id)
def test_a_refused_pair_raises_and_names_the_move(pair: tuple[JobStatus, JobEvent]) -> None:
    status, event = pair
    with pytest.raises(IllegalTransition) as info:
        next_status(status, event)
    text = str(info.value)
    assert status.value in text and event.value in text
    assert all(s.value in text for s in SPEC[event][0]), "the message lists where the event may start"


@pytest.mark.parametrize("event", list(JobEvent), ids=lambda e: e.value)
def test_sources_are_the_sorted_values_for_a_sql_in_clause(event: JobEvent) -> None:
    assert sources(event) == sorted(s.value for s in SPEC[event][0])
    assert all(isinstance(v, str) for v in sources(event))


# ---- business facts ------------------------------------------------------------------------------------------


def _events_into(status: JobStatus) -> set[JobEvent]:
    return {e for e, m in LIFECYCLE.items() if m.target is status}


def _events_from(status: JobStatus) -> set[JobEvent]:
    return {e for e, m in LIFECYCLE.items() if status in m.sources}


def test_a_succeeded_job_takes_no_event_at_all() -> None:
    assert _events_from(S.SUCCEEDED) == set()
    for event in JobEvent:
        with pytest.raises(IllegalTransition):
            next_status(S.SUCCEEDED, event)


def test_only_a_pending_job_takes_intent_and_intent_is_the_only_way_into_submitting() -> None:
    assert LIFECYCLE[E.INTENT].sources == {S.PENDING}
    assert _events_into(S.SUBMITTING) == {E.INTENT}


def test_the_only_ways_back_to_pending() -> None:
    assert _events_into(S.PENDING) == {E.UNSENT, E.NOT_CREATED, E.RETRY, E.RESUBMIT, E.FORGOTTEN}


def test_retry_applies_to_failed_and_cancelled_only() -> None:
    assert LIFECYCLE[E.RETRY].sources == {S.FAILED, S.CANCELLED}
    assert S.SUCCEEDED not in LIFECYCLE[E.RETRY].sources


def test_a_paid_result_is_never_sent_again_except_on_a_forgotten_emulator() -> None:
    # downloading means the generation succeeded remotely (paid): only the emulator's vanished runs resend it
    assert {e for e in _events_from(S.DOWNLOADING) if LIFECYCLE[e].target is S.PENDING} == {E.FORGOTTEN}
    assert LIFECYCLE[E.REDOWNLOAD].target is S.DOWNLOADING
    assert S.DOWNLOADING not in LIFECYCLE[E.CANCELLED_BY_USER].sources


def test_a_generation_id_is_known_on_the_only_way_into_queued() -> None:
    assert _events_into(S.QUEUED) == {E.ENQUEUED}
    assert _events_into(S.PROCESSING) == {E.STARTED}


def test_an_undecided_enqueue_is_never_resent_without_the_users_say() -> None:
    # unknown may go back to pending only by reconciling (not created) or --resubmit-unknown
    assert {e for e in _events_from(S.UNKNOWN) if LIFECYCLE[e].target is S.PENDING} == {
        E.NOT_CREATED,
        E.RESUBMIT,
        E.FORGOTTEN,
    }
    assert _events_into(S.UNKNOWN) == {E.UNDECIDABLE}


def test_reserving_statuses_are_entered_only_before_a_generation_is_known() -> None:
    assert RESERVING == {S.SUBMITTING, S.UNKNOWN}
    for status in RESERVING:
        for event in _events_into(status):
            assert LIFECYCLE[event].sources <= {S.PENDING} | RESERVING, event


def test_every_status_is_reachable_from_pending_and_every_unfinished_one_can_end() -> None:
    reached, frontier = {S.PENDING}, [S.PENDING]
    for _ in range(len(JobStatus)):  # bounded breadth-first search
        frontier = [m.target for s in frontier for m in LIFECYCLE.values() if s in m.sources]
        frontier = [s for s in frontier if s not in reached]
        reached.update(frontier)
    assert reached == set(JobStatus)
    for status in set(JobStatus) - TERMINAL:
        assert any(LIFECYCLE[e].target in TERMINAL for e in _events_from(status)), status


def test_the_user_can_cancel_anything_not_yet_paid_for() -> None:
    assert LIFECYCLE[E.CANCELLED_BY_USER].sources == set(JobStatus) - TERMINAL - {S.DOWNLOADING}
    assert LIFECYCLE[E.RETIRED].sources == {S.PENDING}, "an edited manifest retires only never-sent jobs"
