"""The job lifecycle: every status, every event that moves a job, and the one table of allowed moves.

This is the only place that says where a job's status may go. The store applies an event to a job only from one of
the event's source statuses (in the same SQL statement that writes it), so a move that is not in this table cannot
happen, whoever asks for it.

    pending ──intent──▶ submitting ──enqueued──▶ queued ──started──▶ processing
       ▲                   │  │                    │                     │
       │ unsent/not_created│  └─undecidable─▶ unknown (reconciled again on every resume)
       │                   └─rejected─▶ failed     │                     │
       │                                           └──succeeded_remotely─┴─▶ downloading ──downloaded──▶ succeeded
       └──── retry (failed, cancelled), resubmit (unknown), forgotten (emulated runs)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from batchgen.core.jobs import JobStatus

P, SUB, UNK, Q, PROC, DL, OK, FAIL, CANC = (
    JobStatus.PENDING,
    JobStatus.SUBMITTING,
    JobStatus.UNKNOWN,
    JobStatus.QUEUED,
    JobStatus.PROCESSING,
    JobStatus.DOWNLOADING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)


class JobEvent(StrEnum):
    """What can happen to a job. Each one has exactly one target status."""

    INTENT = "intent"  # the intent to enqueue is committed (fenced, budget-checked): money may be spent from here
    UNSENT = "unsent"  # the intent's POST was never sent (submitting stopped first)
    NOT_CREATED = "not_created"  # the POST failed for certain, or two reads of the queue agree nothing was created
    ENQUEUED = "enqueued"  # a generation id is known: from the reply, or reserved by reconciliation
    UNDECIDABLE = "undecidable"  # the queue could not be read to decide whether the POST created anything
    REJECTED = "rejected"  # a permanent 4xx for the request: nothing was created
    STARTED = "started"  # the generation is running remotely
    SUCCEEDED_REMOTELY = "succeeded_remotely"  # paid for; the file is not on disk yet
    FINISHED_WITHOUT_DOWNLOAD = "finished_without_download"  # paid for; downloads are off
    DOWNLOADED = "downloaded"  # the file is on disk, checked and hashed
    DOWNLOAD_FAILED = "download_failed"  # paid for, but the file could not be fetched: resume fetches it again
    REDOWNLOAD = "redownload"  # a run or resume tries a failed download again (never a resend)
    FAILED_REMOTELY = "failed_remotely"  # the API says the generation failed
    CANCELLED_REMOTELY = "cancelled_remotely"  # the API says the generation was cancelled
    VANISHED = "vanished"  # repeated reads found no trace of the generation
    TIMED_OUT = "timed_out"  # still unfinished after job_timeout; cancelled remotely and confirmed not succeeded
    CANCELLED_BY_USER = "cancelled_by_user"  # `batchgen cancel`, after the remote cancel was confirmed
    RETIRED = "retired"  # an edited manifest no longer has this never-sent job
    RETRY = "retry"  # --retry-failed: a failed or cancelled job is sent again (its old generation stays in the ledger)
    RESUBMIT = "resubmit"  # --resubmit-unknown, after reconciling found nothing it could decide
    FORGOTTEN = "forgotten"  # an emulated run restarted: the old emulator's generations are gone and cost nothing


@dataclass(frozen=True, slots=True)
class Move:
    """The statuses an event may start from, and the one status it leads to."""

    sources: frozenset[JobStatus]
    target: JobStatus


def _move(sources: set[JobStatus], target: JobStatus) -> Move:
    return Move(frozenset(sources), target)


LIFECYCLE: dict[JobEvent, Move] = {
    JobEvent.INTENT: _move({P}, SUB),
    JobEvent.UNSENT: _move({SUB}, P),
    JobEvent.NOT_CREATED: _move({SUB, UNK}, P),
    JobEvent.ENQUEUED: _move({SUB, UNK}, Q),
    JobEvent.UNDECIDABLE: _move({SUB, UNK}, UNK),
    JobEvent.REJECTED: _move({SUB}, FAIL),
    JobEvent.STARTED: _move({Q}, PROC),
    JobEvent.SUCCEEDED_REMOTELY: _move({Q, PROC}, DL),
    JobEvent.FINISHED_WITHOUT_DOWNLOAD: _move({Q, PROC, DL}, OK),
    JobEvent.DOWNLOADED: _move({DL}, OK),
    JobEvent.DOWNLOAD_FAILED: _move({DL}, FAIL),
    JobEvent.REDOWNLOAD: _move({FAIL}, DL),
    JobEvent.FAILED_REMOTELY: _move({Q, PROC}, FAIL),
    JobEvent.CANCELLED_REMOTELY: _move({Q, PROC}, CANC),
    JobEvent.VANISHED: _move({Q, PROC}, FAIL),
    JobEvent.TIMED_OUT: _move({Q, PROC}, FAIL),
    JobEvent.CANCELLED_BY_USER: _move({P, SUB, UNK, Q, PROC}, CANC),
    JobEvent.RETIRED: _move({P}, CANC),
    JobEvent.RETRY: _move({FAIL, CANC}, P),
    JobEvent.RESUBMIT: _move({UNK}, P),
    JobEvent.FORGOTTEN: _move({SUB, UNK, Q, PROC, DL, FAIL}, P),
}


class IllegalTransition(Exception):
    """A job was asked to move in a way the lifecycle table does not allow."""


def next_status(status: JobStatus, event: JobEvent) -> JobStatus:
    """Where `event` takes a job in `status`; IllegalTransition when the table has no such move."""
    move = LIFECYCLE[event]
    if status not in move.sources:
        allowed = ", ".join(sorted(s.value for s in move.sources))
        raise IllegalTransition(f"a {status.value} job cannot take the event {event.value} (only from: {allowed})")
    return move.target


def sources(event: JobEvent) -> list[str]:
    """The status values `event` may start from, for a store's `WHERE status IN (...)`."""
    return sorted(s.value for s in LIFECYCLE[event].sources)


# Where money stands for a job, by status: a job in one of these holds a reservation against the budget until
# its generation is known (from then on the ledger row holds it).
RESERVING = frozenset({SUB, UNK})
