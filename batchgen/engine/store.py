"""The state database: runs, jobs and the ledger of generations, every change one named, committed transaction.

SQLite in WAL mode. Every write is one `BEGIN IMMEDIATE` transaction (writers queue on the database lock instead of
deciding on a stale read), and every write of a runner carries its lease (a fencing token, `runs.epoch`): when the
run has been taken over since, the write changes nothing and raises LeaseLostError. A job's status changes only by
an event of the lifecycle table (`core/lifecycle.py`), applied in SQL only from that event's source statuses.

Money is the ledger's: `generations` has one row per generation id the run caused or adopted, never cleared. The
intent to enqueue (the write after which money may be spent) is committed durably, fenced, and only when the run's
spent + reserved + this intent stays within the run's budget, all in one transaction.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import create_engine

from batchgen.core.jobs import JobRow, JobSpec, JobStatus, canonical_json
from batchgen.core.lifecycle import LIFECYCLE, RESERVING, IllegalTransition, JobEvent, sources
from batchgen.core.matching import Window, assign_orphans
from batchgen.core.remote import REMOTE_TERMINAL, RemoteGeneration
from batchgen.engine.migrations import apply_migrations
from batchgen.engine.tables import GenerationTable, JobTable, RunTable
from batchgen.errors import BudgetExceededError, LeaseLostError, RunLockedError, StateError

RUNS = RunTable.__table__  # type: ignore[attr-defined]
JOBS = JobTable.__table__  # type: ignore[attr-defined]
GENERATIONS = GenerationTable.__table__  # type: ignore[attr-defined]
LEASE_SECONDS = 30.0
CENT = 1e-9  # float slack when comparing sums of money against a budget


def utcnow() -> datetime:
    """Aware UTC: SQLModel's column type refuses naive datetimes and gives aware ones back."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: int
    name: str
    manifest_path: str
    base_url: str
    out_dir: str
    settings: Mapping[str, Any]
    created_at: datetime
    owner: str | None
    budget: float | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof that this process holds a run: its epoch is the fencing token every write carries."""

    run_id: int
    epoch: int
    owner: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Money:
    """Where a run's money stands. spent: what the API charged (or will, for finished generations whose cost is
    not read yet); reserved: estimates of what is in flight or may have been sent."""

    spent: float
    reserved: float
    budget: float | None
    unused: int = 0  # paid (or running) generations no job uses
    unused_cost: float = 0.0

    @property
    def left(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget - self.spent - self.reserved)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    generation_id: str
    job_id: int | None
    model: str
    params: Mapping[str, Any]
    how: str
    remote_status: str
    estimated_cost: float | None
    cost: float | None
    result_url: str | None
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to add to a run: the planned spec plus what planning knew about it."""

    spec: JobSpec
    estimated_cost: float | None = None
    media_type: str = "video"


@dataclass(slots=True)
class JobState:
    """The runner's working copy of one job row (mutable; the store is the truth)."""

    id: int
    key: str
    model: str
    params: dict[str, Any]
    repeat: int
    media_type: str
    status: JobStatus
    generation_id: str | None
    attempts: int
    intent_at: datetime | None
    result_url: str | None
    download_url: str | None
    estimated_cost: float | None
    prompt_slug_source: str

    @property
    def namespace(self) -> str | None:
        """The organisation the job bills to (target_namespace), when it names one."""
        value = self.params.get("target_namespace")
        return value if isinstance(value, str) and value else None


def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # The driver's own transaction handling is off (it would run DDL outside any transaction); the "begin"
    # listener below starts every transaction explicitly instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    _enable_wal(cursor)
    # NORMAL: a commit survives a crash of the process (kill -9) but may be lost to a power cut. Every write that
    # must survive a power cut (the intent to enqueue) is made durable by _write(durable=True), whose fsync also
    # makes every earlier commit durable; losing a later one only sends a job back a step, from which the runner
    # recovers by reconciling (never by resending).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _enable_wal(cursor: sqlite3.Cursor, attempts: int = 100) -> None:
    """Switch the file to WAL (a no-op once it is). A brand-new file is still in rollback mode, and two processes
    switching it at once can be refused at once with "database is locked" (SQLite does not wait on a lock upgrade
    that could deadlock, whatever the busy timeout): the loser waits for the winner's switch and tries again."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


class Store:
    """Runs, jobs and the generation ledger in one SQLite file."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self.path = path

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> Store:
        """Open (and migrate, atomically) the database at `path`; with create=False a missing file is an error."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise StateError(f"no state database at {path} (run `batchgen run MANIFEST` first, or pass --db)")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(f"cannot create the state directory {path.parent}: {exc.strerror}") from exc
        # Pooled: a fresh connection per write re-ran the PRAGMAs (journal_mode=WAL takes a lock) and cost more
        # than the write itself; close() disposes of the pool.
        engine = create_engine(f"sqlite:///{path}")
        event.listen(engine, "connect", _on_connect)
        event.listen(engine, "begin", _on_begin)
        store = cls(engine, path)
        try:
            with store._write() as db:
                apply_migrations(db)
        except StateError:
            if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
                raise StateError(f"the state database {path} is read-only; make it writable and resume") from None
            raise
        return store

    def close(self) -> None:
        self.engine.dispose()

    # ---- runs -------------------------------------------------------------------------------------------

    def ensure_run(
        self,
        name: str,
        *,
        manifest_path: str,
        manifest_sha256: str,
        base_url: str,
        out_dir: str,
        settings: Mapping[str, Any],
        budget: float | None = None,
    ) -> RunInfo:
        """Create the run, or update the settings of the existing run of that name (an edited manifest).

        The budget is the run's, whatever the manifest says today: it bounds everything the run ever spent."""
        now = utcnow()
        values = {
            "manifest_path": manifest_path,
            "manifest_sha256": manifest_sha256,
            "base_url": base_url,
            "out_dir": out_dir,
            "settings_json": json.dumps(dict(settings), sort_keys=True),
            "budget": budget,
            "updated_at": now,
        }
        with self._write() as db:
            existing = db.execute(select(RUNS).where(RUNS.c.name == name)).first()
            if existing is None:
                db.execute(insert(RUNS).values(name=name, created_at=now, **values))
            else:
                # a live runner reads these settings back (resume, export): a refused second `run` must not change them
                _refuse_if_held(existing, now)
                db.execute(update(RUNS).where(RUNS.c.id == existing.id).values(**values))
        return self.get_run(name)

    def get_run(self, name: str | None) -> RunInfo:
        """The named run, or the most recent one when name is None."""
        with self.engine.connect() as db:
            query = select(RUNS)
            query = query.where(RUNS.c.name == name) if name else query.order_by(RUNS.c.id.desc()).limit(1)
            row = db.execute(query).first()
        if row is None:
            if name:
                known = ", ".join(r.name for r in self.list_runs()[:10]) or "none"
                raise StateError(f"no run named {name!r} in {self.path} (runs: {known})")
            raise StateError(f"no runs in {self.path} yet (start one with `batchgen run MANIFEST`)")
        return RunInfo(
            id=row.id,
            name=row.name,
            manifest_path=row.manifest_path,
            base_url=row.base_url,
            out_dir=row.out_dir,
            settings=json.loads(row.settings_json),
            created_at=as_utc(row.created_at) or row.created_at,
            owner=None if _lease_is_over(row, utcnow()) else row.owner,
            budget=row.budget,
        )

    def list_runs(self) -> list[RunInfo]:
        with self.engine.connect() as db:
            names = [r[0] for r in db.execute(select(RUNS.c.name).order_by(RUNS.c.id.desc()))]
        return [self.get_run(n) for n in names]

    def status_counts(self, run_id: int) -> dict[JobStatus, int]:
        """Jobs per status, leaving out the ones retired because the manifest no longer has them."""
        with self.engine.connect() as db:
            rows = db.execute(
                select(JOBS.c.status, func.count())
                .where(JOBS.c.run_id == run_id, func.coalesce(JOBS.c.error_class, "") != "removed")
                .group_by(JOBS.c.status)
            ).all()
        return {JobStatus(status): count for status, count in rows}

    def estimated_total(self, run_id: int) -> float:
        """The estimated cost of every job the manifest still has."""
        with self.engine.connect() as db:
            value = db.execute(
                select(func.sum(JOBS.c.estimated_cost)).where(
                    JOBS.c.run_id == run_id, func.coalesce(JOBS.c.error_class, "") != "removed"
                )
            ).scalar()
        return float(value or 0.0)

    def money(self, run_id: int) -> Money:
        """Spent, reserved, budget and the paid-but-unused generations of the run, from the ledger."""
        with self.engine.connect() as db:
            return _money(db, run_id)

    def ledger(self, run_id: int) -> list[LedgerRow]:
        """Every generation the run caused or adopted, oldest first."""
        with self.engine.connect() as db:
            rows = db.execute(
                select(GENERATIONS).where(GENERATIONS.c.run_id == run_id).order_by(GENERATIONS.c.seen_at)
            ).all()
        return [_ledger_row(r) for r in rows]

    def unused_generations(self, run_id: int) -> list[LedgerRow]:
        """Generations of the run that no job uses (none was assigned, or the job uses another), not failed."""
        with self.engine.connect() as db:
            rows = db.execute(_unused_query(run_id)).all()
        return [_ledger_row(r) for r in rows]

    # ---- the lease: one runner per run, fenced -------------------------------------------------------------

    def acquire_run(self, run_id: int, *, lease_seconds: float = LEASE_SECONDS) -> Lease:
        """Take the run in one transaction, or raise RunLockedError naming the live holder. The new epoch is the
        fencing token: the previous holder's writes are refused from now on."""
        me = _identity()
        now = utcnow()
        with self._write() as db:
            row = db.execute(select(RUNS).where(RUNS.c.id == run_id)).one()
            _refuse_if_held(row, now)
            epoch = int(row.epoch or 0) + 1
            db.execute(
                update(RUNS)
                .where(RUNS.c.id == run_id)
                .values(owner=me, epoch=epoch, heartbeat_at=now, lease_until=now + timedelta(seconds=lease_seconds))
            )
        return Lease(run_id, epoch, me, lease_seconds)

    def confirm_lease(self, lease: Lease) -> None:
        """Extend the lease (the heartbeat); LeaseLostError when the run was taken over meanwhile."""
        now = utcnow()
        with self._write() as db:
            changed = db.execute(
                update(RUNS)
                .where(RUNS.c.id == lease.run_id, RUNS.c.epoch == lease.epoch)
                .values(heartbeat_at=now, lease_until=now + timedelta(seconds=lease.seconds))
            ).rowcount
        if not changed:
            raise _lease_lost()

    def release_run(self, lease: Lease) -> None:
        """Give the run up (a no-op when it was taken over meanwhile)."""
        with self._write() as db:
            db.execute(
                update(RUNS)
                .where(RUNS.c.id == lease.run_id, RUNS.c.epoch == lease.epoch)
                .values(owner=None, lease_until=None)
            )

    # ---- jobs: setting a run up -----------------------------------------------------------------------------

    def add_jobs(self, lease: Lease, jobs: Sequence[NewJob]) -> int:
        """Add the jobs the run does not have yet (by key); return how many were new."""
        now = utcnow()
        with self._fenced(lease) as db:
            known = set(db.execute(select(JOBS.c.key).where(JOBS.c.run_id == lease.run_id)).scalars())
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
                for job in jobs
                if job.spec.key not in known
            ]
            if rows:
                db.execute(insert(JOBS), rows)
        return len(rows)

    def retire_jobs(self, lease: Lease, keep: set[str]) -> int:
        """Cancel the pending jobs whose key is not in `keep` (removed from an edited manifest); jobs already sent
        are left to finish, since they are paid for. Returns how many were retired."""
        with self._fenced(lease) as db:
            pending = db.execute(
                select(JOBS.c.id, JOBS.c.key).where(JOBS.c.run_id == lease.run_id, JOBS.c.status == "pending")
            ).all()
            gone = [job_id for job_id, key in pending if key not in keep]
            _apply(db, gone, JobEvent.RETIRED, error="no longer in the manifest", error_class="removed")
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
                        JOBS.c.generation_id.is_(None) | ~JOBS.c.generation_id.in_(_paid_generation_ids()),
                    )
                ).scalars()
            )
            _apply(db, ids, JobEvent.RETRY, **_never_sent())
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
            _apply(db, ids, JobEvent.REDOWNLOAD, error=None, error_class=None)
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
            _apply(db, ids, JobEvent.FORGOTTEN, **_never_sent())
        return len(ids)

    def load_jobs(self, run_id: int, statuses: Iterable[JobStatus]) -> list[JobState]:
        """The jobs of the run in the given states, oldest first."""
        wanted = [s.value for s in statuses]
        with self.engine.connect() as db:
            rows = db.execute(
                select(JOBS).where(JOBS.c.run_id == run_id, JOBS.c.status.in_(wanted)).order_by(JOBS.c.id)
            ).all()
        states = []
        for r in rows:
            params = json.loads(r.params_json)
            states.append(
                JobState(
                    id=r.id,
                    key=r.key,
                    model=r.model,
                    params=params,
                    repeat=r.repeat,
                    media_type=r.media_type,
                    status=JobStatus(r.status),
                    generation_id=r.generation_id,
                    attempts=r.attempts,
                    intent_at=as_utc(r.intent_at),
                    result_url=r.result_url,
                    download_url=r.download_url,
                    estimated_cost=r.estimated_cost,
                    prompt_slug_source=str(params.get("prompt", "")),
                )
            )
        return states

    # ---- the money: intents, enqueues, adoptions ----------------------------------------------------------

    def record_intents(self, lease: Lease, jobs: Sequence[JobState]) -> datetime:
        """Commit the intent to enqueue these jobs (status submitting, attempts + 1), durably, before the POST.

        In the same transaction: the lease is checked (LeaseLostError) and the run's spent + reserved + these
        jobs' estimates must stay within its budget (BudgetExceededError, and nothing is written)."""
        now = utcnow()
        needed = sum(j.estimated_cost or 0.0 for j in jobs)
        with self._fenced(lease, durable=True) as db:
            money = _money(db, lease.run_id)
            if money.budget is not None and money.spent + money.reserved + needed > money.budget + CENT:
                raise BudgetExceededError(
                    spent=money.spent, reserved=money.reserved, budget=money.budget, needed=needed
                )
            _apply(
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
        with self._fenced(lease) as db:
            for job, generation_id in pairs:
                _insert_generation(db, lease.run_id, job, generation_id, how="enqueued", now=now)
                _apply(db, [job.id], JobEvent.ENQUEUED, generation_id=generation_id, enqueued_at=now)

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
        with self._fenced(lease) as db:
            owned = set(
                db.execute(
                    select(GENERATIONS.c.generation_id).where(GENERATIONS.c.generation_id.in_(list(pool)))
                ).scalars()
            )
            found = assign_orphans([(j.id, j.model, j.params, j.intent_at) for j in jobs], pool.values(), owned, window)
            by_id = {j.id: j for j in jobs}
            for job_id, generation in found.items():
                _insert_generation(
                    db, lease.run_id, by_id[job_id], generation.generation_id, how="adopted", now=now, remote=generation
                )
                _apply(
                    db,
                    [job_id],
                    JobEvent.ENQUEUED,
                    generation_id=generation.generation_id,
                    enqueued_at=generation.enqueued_at or now,
                )
        return found

    # ---- named transitions ------------------------------------------------------------------------------

    def mark_unsent(self, lease: Lease, job_ids: Sequence[int]) -> None:
        """Intents whose POST was never sent go back to pending: nothing to reconcile."""
        with self._fenced(lease) as db:
            _apply(db, job_ids, JobEvent.UNSENT)

    def mark_not_created(self, lease: Lease, job_ids: Sequence[int], *, error: str, error_class: str) -> None:
        """The enqueue created nothing (a definite refusal, or two agreeing reads of the queue): back to pending."""
        with self._fenced(lease) as db:
            _apply(db, job_ids, JobEvent.NOT_CREATED, generation_id=None, error=error, error_class=error_class)

    def mark_undecidable(self, lease: Lease, job_ids: Sequence[int], *, error: str) -> None:
        with self._fenced(lease) as db:
            _apply(db, job_ids, JobEvent.UNDECIDABLE, error=error, error_class="enqueue_unknown")

    def mark_rejected(self, lease: Lease, job_ids: Sequence[int], *, error: str) -> None:
        with self._fenced(lease) as db:
            _apply(db, job_ids, JobEvent.REJECTED, error=error, error_class="rejected")

    def resubmit_unknown(self, lease: Lease, job_ids: Sequence[int]) -> None:
        """--resubmit-unknown, for jobs reconciliation could not decide: send them again."""
        with self._fenced(lease) as db:
            _apply(db, job_ids, JobEvent.RESUBMIT, **_never_sent())

    def mark_started(self, lease: Lease, job: JobState, remote: RemoteGeneration) -> None:
        with self._fenced(lease) as db:
            _observed(db, job, remote)
            _apply(db, [job.id], JobEvent.STARTED, **_present(started_at=remote.started_at))

    def mark_succeeded_remotely(
        self, lease: Lease, job: JobState, remote: RemoteGeneration, *, download: bool
    ) -> JobStatus:
        """The generation succeeded (it is paid for): downloading, or succeeded at once when downloads are off."""
        with self._fenced(lease) as db:
            _observed(db, job, remote)
            return _apply(
                db,
                [job.id],
                JobEvent.SUCCEEDED_REMOTELY if download else JobEvent.FINISHED_WITHOUT_DOWNLOAD,
                result_url=job.result_url,
                download_url=job.download_url,
                completed_at=remote.completed_at or utcnow(),
                **_present(started_at=remote.started_at),
            )

    def mark_downloaded(self, lease: Lease, job: JobState, *, path: str, sha256: str, size: int) -> None:
        with self._fenced(lease) as db:
            _apply(db, [job.id], JobEvent.DOWNLOADED, output_path=path, sha256=sha256, bytes=size)

    def mark_finished_without_download(self, lease: Lease, job: JobState) -> None:
        with self._fenced(lease) as db:
            _apply(db, [job.id], JobEvent.FINISHED_WITHOUT_DOWNLOAD)

    def mark_download_failed(self, lease: Lease, job: JobState, *, error: str) -> None:
        with self._fenced(lease) as db:
            _apply(db, [job.id], JobEvent.DOWNLOAD_FAILED, error=error, error_class="download")

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
        with self._fenced(lease) as db:
            if remote is not None:
                _observed(db, job, remote)
            elif event is JobEvent.VANISHED:
                _set_remote_status(db, job.generation_id, "lost")
            completed = remote.completed_at if remote is not None else None
            _apply(db, [job.id], event, error=error, error_class=error_class, completed_at=completed or utcnow())

    def mark_cancelled_by_user(self, lease: Lease, job_ids: Sequence[int]) -> None:
        with self._fenced(lease) as db:
            _apply(db, job_ids, JobEvent.CANCELLED_BY_USER, error="cancelled by the user", error_class="cancelled")

    def record_result_url(self, lease: Lease, job: JobState, url: str) -> None:
        """A fresh result_url read from the status row (not a transition)."""
        with self._fenced(lease) as db:
            db.execute(update(JOBS).where(JOBS.c.id == job.id).values(result_url=url, updated_at=utcnow()))

    def record_remote_rows(self, lease: Lease, rows: Sequence[tuple[RemoteGeneration, float | None]]) -> int:
        """What the history says about generations in the ledger (cost, times, status, result_url): facts, not
        transitions. Rows of generations the ledger does not have are ignored. Returns how many were known."""
        now = utcnow()
        known = 0
        with self._fenced(lease) as db:
            for remote, cost in rows:
                job_id = db.execute(
                    select(GENERATIONS.c.job_id).where(
                        GENERATIONS.c.generation_id == remote.generation_id, GENERATIONS.c.run_id == lease.run_id
                    )
                ).first()
                if job_id is None:
                    continue
                known += 1
                ledger_values: dict[str, Any] = {"updated_at": now}
                if remote.is_known_status:
                    ledger_values["remote_status"] = remote.status
                ledger_values.update(_present(cost=cost, enqueued_at=remote.enqueued_at, result_url=remote.result_url))
                db.execute(
                    update(GENERATIONS)
                    .where(GENERATIONS.c.generation_id == remote.generation_id)
                    .values(**ledger_values)
                )
                job_values = _present(
                    cost=cost,
                    started_at=remote.started_at,
                    enqueued_at=remote.enqueued_at,
                    result_url=remote.result_url,
                )
                if job_values:
                    db.execute(
                        update(JOBS)
                        .where(JOBS.c.run_id == lease.run_id, JOBS.c.generation_id == remote.generation_id)
                        .values(**job_values, updated_at=now)
                    )
        return known

    def generations_missing_details(self, run_id: int) -> set[str]:
        """Ledger rows whose cost or final status the API has not told us yet."""
        with self.engine.connect() as db:
            return set(
                db.execute(
                    select(GENERATIONS.c.generation_id).where(
                        GENERATIONS.c.run_id == run_id,
                        GENERATIONS.c.remote_status != "lost",
                        (GENERATIONS.c.cost.is_(None)) | (GENERATIONS.c.remote_status.not_in(list(REMOTE_TERMINAL))),
                    )
                ).scalars()
            )

    def job_rows(self, run_id: int) -> list[JobRow]:
        """Every job of the run as an export row, in the order the manifest produced them."""
        run = self._run_name(run_id)
        with self.engine.connect() as db:
            rows = db.execute(select(JOBS).where(JOBS.c.run_id == run_id).order_by(JOBS.c.id)).mappings().all()
        return [
            JobRow(
                job_key=r["key"],
                run=run,
                model=r["model"],
                params=json.loads(r["params_json"]),
                variables=json.loads(r["variables_json"]),
                repeat=r["repeat"],
                status=JobStatus(r["status"]),
                generation_id=r["generation_id"],
                result_url=r["result_url"],
                output_path=r["output_path"],
                sha256=r["sha256"],
                bytes=r["bytes"],
                estimated_cost=r["estimated_cost"],
                cost=r["cost"],
                error=r["error"],
                error_class=r["error_class"],
                attempts=r["attempts"],
                intent_at=as_utc(r["intent_at"]),
                enqueued_at=as_utc(r["enqueued_at"]),
                started_at=as_utc(r["started_at"]),
                completed_at=as_utc(r["completed_at"]),
                media_type=r["media_type"],
            )
            for r in rows
        ]

    # ---- internals -----------------------------------------------------------------------------------------

    def _run_name(self, run_id: int) -> str:
        with self.engine.connect() as db:
            return str(db.execute(select(RUNS.c.name).where(RUNS.c.id == run_id)).scalar_one())

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[Connection]:
        """One committed BEGIN IMMEDIATE transaction; SQLite's failures become StateError.

        durable=True commits with synchronous=FULL (fsync of the WAL before returning): for writes that must
        survive a power cut. The level is set on the connection outside the transaction, and put back after."""
        try:
            conn = self.engine.connect()
        except OperationalError as exc:
            raise _state_error(self.path, exc) from exc
        try:
            if durable:
                _pragma(conn, "PRAGMA synchronous=FULL")
            conn.execution_options(immediate=True)
            with conn.begin():
                yield conn
        except OperationalError as exc:
            raise _state_error(self.path, exc) from exc
        finally:
            try:
                if durable:
                    _pragma(conn, "PRAGMA synchronous=NORMAL")
            finally:
                conn.close()

    @contextmanager
    def _fenced(self, lease: Lease, *, durable: bool = False) -> Iterator[Connection]:
        """A write transaction that first proves the lease still holds the run (LeaseLostError otherwise)."""
        with self._write(durable=durable) as db:
            epoch = db.execute(select(RUNS.c.epoch).where(RUNS.c.id == lease.run_id)).scalar()
            if epoch != lease.epoch:
                raise _lease_lost()
            yield db


# ---- SQL pieces ---------------------------------------------------------------------------------------------


def _pragma(conn: Connection, statement: str) -> None:
    cursor = conn.connection.cursor()  # the raw connection: autocommit, outside any transaction
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def _apply(db: Connection, job_ids: Sequence[int], event_: JobEvent, **facts: Any) -> JobStatus:
    """Move the jobs by `event_`, only from its source statuses; IllegalTransition (and a rollback) otherwise."""
    move = LIFECYCLE[event_]
    ids = list(job_ids)
    if ids:
        changed = db.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(ids), JOBS.c.status.in_(sources(event_)))
            .values(status=move.target.value, updated_at=utcnow(), **facts)
        ).rowcount
        if changed != len(ids):
            found = db.execute(select(JOBS.c.id, JOBS.c.status).where(JOBS.c.id.in_(ids))).all()
            refused = {job_id: status for job_id, status in found if status not in sources(event_)}
            raise IllegalTransition(f"event {event_.value} refused for jobs {refused} (only from {sources(event_)})")
    return move.target


def _insert_generation(
    db: Connection,
    run_id: int,
    job: JobState,
    generation_id: str,
    *,
    how: str,
    now: datetime,
    remote: RemoteGeneration | None = None,
) -> None:
    try:
        db.execute(
            insert(GENERATIONS).values(
                generation_id=generation_id,
                run_id=run_id,
                job_id=job.id,
                model=job.model,
                request_json=canonical_json(job.params),
                how=how,
                seen_at=now,
                enqueued_at=remote.enqueued_at if remote else None,
                remote_status=remote.status if remote and remote.is_known_status else "queued",
                estimated_cost=job.estimated_cost,
                result_url=remote.result_url if remote else None,
                updated_at=now,
            )
        )
    except IntegrityError as exc:
        raise IllegalTransition(
            f"generation {generation_id} is already in the ledger: it cannot have two jobs"
        ) from exc


def _observed(db: Connection, job: JobState, remote: RemoteGeneration) -> None:
    if remote.is_known_status:
        _set_remote_status(db, job.generation_id, remote.status, result_url=remote.result_url)


def _set_remote_status(db: Connection, generation_id: str | None, status: str, **facts: Any) -> None:
    if generation_id:
        db.execute(
            update(GENERATIONS)
            .where(GENERATIONS.c.generation_id == generation_id)
            .values(remote_status=status, updated_at=utcnow(), **_present(**facts))
        )


def _paid_generation_ids() -> Any:
    return select(GENERATIONS.c.generation_id).where(GENERATIONS.c.remote_status == "succeeded")


def _unused_query(run_id: int) -> Any:
    g, j = GENERATIONS, JOBS
    uses = select(j.c.id).where(j.c.id == g.c.job_id, j.c.generation_id == g.c.generation_id).exists()
    return (
        select(g)
        .where(g.c.run_id == run_id, g.c.remote_status.not_in(["failed", "cancelled", "lost"]), ~uses)
        .order_by(g.c.seen_at)
    )


def _money(db: Connection, run_id: int) -> Money:
    g = GENERATIONS
    charged = func.coalesce(g.c.cost, func.coalesce(g.c.estimated_cost, 0.0))
    spent = db.execute(
        select(func.coalesce(func.sum(charged), 0.0)).where(
            g.c.run_id == run_id, (g.c.remote_status == "succeeded") | (g.c.cost.is_not(None))
        )
    ).scalar()
    in_flight = db.execute(
        select(func.coalesce(func.sum(func.coalesce(g.c.estimated_cost, 0.0)), 0.0)).where(
            g.c.run_id == run_id,
            g.c.cost.is_(None),
            g.c.remote_status.not_in(["succeeded", "failed", "cancelled"]),
        )
    ).scalar()
    intents = db.execute(
        select(func.coalesce(func.sum(func.coalesce(JOBS.c.estimated_cost, 0.0)), 0.0)).where(
            JOBS.c.run_id == run_id, JOBS.c.status.in_([s.value for s in RESERVING])
        )
    ).scalar()
    budget = db.execute(select(RUNS.c.budget).where(RUNS.c.id == run_id)).scalar()
    unused = db.execute(_unused_query(run_id)).all()
    return Money(
        spent=float(spent or 0.0),
        reserved=float(in_flight or 0.0) + float(intents or 0.0),
        budget=budget,
        unused=len(unused),
        unused_cost=sum(float(r.cost if r.cost is not None else (r.estimated_cost or 0.0)) for r in unused),
    )


def _ledger_row(r: Any) -> LedgerRow:
    return LedgerRow(
        generation_id=r.generation_id,
        job_id=r.job_id,
        model=r.model,
        params=json.loads(r.request_json),
        how=r.how,
        remote_status=r.remote_status,
        estimated_cost=r.estimated_cost,
        cost=r.cost,
        result_url=r.result_url,
        seen_at=as_utc(r.seen_at) or r.seen_at,
    )


def _present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _never_sent() -> dict[str, Any]:
    """The columns of a job sent back to pending: no generation, no error, no URLs (the ledger keeps the old one)."""
    return {"generation_id": None, "error": None, "error_class": None, "result_url": None, "download_url": None}


def _state_error(path: Path, exc: OperationalError) -> StateError:
    detail = str(exc.orig)
    if "readonly" in detail:
        return StateError(f"the state database {path} is read-only ({detail}); make it writable and resume")
    if "locked" in detail:
        return StateError(f"the state database {path} is locked by another process ({detail})")
    if "disk" in detail or "full" in detail:
        return StateError(f"cannot write the state database {path}: {detail}; free some space and resume")
    return StateError(f"cannot use the state database {path}: {detail}")


def _lease_lost() -> LeaseLostError:
    return LeaseLostError(
        "another runner took this run over while this one was paused or cut off past its lease; "
        "this runner sent nothing more and stopped (see `batchgen status`)"
    )


# ---- who holds a run -----------------------------------------------------------------------------------------


def _identity() -> str:
    """host:pid:token:pid-namespace:start-time: enough to tell, on this host, whether the holder still exists."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_pid_namespace()}:{_start_time(os.getpid())}"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").replace(":", "")
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' when there is no such process, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def _holder_is_gone(owner: str) -> bool:
    """True only when the holder certainly no longer exists: same host, same pid namespace, and no process with its
    pid and start time. Anything else (another host, another container) is decided by the lease's expiry alone."""
    host, pid, _token, pidns, started = [*owner.split(":", 4), "", "", "", "", ""][:5]
    if host != socket.gethostname() or not pidns or pidns != _pid_namespace() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    now_started = _start_time(int(pid))
    return now_started == "" or now_started != started


def _lease_is_over(row: Any, now: datetime) -> bool:
    if not row.owner:
        return True
    if _holder_is_gone(row.owner):
        return True  # its process is gone (kill -9, crash): the run is free at once
    until = as_utc(row.lease_until)
    return until is None or now > until


def _refuse_if_held(row: Any, now: datetime) -> None:
    """Raise RunLockedError naming the live runner that holds the run `row`."""
    if not _lease_is_over(row, now):
        host, pid = [*row.owner.split(":", 2), ""][:2]
        seen = as_utc(row.heartbeat_at)
        age = (now - seen).total_seconds() if seen else 0.0
        raise RunLockedError(
            f"run {row.name!r} is being run by process {pid} on {host} (seen {age:.0f} s ago); "
            "wait for it to finish, or stop it and then `batchgen resume`"
        )
