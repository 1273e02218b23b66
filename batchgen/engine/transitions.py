"""Every change to a job: the named transitions of the lifecycle table, the intents that may spend money, the
enqueues and adoptions that fill the ledger. Each method is one fenced transaction (`Store._fenced`): a runner
whose lease was taken over writes nothing, and a transition of given jobs needs this runner to hold each of them.

Which writes take the run's lock (PostgreSQL; SQLite serialises every write anyway): those that decide on what
the run's runners share: the intents (budget, concurrency), adoptions of lost replies (who owns a generation),
and the run-wide ones (adding, retiring, retrying jobs). A job's own progress after its intent (enqueued, started,
succeeded, downloaded, failed) needs only its row, locked by its holder: that is most writes, and the runners
make them side by side."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ClauseElement, Connection, Update, and_, bindparam, func, insert, or_, select, update

from batchgen.core.jobs import JobStatus
from batchgen.core.lifecycle import LIFECYCLE, IllegalTransition, JobEvent, sources
from batchgen.core.matching import Window, assign_orphans
from batchgen.core.remote import RemoteGeneration
from batchgen.engine.ledger import (
    GENERATIONS,
    JOBS,
    insert_generation,
    insert_generations,
    observed,
    observed_many,
    paid_generation_ids,
    present,
    set_remote_status,
    standing_of,
    update_generations,
)
from batchgen.engine.records import Fetched, JobState, Lease, NewJob
from batchgen.engine.sqlite import utcnow
from batchgen.engine.statements import bound_facts, execute_by_columns
from batchgen.errors import BudgetExceededError

T = TypeVar("T")
ADD_CHUNK = 5_000  # jobs per key lookup when adding (SQLite allows 32,766 bound values per statement)
CENT = 1e-9  # float slack when comparing sums of money against a budget
# what holds a place of the account's concurrency (unknown jobs are reconciled, not counted, as in one runner)
COUNTED_IN_FLIGHT = ("submitting", "queued", "processing")


def _near(total: float, budget: float | None) -> bool:
    """Within a millionth of the budget: where a sum kept by triggers must give way to one added up now (their
    difference is about 1e-16 of the sum per change; a millionth leaves ten orders of magnitude to spare)."""
    return budget is not None and abs(total - budget) <= 1e-6 * max(1.0, abs(budget))


class ConcurrencyFullError(Exception):
    """The run's runners together have `free` (possibly 0) places left: fewer than the intent needs."""

    def __init__(self, free: int) -> None:
        super().__init__(f"the run's concurrency is full ({max(free, 0)} place(s) free)")
        self.free = max(free, 0)


class JobTransitions:
    """The writing half of the store (mixed into `Store`, which provides `_fenced`)."""

    def _fenced(
        self, lease: Lease, *, durable: bool = False, holding: Iterable[int] | None = None, lock: bool = True
    ) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def add_jobs(self, lease: Lease, jobs: Iterable[NewJob]) -> int:
        """Add the jobs the run does not have yet (by key), and give pending jobs without an estimate this plan's;
        return how many were new. One transaction; the jobs are read ADD_CHUNK at a time (a generator of a
        million is never a list of a million here), each chunk checked against the run's keys by index."""
        now = utcnow()
        added = 0
        with self._fenced(lease) as db:
            # jobs added while prices were unknown (the registry was unreachable) get this plan's estimate; only
            # while pending: a job in flight keeps the estimate its intent was checked against
            unpriced = set(
                db.execute(
                    select(JOBS.c.key).where(
                        JOBS.c.run_id == lease.run_id,
                        JOBS.c.status == JobStatus.PENDING.value,
                        JOBS.c.estimated_cost.is_(None),
                    )
                ).scalars()
            )
            for chunk in _chunks(jobs, ADD_CHUNK):
                keys = [job.spec.key for job in chunk]
                known = set(
                    db.execute(select(JOBS.c.key).where(JOBS.c.run_id == lease.run_id, JOBS.c.key.in_(keys))).scalars()
                )
                rows = [
                    {
                        "run_id": lease.run_id,
                        "key": job.spec.key,
                        "model": job.spec.model,
                        "params_json": json.dumps(dict(job.spec.params), ensure_ascii=False),
                        "variables_json": json.dumps(dict(job.spec.variables), ensure_ascii=False, default=str),
                        "repeat": job.spec.repeat,
                        "origin": job.spec.origin,
                        "media_type": job.media_type,
                        "status": JobStatus.PENDING.value,
                        "attempts": 0,
                        "estimated_cost": job.estimated_cost,
                        "updated_at": now,
                    }
                    for job in chunk
                    if job.spec.key not in known
                ]
                if rows:
                    db.execute(insert(JOBS), rows)
                    added += len(rows)
                for job in chunk:
                    if job.spec.key in unpriced and job.estimated_cost is not None:
                        db.execute(
                            update(JOBS)
                            .where(
                                JOBS.c.run_id == lease.run_id,
                                JOBS.c.key == job.spec.key,
                                JOBS.c.status == JobStatus.PENDING.value,
                                JOBS.c.estimated_cost.is_(None),
                            )
                            .values(estimated_cost=job.estimated_cost, updated_at=now)
                        )
        return added

    def retire_jobs(self, lease: Lease, keep: set[str]) -> int:
        """Cancel the pending jobs whose key is not in `keep` (removed from an edited manifest); jobs already sent
        are left to finish, since they are paid for. Returns how many were retired."""
        with self._fenced(lease) as db:
            pending = db.execute(
                select(JOBS.c.id, JOBS.c.key).where(JOBS.c.run_id == lease.run_id, JOBS.c.status == "pending")
            ).all()
            gone = [job_id for job_id, key in pending if key not in keep]
            apply_event(db, gone, JobEvent.RETIRED, error="no longer in the manifest", error_class="removed")
        return len(gone)

    def retry_failed(self, lease: Lease) -> int:
        """--retry-failed: failed and cancelled jobs go back to pending. Their old generations stay in the ledger
        (and can never be adopted again); a paid result that only failed to download is fetched, never resent."""
        with self._fenced(lease) as db:
            ids = list(
                db.execute(
                    select(JOBS.c.id).where(
                        JOBS.c.run_id == lease.run_id,
                        JOBS.c.status.in_(sources(JobEvent.RETRY)),
                        func.coalesce(JOBS.c.error_class, "") != "download",
                        # a cancel or timeout whose generation still ran and succeeded is paid: never resend it
                        JOBS.c.generation_id.is_(None) | ~JOBS.c.generation_id.in_(paid_generation_ids()),
                    )
                ).scalars()
            )
            # nobody holds them now: whichever runner claims next sends them (the one that failed them may be gone)
            apply_event(db, ids, JobEvent.RETRY, runner_id=None, **never_sent())
        return len(ids)

    def retry_downloads(self, lease: Lease) -> int:
        """Jobs that succeeded remotely but whose file never arrived go back to downloading (never resubmitted)."""
        with self._fenced(lease) as db:
            ids = list(
                db.execute(
                    select(JOBS.c.id).where(
                        JOBS.c.run_id == lease.run_id, JOBS.c.status == "failed", JOBS.c.error_class == "download"
                    )
                ).scalars()
            )
            apply_event(db, ids, JobEvent.REDOWNLOAD, error=None, error_class=None, runner_id=None)
        return len(ids)

    def forget_remote(self, lease: Lease) -> int:
        """Every unfinished job goes back to pending with no generation: for a run on the built-in emulator, whose
        generations vanished with its process (they cost nothing, so sending them again is right). The ledger
        marks the old emulator's generations lost at no cost."""
        with self._fenced(lease) as db:
            ids = list(
                db.execute(
                    select(JOBS.c.id).where(
                        JOBS.c.run_id == lease.run_id,
                        JOBS.c.status.in_([s for s in sources(JobEvent.FORGOTTEN) if s != "failed"])
                        | ((JOBS.c.status == "failed") & (JOBS.c.error_class == "download")),
                    )
                ).scalars()
            )
            db.execute(
                update(GENERATIONS)
                .where(GENERATIONS.c.run_id == lease.run_id, GENERATIONS.c.job_id.in_(ids))
                .values(remote_status="lost", estimated_cost=0.0, cost=0.0, updated_at=utcnow())
            )
            apply_event(db, ids, JobEvent.FORGOTTEN, **never_sent())
        return len(ids)

    def record_intents(self, lease: Lease, jobs: Sequence[JobState], *, concurrency: int | None = None) -> datetime:
        """Commit the intent to enqueue these jobs (status submitting, attempts + 1), durably, before the POST.

        In the same transaction (under the run's lock, so every runner of the run decides in turn): the lease is
        checked (LeaseLostError); with `concurrency`, the run's jobs in flight (all runners') plus these may not
        pass it (ConcurrencyFullError); and the run's spent + reserved + these jobs' estimates must stay within its
        budget (BudgetExceededError). Either refusal writes nothing."""
        now = utcnow()
        needed = sum(j.estimated_cost or 0.0 for j in jobs)
        with self._fenced(lease, durable=True, holding=[j.id for j in jobs]) as db:
            # one statement: the other runners' completions (not under the run's lock) are seen all or not at all
            money = standing_of(db, lease.run_id, COUNTED_IN_FLIGHT, money_if_budget=True)
            if money.tallied and _near(money.spent + money.reserved + needed, money.budget):
                # kept sums may differ from added-up ones in the last bits: at the budget, the ledger itself decides
                money = standing_of(db, lease.run_id, COUNTED_IN_FLIGHT, added_up=True)
            if concurrency is not None and money.in_flight + len(jobs) > concurrency:
                raise ConcurrencyFullError(concurrency - money.in_flight)
            if money.budget is not None and money.spent + money.reserved + needed > money.budget + CENT:
                raise BudgetExceededError(
                    spent=money.spent, reserved=money.reserved, budget=money.budget, needed=needed
                )
            apply_event(
                db,
                [j.id for j in jobs],
                JobEvent.INTENT,
                intent_at=now,
                attempts=JOBS.c.attempts + 1,
                error=None,
                error_class=None,
            )
        return now

    def record_enqueued(self, lease: Lease, pairs: Sequence[tuple[JobState, str]]) -> None:
        """Commit the generation ids an enqueue reply gave the jobs: each job moves to queued and each id enters
        the ledger. An id the ledger already has is an error: nothing is written (no generation has two jobs)."""
        now = utcnow()
        with self._fenced(lease, holding=[job.id for job, _ in pairs], lock=False) as db:
            insert_generations(db, lease.run_id, pairs, how="enqueued", now=now)
            apply_each(
                db,
                JobEvent.ENQUEUED,
                [(job.id, {"generation_id": generation_id, "enqueued_at": now}) for job, generation_id in pairs],
            )

    def claim_orphans(
        self,
        lease: Lease,
        jobs: Sequence[JobState],
        candidates: Iterable[RemoteGeneration],
        window: Window,
    ) -> dict[int, RemoteGeneration]:
        """Reconcile lost enqueue replies: give each job at most one matching generation that nobody owns, and
        record it in the ledger, in one transaction. The set of owned ids is read inside that transaction, so two
        reconciliations can never adopt the same generation. Returns job id -> its generation."""
        pool = {c.generation_id: c for c in candidates}
        now = utcnow()
        with self._fenced(lease, holding=[j.id for j in jobs]) as db:
            owned = set(
                db.execute(
                    select(GENERATIONS.c.generation_id).where(GENERATIONS.c.generation_id.in_(list(pool)))
                ).scalars()
            )
            found = assign_orphans([(j.id, j.model, j.params, j.intent_at) for j in jobs], pool.values(), owned, window)
            by_id = {j.id: j for j in jobs}
            for job_id, generation in found.items():
                insert_generation(
                    db, lease.run_id, by_id[job_id], generation.generation_id, how="adopted", now=now, remote=generation
                )
                apply_event(
                    db,
                    [job_id],
                    JobEvent.ENQUEUED,
                    generation_id=generation.generation_id,
                    enqueued_at=generation.enqueued_at or now,
                )
        return found

    def mark_unsent(self, lease: Lease, job_ids: Sequence[int]) -> None:
        """Intents whose POST was never sent go back to pending: nothing to reconcile."""
        with self._fenced(lease, holding=job_ids, lock=False) as db:
            apply_event(db, job_ids, JobEvent.UNSENT)

    def mark_not_created(self, lease: Lease, job_ids: Sequence[int], *, error: str, error_class: str) -> None:
        """The enqueue created nothing (a definite refusal, or two agreeing reads of the queue): back to pending."""
        with self._fenced(lease, holding=job_ids, lock=False) as db:
            apply_event(db, job_ids, JobEvent.NOT_CREATED, generation_id=None, error=error, error_class=error_class)

    def mark_undecidable(self, lease: Lease, job_ids: Sequence[int], *, error: str) -> None:
        with self._fenced(lease, holding=job_ids, lock=False) as db:
            apply_event(db, job_ids, JobEvent.UNDECIDABLE, error=error, error_class="enqueue_unknown")

    def mark_rejected(self, lease: Lease, job_ids: Sequence[int], *, error: str) -> None:
        with self._fenced(lease, holding=job_ids, lock=False) as db:
            apply_event(db, job_ids, JobEvent.REJECTED, error=error, error_class="rejected")

    def resubmit_unknown(self, lease: Lease, job_ids: Sequence[int]) -> None:
        """--resubmit-unknown, for jobs reconciliation could not decide: send them again."""
        with self._fenced(lease, holding=job_ids) as db:
            apply_event(db, job_ids, JobEvent.RESUBMIT, **never_sent())

    def mark_started(self, lease: Lease, job: JobState, remote: RemoteGeneration) -> None:
        with self._fenced(lease, holding=[job.id], lock=False) as db:
            observed(db, job, remote)
            apply_event(db, [job.id], JobEvent.STARTED, **present(started_at=remote.started_at))

    def mark_succeeded_remotely(
        self, lease: Lease, job: JobState, remote: RemoteGeneration, *, download: bool
    ) -> JobStatus:
        """The generation succeeded (it is paid for): downloading, or succeeded at once when downloads are off."""
        return self.mark_many_succeeded_remotely(lease, [(job, remote)], download=download)

    def mark_many_succeeded_remotely(
        self, lease: Lease, completions: Sequence[tuple[JobState, RemoteGeneration]], *, download: bool
    ) -> JobStatus:
        """`mark_succeeded_remotely` for several jobs in one transaction (all moved, or none)."""
        event = JobEvent.SUCCEEDED_REMOTELY if download else JobEvent.FINISHED_WITHOUT_DOWNLOAD
        with self._fenced(lease, holding=[job.id for job, _ in completions], lock=False) as db:
            observed_many(db, completions)
            return apply_each(
                db,
                event,
                [
                    (
                        job.id,
                        {
                            "result_url": job.result_url,
                            "download_url": job.download_url,
                            "completed_at": remote.completed_at or utcnow(),
                            **present(started_at=remote.started_at),
                        },
                    )
                    for job, remote in completions
                ],
            )

    def mark_downloaded(self, lease: Lease, job: JobState, *, path: str, sha256: str, size: int) -> None:
        self.mark_many_downloaded(lease, [Fetched(job, path, sha256, size)])

    def mark_many_downloaded(self, lease: Lease, files: Sequence[Fetched]) -> None:
        """The jobs' results are on disk (all recorded in one transaction, or none)."""
        host = lease.owner.split(":", 1)[0]  # whose output directory holds the file (runners on several hosts)
        with self._fenced(lease, holding=[f.job.id for f in files], lock=False) as db:
            apply_each(
                db,
                JobEvent.DOWNLOADED,
                [
                    (f.job.id, {"output_path": f.path, "sha256": f.sha256, "bytes": f.size, "downloaded_by": host})
                    for f in files
                ],
            )

    def mark_finished_without_download(self, lease: Lease, job: JobState) -> None:
        with self._fenced(lease, holding=[job.id], lock=False) as db:
            apply_event(db, [job.id], JobEvent.FINISHED_WITHOUT_DOWNLOAD)

    def mark_download_failed(self, lease: Lease, job: JobState, *, error: str) -> None:
        with self._fenced(lease, holding=[job.id], lock=False) as db:
            apply_event(db, [job.id], JobEvent.DOWNLOAD_FAILED, error=error, error_class="download")

    def mark_failed(
        self,
        lease: Lease,
        job: JobState,
        event: JobEvent,
        *,
        error: str,
        error_class: str,
        remote: RemoteGeneration | None = None,
    ) -> None:
        """A generation that ended without a result: failed or cancelled remotely, vanished, or timed out."""
        assert event in (JobEvent.FAILED_REMOTELY, JobEvent.CANCELLED_REMOTELY, JobEvent.VANISHED, JobEvent.TIMED_OUT)
        with self._fenced(lease, holding=[job.id], lock=False) as db:
            if remote is not None:
                observed(db, job, remote)
            elif event is JobEvent.VANISHED:
                set_remote_status(db, job.generation_id, "lost")
            completed = remote.completed_at if remote is not None else None
            apply_event(db, [job.id], event, error=error, error_class=error_class, completed_at=completed or utcnow())

    def mark_cancelled_by_user(self, lease: Lease, job_ids: Sequence[int]) -> None:
        with self._fenced(lease, holding=job_ids) as db:
            apply_event(db, job_ids, JobEvent.CANCELLED_BY_USER, error="cancelled by the user", error_class="cancelled")

    def record_result_url(self, lease: Lease, job: JobState, url: str) -> None:
        """A fresh result_url read from the status row (not a transition)."""
        with self._fenced(lease, holding=[job.id], lock=False) as db:
            db.execute(update(JOBS).where(JOBS.c.id == job.id).values(result_url=url, updated_at=utcnow()))

    def record_remote_rows(self, lease: Lease, rows: Sequence[tuple[RemoteGeneration, float | None]]) -> int:
        """What the history says about generations in the ledger (cost, times, status, result_url): facts, not
        transitions. Rows of generations the ledger does not have are ignored. Returns how many were known."""
        now = utcnow()
        with self._fenced(lease) as db:
            known: set[str] = set()
            for chunk in _chunks([remote.generation_id for remote, _ in rows], 500):
                known.update(
                    db.execute(
                        select(GENERATIONS.c.generation_id).where(
                            GENERATIONS.c.generation_id.in_(chunk), GENERATIONS.c.run_id == lease.run_id
                        )
                    ).scalars()
                )
            ledger: list[tuple[str, dict[str, Any]]] = []
            jobs: list[tuple[dict[str, Any], dict[str, Any]]] = []
            for remote, cost in rows:
                if remote.generation_id not in known:
                    continue
                facts = present(cost=cost, enqueued_at=remote.enqueued_at, result_url=remote.result_url)
                if remote.is_known_status:
                    facts["remote_status"] = remote.status
                ledger.append((remote.generation_id, facts))
                job_facts = present(
                    cost=cost,
                    started_at=remote.started_at,
                    enqueued_at=remote.enqueued_at,
                    result_url=remote.result_url,
                )
                if job_facts:
                    jobs.append(({"gid": remote.generation_id, "in_run": lease.run_id, "now": now}, job_facts))
            update_generations(db, ledger, now=now)
            execute_by_columns(db, _jobs_of_generation, jobs)
        return len(ledger)


def apply_event(db: Connection, job_ids: Sequence[int], event_: JobEvent, **facts: Any) -> JobStatus:
    """Move the jobs by `event_`, only from its source statuses; IllegalTransition (and a rollback) otherwise."""
    ids = list(job_ids)
    if ids:
        if any(isinstance(v, ClauseElement) for v in facts.values()):  # e.g. attempts + 1: built for this call
            statement = (
                update(JOBS)
                .where(JOBS.c.id.in_(ids), JOBS.c.status.in_(sources(event_)))
                .values(status=LIFECYCLE[event_].target.value, updated_at=utcnow(), **facts)
            )
            changed = db.execute(statement).rowcount
        else:
            moving = functools.partial(_moving, event_, each=False)
            changed = execute_by_columns(db, moving, [({"ids": ids, "now": utcnow()}, facts)])
        _check_moved(db, ids, event_, changed)
    return LIFECYCLE[event_].target


def apply_each(db: Connection, event_: JobEvent, moves: Sequence[tuple[int, dict[str, Any]]]) -> JobStatus:
    """`apply_event` for several jobs, each with facts of its own: one executemany per set of columns given."""
    now = utcnow()
    moving = functools.partial(_moving, event_, each=True)
    changed = execute_by_columns(db, moving, (({"job_id": job_id, "now": now}, facts) for job_id, facts in moves))
    _check_moved(db, [job_id for job_id, _ in moves], event_, changed)
    return LIFECYCLE[event_].target


@functools.cache
def _moving(event_: JobEvent, columns: tuple[str, ...], *, each: bool) -> Update:
    """The UPDATE of a move, built once per event and set of columns (engine/statements.py): one job (`job_id`)
    or a list (`ids`)."""
    if each:  # an executemany: no IN (expanding parameters cannot be used there)
        which = and_(JOBS.c.id == bindparam("job_id"), or_(*(JOBS.c.status == s for s in sources(event_))))
    else:
        which = and_(JOBS.c.id.in_(bindparam("ids", expanding=True)), JOBS.c.status.in_(sources(event_)))
    return (
        update(JOBS)
        .where(which)
        .values(status=LIFECYCLE[event_].target.value, updated_at=bindparam("now"), **bound_facts(columns))
    )


@functools.cache
def _jobs_of_generation(columns: tuple[str, ...]) -> Update:
    """The UPDATE of facts (`columns`) on the run's job that has a generation (`gid`)."""
    return (
        update(JOBS)
        .where(JOBS.c.run_id == bindparam("in_run"), JOBS.c.generation_id == bindparam("gid"))
        .values(updated_at=bindparam("now"), **bound_facts(columns))
    )


def _check_moved(db: Connection, ids: list[int], event_: JobEvent, changed: int) -> None:
    if changed != len(ids):
        found = db.execute(select(JOBS.c.id, JOBS.c.status).where(JOBS.c.id.in_(ids))).all()
        refused = {job_id: status for job_id, status in found if status not in sources(event_)}
        raise IllegalTransition(f"event {event_.value} refused for jobs {refused} (only from {sources(event_)})")


def never_sent() -> dict[str, Any]:
    """The columns of a job sent back to pending: no generation, no error, no URLs (the ledger keeps the old one)."""
    return {"generation_id": None, "error": None, "error_class": None, "result_url": None, "download_url": None}


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last may be shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
