"""Who works on a run: runners, their leases and fencing tokens, and which jobs each holds.

A runner joins a run by taking a fresh token (the run's epoch, incremented) and a row in `runners`; every write
it makes first proves that row is still live (not ended) with that token (`Store._fenced`). A job is held by at
most one runner (`jobs.runner_id`) and changes hands only two ways: a runner claims jobs nobody holds, and the
sweep ends the runners whose lease ran out and lets their jobs go. So a live runner's jobs are its own for as
long as its row is live, and a runner that was paused or cut off past its lease finds its row ended and writes
nothing more.

SQLite (one host) keeps one runner per run: taking the run refuses while another holder is live, and ends the
earlier runners. PostgreSQL lets runners join: each claims pending jobs in small batches with
`FOR UPDATE SKIP LOCKED`, and the run's limits (budget, concurrency) are checked in the database across all of
them (engine/transitions.py, record_intents).

Lease expiry is judged on the database's clock on PostgreSQL (runners on several machines share it), on this
host's on SQLite. A holder's pid is used only to free at once the lease of a process certainly gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, func, insert, or_, select, update

from batchgen.core.jobs import JobStatus
from batchgen.engine.holders import holder_is_gone, identity, lease_lost, live_identity, refuse_if_held, runner_is_live
from batchgen.engine.ledger import JOBS, RUNS
from batchgen.engine.records import JobState, Lease, RunnerInfo, runner_infos
from batchgen.engine.sqlite import as_utc, utcnow
from batchgen.engine.tables import RunnerTable
from batchgen.engine.tallies import UNFINISHED
from batchgen.errors import RunLockedError

RUNNERS = RunnerTable.__table__  # type: ignore[attr-defined]
LEASE_SECONDS = 30.0


class RunnerSeats:
    """The runners half of the store (mixed into `Store`, which provides the transactions and `postgres`)."""

    postgres: bool

    def _write(
        self, *, durable: bool = False, run_id: int | None = None, lock: bool = True
    ) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    # ---- joining and leaving -------------------------------------------------------------------------------

    def acquire_run(self, run_id: int, *, lease_seconds: float = LEASE_SECONDS, exclusive: bool = False) -> Lease:
        """Join the run as a runner. On SQLite (or with `exclusive`, as `cancel` wants) the run must be free:
        RunLockedError names the live holder; the earlier runners are ended, so their writes are refused from now
        on. On PostgreSQL the runner joins those already there; runners whose lease ran out are ended first."""
        me = identity()
        with self._write(run_id=run_id) as db:
            now = _now(db, self.postgres)
            run = db.execute(select(RUNS).where(RUNS.c.id == run_id)).one()
            shared = self.postgres and not exclusive
            if shared:
                _sweep(db, run_id, now, me=None)
            else:
                refuse_if_held(run, now)
                if self.postgres:
                    _refuse_if_runners(db, run, now)
                _end_runners(db, run_id, now, "taken over", only_expired=False)
            epoch = int(run.epoch or 0) + 1
            until = now + timedelta(seconds=lease_seconds)
            values = {"epoch": epoch} if shared else {"epoch": epoch, "owner": me, "heartbeat_at": now}
            db.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values, lease_until=None if shared else until))
            host, pid = me.split(":", 2)[:2]
            runner_id = db.execute(
                insert(RUNNERS)
                .values(
                    run_id=run_id, token=epoch, identity=me, host=host, pid=int(pid), started_at=now,
                    heartbeat_at=now, lease_until=until,
                )
                .returning(RUNNERS.c.id)
            ).scalar_one()  # fmt: skip
        return Lease(run_id, epoch, me, lease_seconds, runner_id)

    def confirm_lease(self, lease: Lease) -> None:
        """Extend the lease (the heartbeat); LeaseLostError when the runner was ended meanwhile (taken over).

        It takes no run lock: a runner stuck behind another one's transaction must keep its lease. The sweep ends
        a runner only WHERE its lease is over, re-checked on the row itself, so a heartbeat and a sweep that meet
        decide one after the other."""
        with self._write(run_id=lease.run_id, lock=False) as db:
            now = _now(db, self.postgres)
            until = now + timedelta(seconds=lease.seconds)
            changed = db.execute(
                update(RUNNERS).where(*_this_runner(lease)).values(heartbeat_at=now, lease_until=until)
            ).rowcount
            if not changed:
                raise lease_lost()
            db.execute(update(RUNS).where(*_run_row_of(lease)).values(heartbeat_at=now, lease_until=until))

    def still_holds(self, lease: Lease) -> bool:
        """Whether the lease's runner is still live with its token (a read, on a fresh connection)."""
        with self._read() as db:
            return _is_live(db, lease)

    def release_run(self, lease: Lease) -> None:
        """Leave the run: its jobs go back to nobody (a no-op for a runner already ended)."""
        with self._write(run_id=lease.run_id) as db:
            now = _now(db, self.postgres)
            ended = db.execute(
                update(RUNNERS).where(*_this_runner(lease)).values(ended_at=now, end_reason="left")
            ).rowcount
            if ended:
                db.execute(update(JOBS).where(JOBS.c.runner_id == lease.runner_id).values(runner_id=None))
            db.execute(
                update(RUNS)
                .where(*_run_row_of(lease))
                .values(owner=None, lease_until=None, stream_mode=None, stream_note=None)
            )

    def note_stream(self, lease: Lease, mode: str, note: str | None) -> None:
        """Record what this runner's event stream is doing, for `status` (a no-op once it was ended)."""
        with self._write(run_id=lease.run_id) as db:
            db.execute(
                update(RUNNERS)
                .where(RUNNERS.c.id == lease.runner_id, RUNNERS.c.ended_at.is_(None))
                .values(stream_mode=mode, stream_note=note)
            )
            db.execute(update(RUNS).where(*_run_row_of(lease)).values(stream_mode=mode, stream_note=note))

    # ---- the sweep and claims ----------------------------------------------------------------------------

    def sweep(self, lease: Lease) -> int:
        """End the run's runners whose lease ran out and let their jobs go; return how many runners are live."""
        with self._write(run_id=lease.run_id) as db:
            fence(db, lease)
            return _sweep(db, lease.run_id, _now(db, self.postgres), me=lease.runner_id)

    def claim_jobs(self, lease: Lease, limit: int, *, only_sent: bool = False) -> list[JobState]:
        """Take up to `limit` unfinished jobs nobody holds: first those already sent (a lost runner's: they need
        reconciling, polling or downloading, never resending blindly), then pending ones in order (none with
        `only_sent`). On PostgreSQL rows another runner is claiming are skipped (FOR UPDATE SKIP LOCKED), so claims
        never wait on each other."""
        from batchgen.engine.store import job_state  # the row -> JobState reader lives with the store

        with self._claiming(lease) as db:
            fence(db, lease)
            statuses = [s for s in UNFINISHED if s != JobStatus.PENDING.value] if only_sent else UNFINISHED
            wanted = (
                select(JOBS.c.id)
                .where(JOBS.c.run_id == lease.run_id, JOBS.c.runner_id.is_(None), JOBS.c.status.in_(statuses))
                .order_by((JOBS.c.status == JobStatus.PENDING.value), JOBS.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = list(db.execute(wanted).scalars())
            if not ids:
                return []
            db.execute(update(JOBS).where(JOBS.c.id.in_(ids)).values(runner_id=lease.runner_id))
            rows = db.execute(select(JOBS).where(JOBS.c.id.in_(ids)).order_by(JOBS.c.id)).all()
        return [job_state(r) for r in rows]

    def unfinished_elsewhere(self, lease: Lease) -> int:
        """Unfinished jobs of the run that this runner does not hold (another runner's, or nobody's yet)."""
        with self._read() as db:
            return int(
                db.execute(
                    select(func.count()).where(
                        JOBS.c.run_id == lease.run_id,
                        JOBS.c.status.in_(UNFINISHED),
                        or_(JOBS.c.runner_id.is_(None), JOBS.c.runner_id != lease.runner_id),
                        func.coalesce(JOBS.c.error_class, "") != "removed",
                    )
                ).scalar_one()
            )

    def runners(self, run_id: int) -> list[RunnerInfo]:
        """The run's runners, live first, newest first."""
        with self._read() as db:
            now = _now(db, self.postgres)
            held: dict[int, int] = dict(
                db.execute(
                    select(JOBS.c.runner_id, func.count())
                    .where(JOBS.c.run_id == run_id, JOBS.c.runner_id.is_not(None), JOBS.c.status.in_(UNFINISHED))
                    .group_by(JOBS.c.runner_id)
                ).all()
            )
            rows = db.execute(select(RUNNERS).where(RUNNERS.c.run_id == run_id).order_by(RUNNERS.c.id.desc())).all()
        return runner_infos(rows, now, held)

    def _claiming(self, lease: Lease) -> AbstractContextManager[Connection]:
        # SKIP LOCKED needs no run lock on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises anyway
        return self._write(run_id=lease.run_id, lock=not self.postgres)


def _now(db: Connection, postgres: bool) -> datetime:
    """The time leases are judged by: the database's own clock on PostgreSQL (shared by every machine)."""
    if postgres:
        value = db.execute(select(func.now())).scalar_one()
        return as_utc(value) or utcnow()
    return utcnow()


def live_runner(db: Connection, run_id: int, postgres: bool) -> str | None:
    """The identity of a live runner of the run (None when none is)."""
    now = _now(db, postgres)
    return live_identity(
        db.execute(select(RUNNERS).where(RUNNERS.c.run_id == run_id, RUNNERS.c.ended_at.is_(None))), now
    )


def _live_runner(runner_id: Any, token: Any) -> tuple[ColumnElement[bool], ...]:
    """A runner's row, as long as it is live with this token."""
    return RUNNERS.c.id == runner_id, RUNNERS.c.token == token, RUNNERS.c.ended_at.is_(None)


def _this_runner(lease: Lease) -> tuple[ColumnElement[bool], ...]:
    """The lease's runner row, as long as it is live with the lease's token."""
    return _live_runner(lease.runner_id, lease.epoch)


# with bound parameters, so that the fence and the hold, which run in every write a runner makes, are statements
# built once (building them anew each time was a tenth of its CPU, issue 15)
_LIVE_RUNNER = _live_runner(bindparam("runner_id"), bindparam("token"))


def _run_row_of(lease: Lease) -> tuple[ColumnElement[bool], ...]:
    """The run's row, as long as the lease's runner was the last to take or join it (its single-runner fields)."""
    return RUNS.c.id == lease.run_id, RUNS.c.epoch == lease.epoch


_IS_LIVE = select(RUNNERS.c.id).where(*_LIVE_RUNNER)
# the jobs of `ids` this runner holds while it is live: their rows locked (not the runner's: its heartbeat must not
# wait), in one order for every locker of several rows, so no two writers deadlock
_HELD = (
    select(JOBS.c.id)
    .join(RUNNERS, RUNNERS.c.id == JOBS.c.runner_id)
    .where(JOBS.c.id.in_(bindparam("ids", expanding=True)), *_LIVE_RUNNER)
    .order_by(JOBS.c.id)
    .with_for_update(of=JOBS)
)


def _is_live(db: Connection, lease: Lease) -> bool:
    return db.execute(_IS_LIVE, {"runner_id": lease.runner_id, "token": lease.epoch}).first() is not None


def fence(db: Connection, lease: Lease) -> None:
    """Inside a write: the runner's row must still be live with the lease's token (LeaseLostError otherwise)."""
    if not _is_live(db, lease):
        raise lease_lost()


def fence_holding(db: Connection, lease: Lease, job_ids: Iterable[int]) -> None:
    """Inside a write: `fence`, and the runner must hold each of the jobs, whose rows are locked (FOR UPDATE) so a
    sweep letting them go waits for this transaction; LeaseLostError otherwise. One statement for both: a runner
    whose row was ended holds nothing, so an empty answer for jobs it should hold is the same refusal."""
    wanted = set(job_ids)
    if not wanted:
        fence(db, lease)
        return
    held = db.execute(_HELD, {"ids": sorted(wanted), "runner_id": lease.runner_id, "token": lease.epoch}).scalars()
    if set(held) != wanted:
        raise lease_lost()


def _sweep(db: Connection, run_id: int, now: datetime, *, me: int | None) -> int:
    _end_runners(db, run_id, now, "lease expired", only_expired=True, sparing=me)
    return int(
        db.execute(select(func.count()).where(RUNNERS.c.run_id == run_id, RUNNERS.c.ended_at.is_(None))).scalar_one()
    )


def _end_runners(
    db: Connection, run_id: int, now: datetime, reason: str, *, only_expired: bool, sparing: int | None = None
) -> None:
    """End the run's live runners (all, or those whose lease is over, never `sparing`: the sweeper itself) and
    let every ended runner's jobs go."""
    live = db.execute(select(RUNNERS).where(RUNNERS.c.run_id == run_id, RUNNERS.c.ended_at.is_(None))).all()
    for r in live:
        if r.id == sparing or (only_expired and runner_is_live(r, now)):
            continue
        ending = update(RUNNERS).where(RUNNERS.c.id == r.id, RUNNERS.c.ended_at.is_(None))
        if only_expired and not holder_is_gone(r.identity):
            # re-checked on the row as it is when locked: a heartbeat that got there first keeps it live
            ending = ending.where(RUNNERS.c.lease_until <= now)
        db.execute(ending.values(ended_at=now, end_reason=reason))
    # the ids first: a sub-select here made SQLite walk the run's jobs (0.2 s at a million) instead of the index
    ended = list(
        db.execute(select(RUNNERS.c.id).where(RUNNERS.c.run_id == run_id, RUNNERS.c.ended_at.is_not(None))).scalars()
    )
    if ended:
        db.execute(update(JOBS).where(JOBS.c.runner_id.in_(ended)).values(runner_id=None))


def _refuse_if_runners(db: Connection, run: Any, now: datetime) -> None:
    live = [r for r in db.execute(select(RUNNERS).where(RUNNERS.c.run_id == run.id)).all() if runner_is_live(r, now)]
    if live:
        r = live[0]
        raise RunLockedError(
            f"run {run.name!r} is being run by {len(live)} runner(s), e.g. process {r.pid} on {r.host}; "
            "wait for them to finish, or stop them first"
        )


__all__ = ["LEASE_SECONDS", "RUNNERS", "UNFINISHED", "RunnerInfo", "RunnerSeats", "fence", "fence_holding"]
