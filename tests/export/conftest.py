"""Fixtures for the export and report tests (the values themselves live in rows.py)."""

from __future__ import annotations

import pytest

from batchgen.core.jobs import JobRow

from .rows import MakeRow, demo_rows, make_row


@pytest.fixture(name="make_row")
def make_row_fixture() -> MakeRow:
    return make_row


@pytest.fixture(name="demo_rows")
def demo_rows_fixture() -> list[JobRow]:
    return demo_rows()
