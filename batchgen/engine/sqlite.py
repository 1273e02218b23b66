"""SQLite as batchgen uses it: WAL, explicit transactions (BEGIN, or BEGIN IMMEDIATE for writes), and SQLite's
failures told as StateError in words a user can act on."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from batchgen.engine.utc import as_utc, utcnow
from batchgen.errors import StateError

__all__ = ["as_utc", "utcnow"]  # kept here too: where the store's modules have always taken them from


def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # The driver's own transaction handling is off (it would run DDL outside any transaction); the "begin"
    # listener below starts every transaction explicitly instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    enable_wal(cursor)
    # NORMAL: a commit survives a crash of the process (kill -9) but may be lost to a power cut. Every write that
    # must survive a power cut (the intent to enqueue) is made durable by _write(durable=True), whose fsync also
    # makes every earlier commit durable; losing a later one only sends a job back a step, from which the runner
    # recovers by reconciling (never by resending).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def enable_wal(cursor: sqlite3.Cursor, attempts: int = 100) -> None:
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


def on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


def pragma(conn: Connection, statement: str) -> None:
    cursor = conn.connection.cursor()  # the raw connection: autocommit, outside any transaction
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def state_error(path: Path, exc: OperationalError) -> StateError:
    detail = str(exc.orig)
    if "readonly" in detail:
        return StateError(f"the state database {path} is read-only ({detail}); make it writable and resume")
    if "locked" in detail:
        return StateError(f"the state database {path} is locked by another process ({detail})")
    if "disk" in detail or "full" in detail:
        return StateError(f"cannot write the state database {path}: {detail}; free some space and resume")
    return StateError(f"cannot use the state database {path}: {detail}")
