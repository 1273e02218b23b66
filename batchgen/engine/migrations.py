"""Schema migrations: a plain ordered list of functions, each applied once and recorded.

Never edit a released migration; add the next one. `tables.py` must always equal the result of all of them
(a test checks it).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import Connection, text

from batchgen.engine.tallies import TALLY_BACKFILL, TALLY_DDL

Migration = Callable[[Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def ddl(db: Connection, statement: str) -> None:
    """Run a migration's statement, written in SQLite's words, on this connection's database: on PostgreSQL an
    integer primary key is a SERIAL, a DATETIME a TIMESTAMP WITH TIME ZONE, and INSERT OR IGNORE an
    INSERT ... ON CONFLICT DO NOTHING. SQLite runs the text exactly as it always did."""
    if db.dialect.name == "postgresql":
        statement = statement.replace("INTEGER PRIMARY KEY", "SERIAL PRIMARY KEY")
        statement = re.sub(r"\bDATETIME\b", "TIMESTAMP WITH TIME ZONE", statement)
        if "INSERT OR IGNORE INTO" in statement:
            statement = statement.replace("INSERT OR IGNORE INTO", "INSERT INTO") + " ON CONFLICT DO NOTHING"
    db.execute(text(statement))


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: Connection) -> None:
    ddl(
        db,
        (
            """
            CREATE TABLE runs (
                id INTEGER PRIMARY KEY,
                name VARCHAR NOT NULL UNIQUE,
                manifest_path VARCHAR NOT NULL,
                manifest_sha256 VARCHAR NOT NULL,
                base_url VARCHAR NOT NULL,
                out_dir VARCHAR NOT NULL,
                settings_json VARCHAR NOT NULL,
                created_at DATETIME NOT NULL,
                updated_at DATETIME NOT NULL,
                owner VARCHAR,
                heartbeat_at DATETIME
            )"""
        ),
    )
    ddl(db, ("CREATE INDEX ix_runs_name ON runs (name)"))
    ddl(
        db,
        (
            """
            CREATE TABLE jobs (
                id INTEGER PRIMARY KEY,
                run_id INTEGER NOT NULL REFERENCES runs (id),
                key VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                params_json VARCHAR NOT NULL,
                variables_json VARCHAR NOT NULL,
                repeat INTEGER NOT NULL,
                origin VARCHAR NOT NULL,
                media_type VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                generation_id VARCHAR,
                attempts INTEGER NOT NULL,
                intent_at DATETIME,
                enqueued_at DATETIME,
                started_at DATETIME,
                completed_at DATETIME,
                result_url VARCHAR,
                download_url VARCHAR,
                output_path VARCHAR,
                sha256 VARCHAR,
                bytes INTEGER,
                estimated_cost FLOAT,
                cost FLOAT,
                error VARCHAR,
                error_class VARCHAR,
                updated_at DATETIME NOT NULL,
                UNIQUE (run_id, key)
            )"""
        ),
    )
    ddl(db, ("CREATE INDEX ix_jobs_run_id ON jobs (run_id)"))
    ddl(db, ("CREATE INDEX ix_jobs_status ON jobs (status)"))
    ddl(db, ("CREATE INDEX ix_jobs_generation_id ON jobs (generation_id)"))


@migration
def m002_money_ledger(db: Connection) -> None:
    """Fenced ownership (epoch, lease_until), the run's own budget, and the ledger of every generation."""
    ddl(db, ("ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0"))
    ddl(db, ("ALTER TABLE runs ADD COLUMN lease_until DATETIME"))
    ddl(db, ("ALTER TABLE runs ADD COLUMN budget FLOAT"))
    ddl(
        db,
        (
            """
            CREATE TABLE generations (
                generation_id VARCHAR PRIMARY KEY,
                run_id INTEGER NOT NULL REFERENCES runs (id),
                job_id INTEGER REFERENCES jobs (id),
                model VARCHAR NOT NULL,
                request_json VARCHAR NOT NULL,
                how VARCHAR NOT NULL,
                seen_at DATETIME NOT NULL,
                enqueued_at DATETIME,
                remote_status VARCHAR NOT NULL,
                estimated_cost FLOAT,
                cost FLOAT,
                result_url VARCHAR,
                updated_at DATETIME NOT NULL
            )"""
        ),
    )
    ddl(db, ("CREATE INDEX ix_generations_run_id ON generations (run_id)"))
    ddl(db, ("CREATE INDEX ix_generations_job_id ON generations (job_id)"))
    # every generation a job ever had is in the ledger: backfill what older databases knew. The unfenced matching
    # of older versions could give one generation to two jobs: the first keeps it (OR IGNORE), and the database
    # still opens
    ddl(
        db,
        (
            """
            INSERT OR IGNORE INTO generations (generation_id, run_id, job_id, model, request_json, how, seen_at,
                                               enqueued_at, remote_status, estimated_cost, cost, result_url,
                                               updated_at)
            SELECT generation_id, run_id, id, model, params_json, 'enqueued', COALESCE(enqueued_at, updated_at),
                   enqueued_at,
                   CASE status WHEN 'succeeded' THEN 'succeeded' WHEN 'downloading' THEN 'succeeded'
                               WHEN 'failed' THEN CASE error_class WHEN 'download' THEN 'succeeded' ELSE 'failed' END
                               WHEN 'cancelled' THEN 'cancelled' ELSE status END,
                   estimated_cost, cost, result_url, updated_at
            FROM jobs WHERE generation_id IS NOT NULL"""
        ),
    )


@migration
def m003_stream_state(db: Connection) -> None:
    """What the holder's event stream is doing (live, buffered, polling) and why, for `status`."""
    ddl(db, ("ALTER TABLE runs ADD COLUMN stream_mode VARCHAR"))
    ddl(db, ("ALTER TABLE runs ADD COLUMN stream_note VARCHAR"))


@migration
def m004_runners(db: Connection) -> None:
    """Several runners on one run (PostgreSQL): who they are, their leases, and which jobs each holds."""
    ddl(
        db,
        """
        CREATE TABLE runners (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs (id),
            token INTEGER NOT NULL,
            identity VARCHAR NOT NULL,
            host VARCHAR NOT NULL,
            pid INTEGER NOT NULL,
            started_at DATETIME NOT NULL,
            heartbeat_at DATETIME NOT NULL,
            lease_until DATETIME NOT NULL,
            ended_at DATETIME,
            end_reason VARCHAR,
            stream_mode VARCHAR,
            stream_note VARCHAR
        )""",
    )
    ddl(db, "CREATE INDEX ix_runners_run_id ON runners (run_id)")
    ddl(db, "ALTER TABLE jobs ADD COLUMN runner_id INTEGER")
    ddl(db, "ALTER TABLE jobs ADD COLUMN downloaded_by VARCHAR")
    ddl(db, "CREATE INDEX ix_jobs_runner_id ON jobs (runner_id)")


@migration
def m005_inspection_indexes(db: Connection) -> None:
    """`status` at 1,000,000 jobs (engine/overview.py): indexes that cover what it aggregates, so a count by status
    or a sum of money reads index entries only, never the table rows (BENCHMARKS.md, "A million jobs"). They
    replace the indexes they begin with (every read of jobs by status names the run), so a job's change of status
    still rewrites as many index pages as before, and the write-ahead log of a run grows no faster."""
    ddl(db, "CREATE INDEX ix_jobs_run_status ON jobs (run_id, status, error_class, estimated_cost, runner_id)")
    ddl(db, "DROP INDEX ix_jobs_status")
    ddl(db, "DROP INDEX ix_jobs_run_id")
    ddl(
        db,
        "CREATE INDEX ix_generations_run_money ON generations "
        "(run_id, generation_id, remote_status, job_id, cost, estimated_cost)",
    )
    ddl(db, "DROP INDEX ix_generations_run_id")


@migration
def m006_ledger_pairs_in_order(db: Connection) -> None:
    """`status`'s paid-but-unused read at 1,000,000 jobs (engine/overview.py): m005's ledger index with job_id
    right after generation_id, so a run's (generation, job) pairs come out of it in order and the anti-join with the
    jobs' pairs (ix_jobs_generation_id, in that same order) is one merge of two index scans instead of a look-up per
    ledger row (BENCHMARKS.md, "A million jobs"). The same columns in another order: every read it covered it still
    covers, and a write touches no more pages."""
    ddl(db, "DROP INDEX ix_generations_run_money")
    ddl(
        db,
        "CREATE INDEX ix_generations_run_money ON generations "
        "(run_id, generation_id, job_id, remote_status, cost, estimated_cost)",
    )


@migration
def m007_tallies(db: Connection) -> None:
    """`status` at 1,000,000 jobs without a scan: on SQLite the run's counts and money kept by triggers as its jobs
    and ledger rows change (engine/tallies.py), filled here from what the database already holds. PostgreSQL keeps
    none (one shared row per count would serialise a run's runners) and its `status` reads aggregates, as before."""
    if db.dialect.name != "sqlite":
        return
    for statement in (*TALLY_DDL, *TALLY_BACKFILL):
        db.exec_driver_sql(statement)


def apply_migrations(db: Connection) -> list[str]:
    """Apply every migration not yet recorded, in order, all in the caller's transaction; return their names.

    The caller's transaction must be a real one (the store begins it with BEGIN IMMEDIATE), so a crash half-way
    leaves the database as it was, and a second process opening a new database at the same moment waits for the
    first and then finds every migration applied."""
    ddl(db, ("CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY, applied_at DATETIME)"))
    done = {row[0] for row in db.execute(text("SELECT name FROM schema_migrations"))}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        fn(db)
        db.execute(text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, CURRENT_TIMESTAMP)"), {"n": name})
        applied.append(name)
    return applied
