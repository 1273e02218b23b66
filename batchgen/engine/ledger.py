"""The ledger of generations, in SQL: what a row holds, and where the run's money stands (spent, reserved, the
paid-but-unused). Rows are added and updated, never deleted."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, case, column, func, insert, select, table, update
from sqlalchemy.exc import IntegrityError

from batchgen.core.jobs import canonical_json
from batchgen.core.lifecycle import RESERVING, IllegalTransition
from batchgen.core.money import Money
from batchgen.core.remote import RemoteGeneration
from batchgen.engine.records import JobState
from batchgen.engine.sqlite import utcnow
from batchgen.engine.statements import bound_facts, execute_by_columns
from batchgen.engine.tables import GenerationTable, JobTable, RunTable
from batchgen.engine.tallies import NANO

RUNS = RunTable.__table__  # type: ignore[attr-defined]
JOBS = JobTable.__table__  # type: ignore[attr-defined]
GENERATIONS = GenerationTable.__table__  # type: ignore[attr-defined]


def insert_generation(
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
        db.execute(insert(GENERATIONS).values(**_generation_row(run_id, job, generation_id, how, now, remote)))
    except IntegrityError as exc:
        raise IllegalTransition(
            f"generation {generation_id} is already in the ledger: it cannot have two jobs"
        ) from exc


def insert_generations(
    db: Connection, run_id: int, pairs: Sequence[tuple[JobState, str]], *, how: str, now: datetime
) -> None:
    """`insert_generation` for the ids of several enqueue replies: one executemany (none is inserted when one of
    the ids is in the ledger already)."""
    if len(pairs) == 1:
        job, generation_id = pairs[0]
        insert_generation(db, run_id, job, generation_id, how=how, now=now)
        return
    try:
        db.execute(insert(GENERATIONS), [_generation_row(run_id, job, gid, how, now) for job, gid in pairs])
    except IntegrityError as exc:
        ids = ", ".join(generation_id for _, generation_id in pairs)
        raise IllegalTransition(
            f"one of the generations {ids} is already in the ledger (or given twice): no generation can have two jobs"
        ) from exc


def _generation_row(
    run_id: int, job: JobState, generation_id: str, how: str, now: datetime, remote: RemoteGeneration | None = None
) -> dict[str, Any]:
    """A new ledger row: the job's generation, as an enqueue reply or an adopted remote row gave it."""
    return {
        "generation_id": generation_id,
        "run_id": run_id,
        "job_id": job.id,
        "model": job.model,
        "request_json": canonical_json(job.params),
        "how": how,
        "seen_at": now,
        "enqueued_at": remote.enqueued_at if remote else None,
        "remote_status": remote.status if remote and remote.is_known_status else "queued",
        "estimated_cost": job.estimated_cost,
        "result_url": remote.result_url if remote else None,
        "updated_at": now,
    }


def observed(db: Connection, job: JobState, remote: RemoteGeneration) -> None:
    observed_many(db, [(job, remote)])


def observed_many(db: Connection, seen: Sequence[tuple[JobState, RemoteGeneration]]) -> None:
    """What the API says of the generations of these jobs: their remote status (and result_url) in the ledger."""
    update_generations(
        db,
        [
            (job.generation_id, {"remote_status": remote.status, **present(result_url=remote.result_url)})
            for job, remote in seen
            if remote.is_known_status and job.generation_id
        ],
        now=utcnow(),
    )


def set_remote_status(db: Connection, generation_id: str | None, status: str, **facts: Any) -> None:
    if generation_id:
        update_generations(db, [(generation_id, {"remote_status": status, **present(**facts)})], now=utcnow())


def update_generations(db: Connection, updates: Sequence[tuple[str, dict[str, Any]]], *, now: datetime) -> None:
    """Set facts (columns -> values) of ledger rows by generation id, and their updated_at: one executemany per
    set of columns."""
    execute_by_columns(db, _updating_generation, (({"gid": gid, "now": now}, facts) for gid, facts in updates))


@functools.cache
def _updating_generation(columns: tuple[str, ...]) -> Any:
    """The ledger's UPDATE of one generation's `columns` (engine/statements.py)."""
    return (
        update(GENERATIONS)
        .where(GENERATIONS.c.generation_id == bindparam("gid"))
        .values(updated_at=bindparam("now"), **bound_facts(columns))
    )


def paid_generation_ids() -> Any:
    return select(GENERATIONS.c.generation_id).where(GENERATIONS.c.remote_status == "succeeded")


def unused_query(run_id: int) -> Any:
    g, j = GENERATIONS, JOBS
    uses = select(j.c.id).where(j.c.id == g.c.job_id, j.c.generation_id == g.c.generation_id).exists()
    return (
        select(g)
        .where(g.c.run_id == run_id, g.c.remote_status.not_in(["failed", "cancelled", "lost"]), ~uses)
        .order_by(g.c.seen_at)
    )


@dataclass(frozen=True, slots=True)
class Standing:
    """What an intent is checked against, read in one statement (one snapshot: a job finishing meanwhile is
    counted once, as reserved or as spent, never in neither)."""

    spent: float
    reserved: float
    budget: float | None
    in_flight: int  # the run's jobs holding a place of its concurrency
    tallied: bool = False  # the ledger's money from its tallies (SQLite), not added up now


_LEDGER_TALLIES = table("ledger_tallies", column("run_id"), column("spent"), column("flying"))


def ledger_sums(run_id: int) -> Select[Any]:
    """The run's money in the ledger, in one pass over its rows: spent (every generation the API charges for, at
    its cost or else its estimate) and in flight (the estimates of generations not yet charged nor ended). The
    rules live here once, for the intents' check, `money` and `status`."""
    g = GENERATIONS.c
    paid = (g.remote_status == "succeeded") | g.cost.is_not(None)
    flying = g.cost.is_(None) & g.remote_status.not_in(["succeeded", "failed", "cancelled"])
    return select(
        func.coalesce(func.sum(case((paid, func.coalesce(g.cost, g.estimated_cost, 0.0)), else_=0.0)), 0.0).label(
            "spent"
        ),
        func.coalesce(func.sum(case((flying, func.coalesce(g.estimated_cost, 0.0)), else_=0.0)), 0.0).label("flying"),
    ).where(g.run_id == run_id)


def tallied_sums(run_id: int) -> Select[Any]:
    """`ledger_sums` as SQLite's triggers keep it (engine/tallies.py, m007): one row read, at any size. Kept in whole
    nanodollars, it can differ from a sum of floats added up now in the last bits; a decision that close to a budget is
    taken again on `ledger_sums` (transitions.record_intents)."""
    t = _LEDGER_TALLIES.c
    return select(  # type: ignore[return-value]  # an integer over a float: SQLAlchemy types it Decimal-or-float
        (func.coalesce(func.sum(t.spent), 0) / NANO).label("spent"),
        (func.coalesce(func.sum(t.flying), 0) / NANO).label("flying"),
    ).where(t.run_id == run_id)


def standing_of(
    db: Connection,
    run_id: int,
    counted_in_flight: Sequence[str] = (),
    *,
    money_if_budget: bool = False,
    added_up: bool = False,
) -> Standing:
    """The run's money, budget and jobs in flight. With `money_if_budget` (an intent's check), the money only
    when the run has a budget to check it against. On SQLite the ledger's money comes from its tallies (adding up
    the ledger is a pass over every generation of the run: 0.25-0.6 s at a million, for every intent batch), unless
    `added_up` asks for the pass."""
    counting = (
        select(func.count())
        .select_from(JOBS)
        .where(JOBS.c.run_id == run_id, JOBS.c.status.in_(list(counted_in_flight)))
    )
    if money_if_budget and db.execute(select(RUNS.c.budget).where(RUNS.c.id == run_id)).scalar() is None:
        return Standing(spent=0.0, reserved=0.0, budget=None, in_flight=int(db.execute(counting).scalar_one()))
    in_flight = counting.scalar_subquery()
    tallied = db.dialect.name == "sqlite" and not added_up
    sums = (tallied_sums(run_id) if tallied else ledger_sums(run_id)).subquery()
    intents = (
        select(func.coalesce(func.sum(func.coalesce(JOBS.c.estimated_cost, 0.0)), 0.0))
        .where(JOBS.c.run_id == run_id, JOBS.c.status.in_([s.value for s in RESERVING]))
        .scalar_subquery()
    )
    budget = select(RUNS.c.budget).where(RUNS.c.id == run_id).scalar_subquery()
    row = db.execute(select(sums.c.spent, sums.c.flying, intents, budget, in_flight)).one()
    return Standing(
        spent=float(row[0] or 0.0),
        reserved=float(row[1] or 0.0) + float(row[2] or 0.0),
        budget=row[3],
        in_flight=int(row[4] or 0),
        tallied=tallied,
    )


def money_of(db: Connection, run_id: int) -> Money:
    standing = standing_of(db, run_id)
    unused = db.execute(unused_query(run_id)).all()
    return Money(
        spent=standing.spent,
        reserved=standing.reserved,
        budget=standing.budget,
        unused=len(unused),
        unused_cost=sum(float(r.cost if r.cost is not None else (r.estimated_cost or 0.0)) for r in unused),
    )


def present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
