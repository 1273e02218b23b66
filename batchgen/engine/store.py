"""The state database: every run and job, every transition committed the moment it happens.

SQLite in WAL mode with synchronous=FULL, so an intent to enqueue is on disk before the POST leaves, even across
power loss. Every operation is a named method; callers never write SQL.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, func, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlmodel import create_engine

from batchgen.core.jobs import JobRow, JobSpec, JobStatus
from batchgen.engine.migrations import apply_migrations
from batchgen.engine.tables import JobTable, RunTable
from batchgen.errors import RunLockedError, StateError

RUNS = RunTable.__table__  # type: ignore[attr-defined]
JOBS = JobTable.__table__  # type: ignore[attr-defined]
LEASE_SECONDS = 30.0


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


def _set_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit survives a crash of the process (kill -9) but may be lost to a power cut. Every write that
    # must survive a power cut (the intent to enqueue) is made durable by _WriteTransaction(durable=True), whose
    # fsync also makes every earlier commit durable; losing a later one only sends a job back a step, from which
    # the runner recovers by reconciling (never by resending).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """Runs and jobs in one SQLite file."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self.path = path

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> Store:
        """Open (and migrate) the database at `path`; with create=False a missing file is an error."""
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
        event.listen(engine, "connect", _set_pragmas)
        store = cls(engine, path)
        try:
            with engine.begin() as db:
                apply_migrations(db)
        except OperationalError as exc:
            if not os.access(path.parent, os.W_OK) or not os.access(path, os.W_OK):  # e.g. a read-only mount
                raise StateError(
                    f"the state database {path} is read-only ({exc.orig}); make it writable and resume"
                ) from exc
            raise _state_error(path, exc) from exc
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
    ) -> RunInfo:
        """Create the run, or update the settings of the existing run of that name (an edited manifest)."""
        now = utcnow()
        values = {
            "manifest_path": manifest_path,
            "manifest_sha256": manifest_sha256,
            "base_url": base_url,
            "out_dir": out_dir,
            "settings_json": json.dumps(dict(settings), sort_keys=True),
            "updated_at": now,
        }
        with self._write() as db:
            existing = db.execute(
                select(RUNS.c.id, RUNS.c.name, RUNS.c.owner, RUNS.c.heartbeat_at).where(RUNS.c.name == name)
            ).first()
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
            row = db.execute(query).mappings().first()
        if row is None:
            if name:
                known = ", ".join(r.name for r in self.list_runs()[:10]) or "none"
                raise StateError(f"no run named {name!r} in {self.path} (runs: {known})")
            raise StateError(f"no runs in {self.path} yet (start one with `batchgen run MANIFEST`)")
        return RunInfo(
            id=row["id"],
            name=row["name"],
            manifest_path=row["manifest_path"],
            base_url=row["base_url"],
            out_dir=row["out_dir"],
            settings=json.loads(row["settings_json"]),
            created_at=as_utc(row["created_at"]) or row["created_at"],
            # a lease whose process is gone (kill -9) is no owner at all
            owner=row["owner"]
            if row["owner"] and not _lease_is_dead(row["owner"], row["heartbeat_at"], utcnow())
            else None,
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

    def cost_totals(self, run_id: int) -> tuple[float, float]:
        """(estimated cost of every job, cost of the jobs that succeeded remotely so far)."""
        with self.engine.connect() as db:
            est = db.execute(
                select(func.sum(JOBS.c.estimated_cost)).where(
                    JOBS.c.run_id == run_id, func.coalesce(JOBS.c.error_class, "") != "removed"
                )
            ).scalar()
            spent = db.execute(
                select(func.sum(func.coalesce(JOBS.c.cost, JOBS.c.estimated_cost))).where(
                    JOBS.c.run_id == run_id,
                    JOBS.c.status.in_([JobStatus.SUCCEEDED.value, JobStatus.DOWNLOADING.value]),
                )
            ).scalar()
        return float(est or 0.0), float(spent or 0.0)

    # ---- the lease: one live runner per run ----------------------------------------------------------------

    def acquire_run(self, run_id: int, *, now: datetime | None = None) -> str:
        """Take the run's lease, or raise RunLockedError naming the live holder. Returns the owner token."""
        me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        now = now or utcnow()
        with self._write() as db:
            row = db.execute(select(RUNS.c.name, RUNS.c.owner, RUNS.c.heartbeat_at).where(RUNS.c.id == run_id)).one()
            _refuse_if_held(row, now)
            db.execute(update(RUNS).where(RUNS.c.id == run_id).values(owner=me, heartbeat_at=now))
        return me

    def heartbeat(self, run_id: int, owner: str) -> None:
        with self._write() as db:
            db.execute(update(RUNS).where(RUNS.c.id == run_id, RUNS.c.owner == owner).values(heartbeat_at=utcnow()))

    def release_run(self, run_id: int, owner: str) -> None:
        with self._write() as db:
            db.execute(update(RUNS).where(RUNS.c.id == run_id, RUNS.c.owner == owner).values(owner=None))

    # ---- jobs -------------------------------------------------------------------------------------------

    def add_jobs(self, run_id: int, jobs: Sequence[NewJob]) -> int:
        """Add the jobs the run does not have yet (by key); return how many were new."""
        now = utcnow()
        with self._write() as db:
            known = set(db.execute(select(JOBS.c.key).where(JOBS.c.run_id == run_id)).scalars())
            rows = [
                {
                    "run_id": run_id,
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

    def retire_jobs(self, run_id: int, keep: set[str]) -> int:
        """Cancel the pending jobs whose key is not in `keep` (removed from an edited manifest); jobs already sent
        are left to finish, since they are paid for. Returns how many were retired."""
        with self._write() as db:
            pending = db.execute(
                select(JOBS.c.id, JOBS.c.key).where(JOBS.c.run_id == run_id, JOBS.c.status == JobStatus.PENDING.value)
            ).all()
            gone = [job_id for job_id, key in pending if key not in keep]
            if gone:
                db.execute(
                    update(JOBS)
                    .where(JOBS.c.id.in_(gone))
                    .values(
                        status=JobStatus.CANCELLED.value,
                        error="no longer in the manifest",
                        error_class="removed",
                        updated_at=utcnow(),
                    )
                )
        return len(gone)

    def load_jobs(self, run_id: int, statuses: Iterable[JobStatus]) -> list[JobState]:
        """The jobs of the run in the given states, oldest first."""
        wanted = [s.value for s in statuses]
        with self.engine.connect() as db:
            rows = db.execute(
                select(
                    JOBS.c.id,
                    JOBS.c.key,
                    JOBS.c.model,
                    JOBS.c.params_json,
                    JOBS.c.repeat,
                    JOBS.c.media_type,
                    JOBS.c.status,
                    JOBS.c.generation_id,
                    JOBS.c.attempts,
                    JOBS.c.intent_at,
                    JOBS.c.result_url,
                    JOBS.c.download_url,
                    JOBS.c.estimated_cost,
                )
                .where(JOBS.c.run_id == run_id, JOBS.c.status.in_(wanted))
                .order_by(JOBS.c.id)
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

    def owned_generation_ids(self) -> set[str]:
        """Every generation id any job in this database already owns (across runs)."""
        with self.engine.connect() as db:
            return set(db.execute(select(JOBS.c.generation_id).where(JOBS.c.generation_id.is_not(None))).scalars())

    def record_intent(self, job_ids: Sequence[int]) -> datetime:
        """Commit the intent to enqueue (status submitting, attempts + 1) durably, before the POST is sent."""
        now = utcnow()
        with self._write(durable=True) as db:
            db.execute(
                update(JOBS)
                .where(JOBS.c.id.in_(list(job_ids)))
                .values(
                    status=JobStatus.SUBMITTING.value,
                    intent_at=now,
                    attempts=JOBS.c.attempts + 1,
                    updated_at=now,
                    error=None,
                    error_class=None,
                )
            )
        return now

    def record_enqueued(self, pairs: Sequence[tuple[int, str]]) -> None:
        """Commit the generation ids the enqueue reply (or reconciliation) gave each job."""
        now = utcnow()
        with self._write() as db:
            for job_id, generation_id in pairs:
                db.execute(
                    update(JOBS)
                    .where(JOBS.c.id == job_id)
                    .values(status=JobStatus.QUEUED.value, generation_id=generation_id, enqueued_at=now, updated_at=now)
                )

    def update_job(self, job_id: int, status: JobStatus | None = None, **fields: Any) -> None:
        """Commit a transition and/or facts about one job (fields are column names)."""
        values = dict(fields, updated_at=utcnow())
        if status is not None:
            values["status"] = status.value
        with self._write() as db:
            db.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))

    def reset_jobs(self, run_id: int, statuses: Iterable[JobStatus]) -> int:
        """Put jobs in the given states back to pending (e.g. --retry-failed); return how many."""
        wanted = [s.value for s in statuses]
        with self._write() as db:
            result = db.execute(
                update(JOBS)
                # a paid result that only failed to download is fetched again (retry_downloads), never resubmitted
                .where(
                    JOBS.c.run_id == run_id,
                    JOBS.c.status.in_(wanted),
                    func.coalesce(JOBS.c.error_class, "") != "download",
                )
                .values(**_as_never_sent())
            )
        return int(result.rowcount or 0)

    def forget_remote(self, run_id: int) -> int:
        """Every unfinished job goes back to pending with no generation: for a run on the built-in emulator, whose
        generations vanished with its process (they cost nothing, so sending them again is right)."""
        touched = [
            JobStatus.SUBMITTING.value,
            JobStatus.UNKNOWN.value,
            JobStatus.QUEUED.value,
            JobStatus.PROCESSING.value,
            JobStatus.DOWNLOADING.value,
        ]
        with self._write() as db:
            result = db.execute(
                update(JOBS)
                .where(
                    JOBS.c.run_id == run_id,
                    (JOBS.c.status.in_(touched))
                    | ((JOBS.c.status == JobStatus.FAILED.value) & (JOBS.c.error_class == "download")),
                )
                .values(**_as_never_sent())
            )
        return int(result.rowcount or 0)

    def jobs_missing_details(self, run_id: int) -> dict[str, int]:
        """generation_id -> job id for finished jobs whose cost or start time the API has not told us yet."""
        with self.engine.connect() as db:
            rows = db.execute(
                select(JOBS.c.generation_id, JOBS.c.id).where(
                    JOBS.c.run_id == run_id,
                    JOBS.c.generation_id.is_not(None),
                    JOBS.c.status.in_([JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.DOWNLOADING.value]),
                    (JOBS.c.cost.is_(None)) | (JOBS.c.started_at.is_(None)),
                )
            ).all()
        return {gid: job_id for gid, job_id in rows}

    def retry_downloads(self, run_id: int) -> int:
        """Jobs that succeeded remotely but whose file never arrived go back to downloading (never resubmitted)."""
        with self._write() as db:
            result = db.execute(
                update(JOBS)
                .where(
                    JOBS.c.run_id == run_id, JOBS.c.status == JobStatus.FAILED.value, JOBS.c.error_class == "download"
                )
                .values(status=JobStatus.DOWNLOADING.value, error=None, error_class=None, updated_at=utcnow())
            )
        return int(result.rowcount or 0)

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

    def _write(self, *, durable: bool = False) -> _WriteTransaction:
        return _WriteTransaction(self, durable=durable)


class _WriteTransaction:
    """`with store._write() as db:` a committed transaction that turns SQLite's failures into StateError.

    durable=True commits with synchronous=FULL (fsync of the WAL before returning): for writes that must
    survive a power cut. SQLite refuses to change the level inside a transaction, so it is set around it.
    """

    def __init__(self, store: Store, *, durable: bool = False) -> None:
        self.store = store
        self.durable = durable
        self._conn: Any = None
        self._txn: Any = None

    def __enter__(self) -> Any:
        try:
            self._conn = self.store.engine.connect()
            if self.durable:
                self._conn.exec_driver_sql("PRAGMA synchronous=FULL")
                self._conn.commit()
            self._txn = self._conn.begin()
            return self._conn
        except OperationalError as exc:
            self._close()
            raise _state_error(self.store.path, exc) from exc

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if exc_info[0] is None:
                self._txn.commit()
            else:
                self._txn.rollback()
        except OperationalError as exc:
            raise _state_error(self.store.path, exc) from exc
        finally:
            self._close()
        if exc_info[0] is not None and issubclass(exc_info[0], OperationalError):
            raise _state_error(self.store.path, exc_info[1]) from exc_info[1]

    def _close(self) -> None:
        if self._conn is None:
            return
        try:
            if self.durable:
                self._conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
                self._conn.commit()
        finally:
            self._conn.close()


def _state_error(path: Path, exc: OperationalError) -> StateError:
    detail = str(exc.orig)
    if "readonly" in detail:
        return StateError(f"the state database {path} is read-only ({detail}); make it writable and resume")
    if "locked" in detail:
        return StateError(f"the state database {path} is locked by another process ({detail})")
    if "disk" in detail or "full" in detail:
        return StateError(f"cannot write the state database {path}: {detail}; free some space and resume")
    return StateError(f"cannot use the state database {path}: {detail}")


def _refuse_if_held(row: Any, now: datetime) -> None:
    """Raise RunLockedError naming the live runner that holds the run `row` (name, owner, heartbeat_at)."""
    if row.owner and not _lease_is_dead(row.owner, row.heartbeat_at, now):
        host, pid, _ = row.owner.split(":", 2)
        age = (now - row.heartbeat_at).total_seconds() if row.heartbeat_at else 0.0
        raise RunLockedError(
            f"run {row.name!r} is being run by process {pid} on {host} (seen {age:.0f} s ago); "
            "wait for it to finish, or stop it and then `batchgen resume`"
        )


def _as_never_sent() -> dict[str, Any]:
    """The columns of a job sent back to pending: no generation, no error, no URLs."""
    return {
        "status": JobStatus.PENDING.value,
        "generation_id": None,
        "error": None,
        "error_class": None,
        "result_url": None,
        "download_url": None,
        "updated_at": utcnow(),
    }


def _lease_is_dead(owner: str, heartbeat_at: datetime | None, now: datetime) -> bool:
    host, pid, _ = [*owner.split(":", 2), "", ""][:3]
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True  # its process is gone (kill -9, crash): the lease is free at once
        except PermissionError:
            return False
        if int(pid) == os.getpid():
            return False
    return heartbeat_at is None or now - heartbeat_at > timedelta(seconds=LEASE_SECONDS)
