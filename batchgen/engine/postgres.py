"""PostgreSQL as batchgen uses it: psycopg 3 through SQLAlchemy, one transaction per write, and the writes that
decide on money or ownership serialised per run by a transaction-scoped advisory lock (the same guarantee SQLite's
BEGIN IMMEDIATE gives: a writer decides on what no other writer can change under it). Claims of pending jobs do
not need it: they use `FOR UPDATE SKIP LOCKED`. Failures are told as StateError, never with the password."""

from __future__ import annotations

import os

from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from batchgen.errors import StateError

LOCK_SPACE = 0x6267  # "bg": the first key of every advisory lock batchgen takes
GLOBAL_LOCK = 0  # the second key for writes that are not one run's (creating runs, migrations)
IDLE_IN_TRANSACTION_MS = 10_000
LOCK_WAIT_MS = 60_000


def postgres_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError for a malformed URL
        raise StateError(f"cannot read the database URL {shown(url)}: {exc}") from None
    parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        import psycopg  # noqa: F401  (an optional extra: say how to get it)
    except ImportError:
        raise StateError("a PostgreSQL database needs psycopg: pip install 'batchgen[postgres]'") from None
    # A runner's transactions never wait on anything but the database: one left open longer than this is a runner
    # paused (SIGSTOP, a laptop lid) or cut off mid-write; the server ends its session, so its locks (the run's
    # advisory lock above all) do not hold the other runners. A lock wait past LOCK_WAIT_MS is an error, not a hang.
    options = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS} -c lock_timeout={LOCK_WAIT_MS}"
    # the process shows in pg_stat_activity as batchgen:PID, for whoever looks after the database
    connect_args = {"options": options, "application_name": f"batchgen:{os.getpid()}"}
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args)


def lock_for_writing(conn: Connection, run_id: int | None) -> None:
    """Inside a transaction: wait for the run's write lock (or the global one), held until commit or rollback."""
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:space, :key)"),
        {"space": LOCK_SPACE, "key": GLOBAL_LOCK if run_id is None else int(run_id)},
    )


def shown(url: str) -> str:
    """The URL as it may be printed: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the database URL"


def postgres_error(url: str, exc: DBAPIError) -> StateError:
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    return StateError(f"cannot use the state database {shown(url)}: {detail}")
