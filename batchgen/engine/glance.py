"""`batchgen status` of a SQLite state file, read through the standard library's driver alone.

`status` has 1 s at 1,000,000 jobs, Python's start included, and on this machine type importing SQLAlchemy and
SQLModel takes 0.4-0.7 s of it. So for a SQLite file at the newest schema, the command reads the run, its counts
and money (the tallies, engine/tallies.py) and its runners here, in one read transaction, with the store's own
rules for who holds a run (`holders.lease_is_over`, `holders.runner_is_live`) and its own values (`records`).
For anything else (a PostgreSQL URL, a missing file, an older or newer schema, no such run, a file SQLite cannot
read) `glance` returns None and the command opens the `Store`, which migrates, or says in words what is wrong.
It never writes: a database an older batchgen left is migrated by the store, not here.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.request import pathname2url

from batchgen.engine.holders import lease_is_over, live_identity
from batchgen.engine.records import RunInfo, RunnerInfo, RunOverview, run_info, runner_infos
from batchgen.engine.tallies import held_by_runner, tallied_overview
from batchgen.engine.utc import stored_time, utcnow

__all__ = ["NEWEST_MIGRATION", "Glance", "glance"]

NEWEST_MIGRATION = "m007_tallies"  # the schema read here; tests/engine/test_tallies.py keeps it the newest
_TIMES = frozenset({"created_at", "updated_at", "heartbeat_at", "lease_until", "started_at", "ended_at", "seen_at"})


@dataclass(frozen=True, slots=True)
class Glance:
    """What `status` shows: the run, its jobs and money, its runners (live first, newest first)."""

    run: RunInfo
    overview: RunOverview
    runners: list[RunnerInfo]


def glance(path: Path, name: str | None) -> Glance | None:
    """The named run (or the latest) of the SQLite file at `path`, or None when the store should answer instead."""
    try:
        connection = sqlite3.connect(f"file:{pathname2url(str(path))}?mode=rw", uri=True, timeout=10)
    except sqlite3.Error:
        return None  # missing, or not a file SQLite opens: the store's words for it
    with closing(connection) as db:
        db.isolation_level = None
        db.row_factory = _row
        try:
            db.execute("BEGIN")  # one snapshot for every figure (WAL: runners go on writing meanwhile)
            try:
                plain = db.cursor()
                plain.row_factory = None  # tuples, as the store's own driver gives
                return _read(db.cursor(), plain, name)
            finally:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            return None


def _read(cursor: sqlite3.Cursor, plain: sqlite3.Cursor, name: str | None) -> Glance | None:
    applied = {r.name for r in cursor.execute("SELECT name FROM schema_migrations").fetchall()}
    if NEWEST_MIGRATION not in applied or max(applied) != NEWEST_MIGRATION:
        return None  # older (the store migrates it) or newer (the store says so)
    if name:
        row = cursor.execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone()
    else:
        row = cursor.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None  # the store lists the runs there are
    now = utcnow()
    runners = cursor.execute("SELECT * FROM runners WHERE run_id = ? ORDER BY id DESC", (row.id,)).fetchall()
    owner = row.owner
    if lease_is_over(row, now):  # Store.get_run's rule: else the identity of any live runner of the run
        owner = live_identity(runners, now)
    shown = runner_infos(runners, now, held_by_runner(plain, row.id))
    return Glance(run=run_info(row, owner), overview=tallied_overview(plain, row.id), runners=shown)


def _row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Any:
    """A row with its columns as attributes, times as datetimes (naive UTC, as SQLAlchemy reads them)."""
    names = [d[0] for d in cursor.description]
    return SimpleNamespace(**{n: stored_time(v) if n in _TIMES else v for n, v in zip(names, values, strict=True)})
