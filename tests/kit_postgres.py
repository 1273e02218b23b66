"""A PostgreSQL database of its own for each test that needs one (scale-out runs on PostgreSQL).

The server is BATCHGEN_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/postgres: this machine type's,
trust auth). Each call makes a fresh database and drops it afterwards, so tests never share state. Where no server
answers, the test skips with a one-line reason, except under CI=true, where it fails (kit.require).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from tests.kit import require

ADMIN_URL = os.environ.get("BATCHGEN_TEST_POSTGRES") or "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin_engine():  # type: ignore[no-untyped-def]
    return create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT", pool_size=1
    )


def postgres_answers() -> bool:
    try:
        engine = _admin_engine()
        with engine.connect() as db:
            db.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except (OperationalError, ImportError):
        return False


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server; dropped (its connections closed) afterwards."""
    require(postgres_answers(), f"no PostgreSQL answers at {make_url(ADMIN_URL).render_as_string(True)}")
    name = f"batchgen_test_{secrets.token_hex(6)}"
    engine = _admin_engine()
    try:
        with engine.connect() as db:
            db.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as db:
                db.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
