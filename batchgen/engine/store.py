"""The state database: runs, jobs and the ledger of generations, every change one named, committed transaction.

SQLite in WAL mode, or PostgreSQL. Every write is one transaction (BEGIN IMMEDIATE on SQLite; the run's advisory
lock on PostgreSQL), so writers queue instead of deciding on a stale read, and every write of a runner carries its
lease (its row in `runners` and its fencing token, engine/runners.py): when the runner was ended since (taken over,
its lease run out), the write changes nothing and raises LeaseLostError. A job's status changes only by
an event of the lifecycle table (`core/lifecycle.py`), applied in SQL only from that event's source statuses.

Money is the ledger's: `generations` has one row per generation id the run caused or adopted, never cleared. The
intent to enqueue (the write after which money may be spent) is committed durably, fenced, and only when the run's
spent + reserved + this intent stays within the run's budget, all in one transaction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import create_engine

from batchgen.core.jobs import JobRow, JobStatus
from batchgen.core.locations import is_database_url
from batchgen.core.money import LedgerRow, Money
from batchgen.core.remote import REMOTE_TERMINAL
from batchgen.engine.holders import lease_is_over, refuse_if_held
from batchgen.engine.job_stream import JobRowStream, job_row_stream
from batchgen.engine.ledger import GENERATIONS, JOBS, RUNS, money_of, unused_query
from batchgen.engine.migrations import apply_migrations
from batchgen.engine.overview import run_overview
from batchgen.engine.postgres import lock_for_writing, postgres_engine, postgres_error, shown
from batchgen.engine.records import JobState, Lease, NewJob, RunInfo, RunOverview, ledger_row, run_info
from batchgen.engine.runners import RunnerSeats, fence, fence_holding, live_runner
from batchgen.engine.sqlite import as_utc, on_begin, on_connect, pragma, state_error, utcnow
from batchgen.engine.tallies import tallied_overview
from batchgen.engine.transitions import JobTransitions, apply_event
from batchgen.errors import StateError

__all__ = [
    "GENERATIONS",
    "JOBS",
    "RUNS",
    "JobState",
    "Lease",
    "LedgerRow",
    "Money",
    "NewJob",
    "RunInfo",
    "Store",
    "apply_event",
    "as_utc",
    "utcnow",
]


def job_state(r: Any) -> JobState:
    """A job row as the runner's working copy."""
    params = json.loads(r.params_json)
    return JobState(
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


class Store(JobTransitions, RunnerSeats):
    """Runs, their runners, jobs and the generation ledger, in a SQLite file or a PostgreSQL database."""

    def __init__(self, engine: Engine, path: Path | str) -> None:
        self.engine = engine
        self.path = path  # a SQLite file, or a PostgreSQL URL
        self.where = shown(path) if isinstance(path, str) else str(path)  # for messages: never a password
        self.postgres = engine.dialect.name == "postgresql"

    @classmethod
    def open(cls, location: Path | str, *, create: bool = True) -> Store:
        """Open (and migrate, atomically) the database: a SQLite file (with create=False a missing file is an
        error), or a PostgreSQL URL (`postgresql://user@host:5432/db`; the database itself must exist)."""
        if isinstance(location, str) and is_database_url(location):
            store = cls(postgres_engine(location), location)
            with store._write() as db:
                apply_migrations(db)
            return store
        path = Path(location)
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
        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", on_begin)
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

    # ---- runs --------------------------------------------------------------------------------------------------------

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
                refuse_if_held(existing, now)
                db.execute(update(RUNS).where(RUNS.c.id == existing.id).values(**values))
        return self.get_run(name)

    def get_run(self, name: str | None) -> RunInfo:
        """The named run, or the most recent one when name is None."""
        with self.engine.connect() as db:
            query = select(RUNS)
            query = query.where(RUNS.c.name == name) if name else query.order_by(RUNS.c.id.desc()).limit(1)
            row = db.execute(query).first()
            owner = None
            if row is not None:
                owner = row.owner if not lease_is_over(row, utcnow()) else live_runner(db, row.id, self.postgres)
        if row is None:
            if name:
                known = ", ".join(r.name for r in self.list_runs()[:10]) or "none"
                raise StateError(f"no run named {name!r} in {self.where} (runs: {known})")
            raise StateError(f"no runs in {self.where} yet (start one with `batchgen run MANIFEST`)")
        return run_info(row, owner)

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
            return money_of(db, run_id)

    def ledger(self, run_id: int) -> list[LedgerRow]:
        """Every generation the run caused or adopted, oldest first."""
        with self.engine.connect() as db:
            rows = db.execute(
                select(GENERATIONS).where(GENERATIONS.c.run_id == run_id).order_by(GENERATIONS.c.seen_at)
            ).all()
        return [ledger_row(r) for r in rows]

    def change_mark(self, run_id: int) -> tuple[Any, ...]:
        """A cheap value that changes whenever any job or ledger row of the run is written (the live gallery)."""
        with self.engine.connect() as db:
            jobs = db.execute(select(func.count(), func.max(JOBS.c.updated_at)).where(JOBS.c.run_id == run_id)).one()
            ledger = db.execute(
                select(func.count(), func.max(GENERATIONS.c.updated_at)).where(GENERATIONS.c.run_id == run_id)
            ).one()
        return (*jobs, *ledger)

    def overview(self, run_id: int) -> RunOverview:
        """Counts, the estimate, money and the paid-but-unused generations in one read: `status` at any size (on
        SQLite from the tallies its triggers keep, a few rows; on PostgreSQL in aggregate reads)."""
        with self._read() as db:
            if self.postgres:
                return run_overview(db, run_id)
            with db.begin():  # one snapshot for every figure
                cursor = db.connection.driver_connection.cursor()  # type: ignore[union-attr]
                try:
                    return tallied_overview(cursor, run_id)
                finally:
                    cursor.close()

    def unused_generations(self, run_id: int) -> list[LedgerRow]:
        """Generations of the run that no job uses (none was assigned, or the job uses another), not failed."""
        with self.engine.connect() as db:
            rows = db.execute(unused_query(run_id)).all()
        return [ledger_row(r) for r in rows]

    # ---- reading jobs ------------------------------------------------------------------------------------------------

    def load_jobs(self, run_id: int, statuses: Iterable[JobStatus]) -> list[JobState]:
        """The jobs of the run in the given states, oldest first."""
        wanted = [s.value for s in statuses]
        with self.engine.connect() as db:
            rows = db.execute(
                select(JOBS).where(JOBS.c.run_id == run_id, JOBS.c.status.in_(wanted)).order_by(JOBS.c.id)
            ).all()
        return [job_state(r) for r in rows]

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
                downloaded_by=r["downloaded_by"],
            )
            for r in rows
        ]

    def job_row_stream(self, run_id: int) -> AbstractContextManager[JobRowStream]:
        """The run's jobs as export rows, read page by page from one snapshot (engine/job_stream.py): `job_rows`
        for a run of any size."""
        return job_row_stream(self.engine, run_id, self._run_name(run_id))

    # ---- internals ---------------------------------------------------------------------------------------------------

    def _run_name(self, run_id: int) -> str:
        with self.engine.connect() as db:
            return str(db.execute(select(RUNS.c.name).where(RUNS.c.id == run_id)).scalar_one())

    @contextmanager
    def _write(self, *, durable: bool = False, run_id: int | None = None, lock: bool = True) -> Iterator[Connection]:
        """One committed write transaction; the database's failures become StateError.

        SQLite: BEGIN IMMEDIATE (writers queue on the database's one lock). durable=True commits with
        synchronous=FULL (fsync of the WAL before returning): for writes that must survive a power cut. The level is
        set on the connection outside the transaction, and put back after.
        PostgreSQL: the run's advisory lock (or the global one, for writes that are no run's) for the whole
        transaction, so writers of one run decide one after the other, as on SQLite; every commit is durable.
        lock=False leaves it out, for writes that decide nothing shared (a heartbeat, a SKIP LOCKED claim)."""
        if self.postgres:
            with self._postgres_write(run_id, lock) as db:
                yield db
            return
        path = Path(self.path)
        try:
            conn = self.engine.connect()
        except OperationalError as exc:
            raise state_error(path, exc) from exc
        try:
            if durable:
                pragma(conn, "PRAGMA synchronous=FULL")
            conn.execution_options(immediate=True)
            with conn.begin():
                yield conn
        except OperationalError as exc:
            raise state_error(path, exc) from exc
        finally:
            try:
                if durable:
                    pragma(conn, "PRAGMA synchronous=NORMAL")
            finally:
                conn.close()

    @contextmanager
    def _postgres_write(self, run_id: int | None, lock: bool) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn, conn.begin():
                if lock:
                    lock_for_writing(conn, run_id)
                yield conn
        except DBAPIError as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise postgres_error(str(self.path), exc) from exc

    @contextmanager
    def _fenced(
        self, lease: Lease, *, durable: bool = False, holding: Iterable[int] | None = None, lock: bool = True
    ) -> Iterator[Connection]:
        """A write transaction that first proves the lease's runner is still live with its token, and with
        `holding`, that it holds each of these jobs (LeaseLostError otherwise). The jobs' rows are locked first
        (FOR UPDATE), so a sweep letting them go waits for this transaction to end, and a runner that lost them
        meanwhile changes nothing.

        lock=False leaves out the run's lock (PostgreSQL): for writes on held jobs that decide nothing the other
        runners share (a completion, a download). Writes that decide on money or places (intents, adoptions) and
        run-wide ones keep it."""
        with self._write(durable=durable, run_id=lease.run_id, lock=lock) as db:
            if holding is None:
                fence(db, lease)
            else:
                fence_holding(db, lease, holding)
            yield db

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as db:
            yield db
