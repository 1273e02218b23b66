"""A run at a glance, for `batchgen status`: counts, estimates and money in three aggregate reads.

At 1,000,000 jobs each read of the whole run costs a scan of a million index entries, so status makes as few as
it can: one of the jobs (counts, estimates and reservations together, grouped in the order of
`ix_jobs_run_status`), one of the ledger (spent and in flight, from `ix_generations_run_money`), and the
paid-but-unused generations once (they were read twice, for the money and for the list), as one merge of two
index scans (m006). The indexes cover the columns read (migrations m005, m006), so neither table's rows are
touched but the few unused generations'. On SQLite, `Store.overview` reads the same figures from the tallies
(engine/tallies.py); both are laid out by `records.overview_from`. The figures are those of `ledger.money_of` and `Store.status_counts` /
`Store.estimated_total`, computed the same way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, except_, func, select

from batchgen.engine.ledger import GENERATIONS, JOBS, RUNS, ledger_sums
from batchgen.engine.records import RunOverview, ledger_row, overview_from

__all__ = ["run_overview"]


def run_overview(db: Connection, run_id: int) -> RunOverview:
    """Jobs per status and the estimate of every job (both leaving out jobs the manifest no longer has), and where
    the run's money stands, with its paid-but-unused generations."""
    j = JOBS.c
    groups = db.execute(
        select(j.status, j.error_class, func.count(), func.sum(func.coalesce(j.estimated_cost, 0.0)))
        .where(j.run_id == run_id)
        .group_by(j.status, j.error_class)
    ).all()
    sums = db.execute(ledger_sums(run_id)).one()
    budget = db.execute(select(RUNS.c.budget).where(RUNS.c.id == run_id)).scalar()
    unused = [ledger_row(r) for r in db.execute(_unused(run_id))]
    return overview_from(groups, spent=sums.spent, in_flight=sums.flying, budget=budget, unused=unused)


def _unused(run_id: int) -> Any:
    """`ledger.unused_query`, shaped for a million ledger rows: the run's (generation, job) pairs still counted
    (ix_generations_run_money, in generation then job order since m006) EXCEPT every job's (generation, id) pair
    (ix_jobs_generation_id, the same order): SQLite merges the two index scans, one step a row, where a look-up per
    ledger row cost twice as much. The ORDER BY is what asks for the merge (without it SQLite builds a temporary
    b-tree of one side). Then the few generations found are read whole, oldest first."""
    g, j = GENERATIONS.c, JOBS.c
    counted = select(g.generation_id, g.job_id).where(
        g.run_id == run_id, g.remote_status.not_in(["failed", "cancelled", "lost"])
    )
    held = select(j.generation_id, j.id).where(j.generation_id.is_not(None))
    pairs = except_(counted, held).order_by(g.generation_id, g.job_id).subquery()
    return select(GENERATIONS).where(g.generation_id.in_(select(pairs.c.generation_id))).order_by(g.seen_at)
