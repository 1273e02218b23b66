"""What several commands share: the options and argument they spell the same way, their settings, the store.

`settings()` is the CLI's one read of the environment; `batchgen.settings` says which source wins.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from batchgen.engine.records import RunInfo
from batchgen.settings import Settings, resolve_settings

if TYPE_CHECKING:
    from batchgen.engine.exports import SplitExport
    from batchgen.engine.store import Store

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="State database: a SQLite file, or postgresql://USER@HOST:PORT/DB to share a run between machines "
        "(env BATCHGEN_DB; default state/batchgen.db).",
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="API base URL (env BATCHGEN_BASE_URL; default https://hub.oxen.ai; a stored run defaults to its own).",
    ),
]
RunArgument = Annotated[str | None, typer.Argument(metavar="[RUN]", help="Run name (default: the latest).")]
RowsAxisOption = Annotated[str | None, typer.Option("--rows", help="Axis down the rows (default: automatic).")]
ColsAxisOption = Annotated[str | None, typer.Option("--cols", help="Axis across the columns (default: automatic).")]
SubmitRateOption = Annotated[
    float, typer.Option("--submit-rate", min=0.01, help="Enqueue requests per second at most (429s slow it further).")
]


def settings(*, db: str | Path | None = None, base_url: str | None = None, run: RunInfo | None = None) -> Settings:
    """The settings of a command: its flags, then the run's stored base URL, then the environment, then defaults."""
    return resolve_settings(os.environ, db=db, base_url=base_url, run_base_url=run.base_url if run else None)


@contextlib.contextmanager
def existing_store(db: str | Path | None) -> Iterator[Store]:
    """The state database named by --db (or the environment, or the default); it must exist already."""
    from batchgen.engine.store import Store  # here: `status` of a SQLite file reads it without SQLAlchemy

    store = Store.open(settings(db=db).db, create=False)
    try:
        yield store
    finally:
        store.close()


def split_export(part_dir: Path | None = None) -> SplitExport:
    """How `export` and a run's results.csv may write a large run's second half in a helper process: this Python
    running cli/export_part.py, the part file in `part_dir` (None: the temp dir; results.csv: its own directory)."""
    from batchgen.engine.exports import SplitExport  # here: `status` imports this module, and no SQLAlchemy

    return SplitExport([sys.executable, "-m", "batchgen.cli.export_part"], part_dir=part_dir)
