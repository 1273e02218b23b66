"""A run's counts and money kept as its rows change, so `status` reads a few rows at any size (SQLite).

At 1,000,000 jobs every aggregate read of a run is a scan of a million index entries: `status` made three (the
jobs by status, the ledger's sums, the paid-but-unused merge), about 1 s on this machine type, on top of Python's
start. Here SQLite keeps the answers itself, in the same transaction as every change, by triggers (migration m007):

- `job_tallies`: per run, status, error class ('' for none) and holding runner (0 for none), the jobs and the sum
  of their estimates (money here is whole nanodollars, so that it adds and takes away exactly). A job's move takes one from its old row and adds one to its new.
- `ledger_tallies`: per run, the ledger's spent and in-flight money (`ledger.ledger_sums`' rules, written here in
  SQL once more: tests/engine/test_tallies.py holds the two together) and how many generations are paid-but-unused
  (`ledger.unused_query`: counted, and no job holds that generation). The few unused generations are read only
  when there are some.

Triggers, not Python: every write path (the store's, a migration's backfill, a benchmark's raw inserts) keeps the
tallies without knowing of them, and a transaction that rolls back takes its tally changes with it.

On PostgreSQL the runners of a run write side by side, and one shared row per count would serialise them (and
deadlock two transactions moving jobs in opposite directions); there `status` keeps its scans (engine/overview.py).

This module imports nothing but the standard library and the store's values: `status` reads a SQLite file through
it with the standard library's driver alone (engine/glance.py), and the store with its own connection's driver.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from batchgen.core.jobs import TERMINAL, JobStatus
from batchgen.engine.records import RunOverview, ledger_row, overview_from

__all__ = ["NANO", "TALLY_BACKFILL", "TALLY_DDL", "UNFINISHED", "held_by_runner", "tallied_overview"]

UNFINISHED = tuple(s.value for s in JobStatus if s not in TERMINAL)  # held by a runner while in these
NANO = 1e9  # nanodollars to a dollar


def _nano(dollars: str) -> str:
    """Money in the tallies is whole nanodollars: integers add up and take away exactly, change after change,
    where floats would leave residues (-4e-16 reserved, once every job is done)."""
    return f"CAST(ROUND(({dollars}) * {NANO!r}) AS INTEGER)"


# a ledger row's part of each sum, for a row named R (NEW or OLD): ledger_sums' `paid` and `flying`
_PAID = _nano(
    "CASE WHEN R.remote_status = 'succeeded' OR R.cost IS NOT NULL THEN COALESCE(R.cost, R.estimated_cost, 0.0) "
    "ELSE 0.0 END"
)
_FLYING = _nano(
    "CASE WHEN R.cost IS NULL AND R.remote_status NOT IN ('succeeded', 'failed', 'cancelled') "
    "THEN COALESCE(R.estimated_cost, 0.0) ELSE 0.0 END"
)
_COUNTED = "R.remote_status NOT IN ('failed', 'cancelled', 'lost')"  # unused_query's: still counted as paid or running
# unused: counted, and no job holds this generation (the job it was for now has another, or there is none)
_UNUSED = (
    f"CASE WHEN {_COUNTED} AND NOT EXISTS (SELECT 1 FROM jobs AS h WHERE h.id = R.job_id "
    "AND h.generation_id = R.generation_id) THEN 1 ELSE 0 END"
)


def _of(expression: str, row: str) -> str:
    return expression.replace("R.", f"{row}.")


def _job_add(row: str, sign: str) -> str:
    return (
        "INSERT INTO job_tallies (run_id, status, error_class, runner_id, jobs, estimated) VALUES "
        f"({row}.run_id, {row}.status, COALESCE({row}.error_class, ''), COALESCE({row}.runner_id, 0), {sign}1, "
        f"{sign}{_nano(f'COALESCE({row}.estimated_cost, 0.0)')}) ON CONFLICT (run_id, status, error_class, runner_id) DO UPDATE "
        "SET jobs = jobs + excluded.jobs, estimated = estimated + excluded.estimated;"
    )


def _ledger_add(row: str, sign: str) -> str:
    return (
        "INSERT INTO ledger_tallies (run_id, spent, flying, unused) VALUES "
        f"({row}.run_id, {sign}({_of(_PAID, row)}), {sign}({_of(_FLYING, row)}), {sign}({_of(_UNUSED, row)})) "
        "ON CONFLICT (run_id) DO UPDATE SET spent = spent + excluded.spent, flying = flying + excluded.flying, "
        "unused = unused + excluded.unused;"
    )


def _holding(job: str, step: str) -> str:
    """The ledger row of (job.generation_id, job.id), if counted, is now held (step -1) or no longer held (+1)."""
    return (
        f"UPDATE ledger_tallies SET unused = unused {step} 1 WHERE run_id IN (SELECT R.run_id FROM generations AS R "
        f"WHERE R.generation_id = {job}.generation_id AND R.job_id = {job}.id AND {_COUNTED});"
    )


_JOB_CHANGED = " OR ".join(
    f"OLD.{c} IS NOT NEW.{c}" for c in ("run_id", "status", "error_class", "runner_id", "estimated_cost")
)
_LEDGER_CHANGED = " OR ".join(
    f"OLD.{c} IS NOT NEW.{c}" for c in ("run_id", "generation_id", "job_id", "remote_status", "cost", "estimated_cost")
)

TALLY_DDL = (
    "CREATE TABLE job_tallies (run_id INTEGER NOT NULL, status VARCHAR NOT NULL, error_class VARCHAR NOT NULL, "
    "runner_id INTEGER NOT NULL, jobs INTEGER NOT NULL, estimated INTEGER NOT NULL, "
    "PRIMARY KEY (run_id, status, error_class, runner_id))",
    "CREATE TABLE ledger_tallies (run_id INTEGER PRIMARY KEY, spent INTEGER NOT NULL, flying INTEGER NOT NULL, "
    "unused INTEGER NOT NULL)",
    f"CREATE TRIGGER tally_job_added AFTER INSERT ON jobs BEGIN {_job_add('NEW', '')} "
    "UPDATE ledger_tallies SET unused = unused - 1 WHERE NEW.generation_id IS NOT NULL AND run_id IN "
    "(SELECT R.run_id FROM generations AS R WHERE R.generation_id = NEW.generation_id AND R.job_id = NEW.id "
    f"AND {_COUNTED}); END",
    f"CREATE TRIGGER tally_job_moved AFTER UPDATE ON jobs WHEN {_JOB_CHANGED} BEGIN "
    f"{_job_add('OLD', '-')} {_job_add('NEW', '')} END",
    "CREATE TRIGGER tally_job_generation AFTER UPDATE OF generation_id ON jobs "
    f"WHEN OLD.generation_id IS NOT NEW.generation_id BEGIN {_holding('OLD', '+')} {_holding('NEW', '-')} END",
    f"CREATE TRIGGER tally_job_removed AFTER DELETE ON jobs BEGIN {_job_add('OLD', '-')} {_holding('OLD', '+')} END",
    f"CREATE TRIGGER tally_generation_added AFTER INSERT ON generations BEGIN {_ledger_add('NEW', '')} END",
    f"CREATE TRIGGER tally_generation_changed AFTER UPDATE ON generations WHEN {_LEDGER_CHANGED} BEGIN "
    f"{_ledger_add('OLD', '-')} {_ledger_add('NEW', '')} END",
    f"CREATE TRIGGER tally_generation_removed AFTER DELETE ON generations BEGIN {_ledger_add('OLD', '-')} END",
)

# the tallies of what a database held before m007 (the same rules, added up once)
TALLY_BACKFILL = (
    "INSERT INTO job_tallies (run_id, status, error_class, runner_id, jobs, estimated) "
    "SELECT run_id, status, COALESCE(error_class, ''), COALESCE(runner_id, 0), COUNT(*), "
    f"SUM({_nano('COALESCE(estimated_cost, 0.0)')}) FROM jobs GROUP BY 1, 2, 3, 4",
    "INSERT INTO ledger_tallies (run_id, spent, flying, unused) "
    f"SELECT R.run_id, SUM({_PAID}), SUM({_FLYING}), SUM({_UNUSED}) FROM generations AS R GROUP BY R.run_id",
)


class _Generation(NamedTuple):
    """The columns of `generations` that `_UNUSED_ROWS` reads, by name, for `records.ledger_row`."""

    generation_id: str
    job_id: int | None
    model: str
    request_json: str
    how: str
    remote_status: str
    estimated_cost: float | None
    cost: float | None
    result_url: str | None
    seen_at: str


_UNUSED_ROWS = (
    "SELECT R.generation_id, R.job_id, R.model, R.request_json, R.how, R.remote_status, R.estimated_cost, R.cost, "
    f"R.result_url, R.seen_at FROM generations AS R WHERE R.run_id = ? AND ({_UNUSED}) = 1 ORDER BY R.seen_at"
)


def tallied_overview(cursor: Any, run_id: int) -> RunOverview:
    """`overview.run_overview`'s figures from the tallies, through a DB-API cursor of a SQLite connection (in the
    caller's read transaction): a few rows at any size, and the unused generations only when there are some."""
    groups = cursor.execute(
        f"SELECT status, error_class, SUM(jobs), SUM(estimated) / {NANO!r} FROM job_tallies "
        "WHERE run_id = ? AND jobs != 0 GROUP BY status, error_class",
        (run_id,),
    ).fetchall()
    found = cursor.execute(
        f"SELECT spent / {NANO!r}, flying / {NANO!r}, unused FROM ledger_tallies WHERE run_id = ?", (run_id,)
    ).fetchone()
    spent, flying, unused_count = found if found is not None else (0.0, 0.0, 0)
    budget = cursor.execute("SELECT budget FROM runs WHERE id = ?", (run_id,)).fetchone()
    unused = (
        [ledger_row(_Generation(*r)) for r in cursor.execute(_UNUSED_ROWS, (run_id,)).fetchall()]
        if unused_count
        else []
    )
    return overview_from(groups, spent=spent, in_flight=flying, budget=budget[0] if budget else None, unused=unused)


def held_by_runner(cursor: Any, run_id: int) -> dict[int, int]:
    """The run's unfinished jobs per runner holding them, from the tallies."""
    marks = ", ".join("?" * len(UNFINISHED))
    return {
        runner: int(n)
        for runner, n in cursor.execute(
            f"SELECT runner_id, SUM(jobs) FROM job_tallies WHERE run_id = ? AND runner_id != 0 AND status IN ({marks}) "
            "GROUP BY runner_id",
            (run_id, *UNFINISHED),
        ).fetchall()
        if n
    }
