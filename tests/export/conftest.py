"""Fixtures for the export and report tests (the values themselves live in rows.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgen.core.jobs import JobRow
from batchgen.engine.store import Store

from .rows import MakeRow, demo_rows, make_row


@pytest.fixture(name="make_row")
def make_row_fixture() -> MakeRow:
    return make_row


@pytest.fixture(name="demo_rows")
def demo_rows_fixture() -> list[JobRow]:
    return demo_rows()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh state database: a SQLite file, then a PostgreSQL database of its own."""
    if request.param == "sqlite":
        opened = Store.open(tmp_path / "state" / "batchgen.db")
        yield opened
        opened.close()
        return
    from tests.kit_postgres import fresh_database

    with fresh_database() as url:
        opened = Store.open(url)
        yield opened
        opened.close()
