"""Writing `batchgen report`: one HTML file for a run of up to SINGLE_FILE_JOBS jobs, else an index and section
pages (core/report_pages.py) in a folder next to it, streamed from the database in bounded memory.

A large report reads the run's jobs twice from one snapshot (engine/job_stream.py): the first pass adds up the
summary and keeps a sample to choose the layout from; the second renders each job's figure and files it, with its
place in the grid, into a spool (an SQLite file in the staging folder). The snapshot is then let go (a long read
would keep SQLite's WAL from being checkpointed while runners write), and the pages are written from the spool in
grid order, one page in memory at a time.

No half-written report is ever left: the pages go into a hidden staging folder next to the index; only once all
of them are written does the old index go, the staging folder take the pages folder's name (the old folder is
moved aside, then removed) and the new index get written (atomically, as every page is). A crash before that
leaves the previous report whole; a crash during the switch leaves no index, never one that links to missing or
mismatched pages. One writer at a time (an flock on `.NAME-pages.lock`), which also removes what a killed one left.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from batchgen.core.export import cell_text
from batchgen.core.jobs import JobRow, canonical_json
from batchgen.core.report import (
    GridRow,
    Layout,
    choose_layout,
    job_figure,
    relative_href,
    render_report,
    section_label,
)
from batchgen.core.report_pages import LayoutSample, PagePlan, index_html, page_file, plan_pages, section_page_html
from batchgen.core.report_tally import RunTally, axis_value
from batchgen.engine.job_stream import JobRowStream
from batchgen.engine.outputs import write_atomically
from batchgen.engine.records import RunInfo
from batchgen.engine.store import Store
from batchgen.errors import OutputError

__all__ = ["PAGE_FIGURES", "SINGLE_FILE_JOBS", "WrittenReport", "job_media_file", "pages_folder", "write_report"]

# Up to this many jobs the report is one file, as it always was (10,000 jobs: 8 MB, first paint 0.17 s); above it,
# an index and pages of at most PAGE_FIGURES jobs (about 0.8 MB of HTML each).
SINGLE_FILE_JOBS = 10_000
PAGE_FIGURES = 1_000
_REPEAT_STRIDE = 1 << 40  # a job's place: repeats after the first come after every first repeat, as on one page

MediaFile = Callable[[JobRow], Path | None]


@dataclass(frozen=True, slots=True)
class WrittenReport:
    """What `write_report` wrote: the index (or only) file, the jobs in it, and the pages folder and its pages."""

    index: Path
    jobs: int
    folder: Path | None = None
    pages: int = 0


def pages_folder(target: Path) -> Path:
    """The folder the section pages of `target` go in: `report.html` -> `report-pages/` next to it."""
    return target.with_name(f"{target.stem}-pages")


def job_media_file(row: JobRow, out_dir: str) -> Path | None:
    """Where a job's file is on disk: as stored, or relative to the output directory's parent, or inside it."""
    if not row.output_path:
        return None
    stored = row.output_path  # strings, not Paths: this runs once per job, a million times for a large run
    name = os.path.basename(stored)
    for candidate in (stored, os.path.join(os.path.dirname(out_dir), stored), os.path.join(out_dir, name)):
        if os.path.isfile(candidate):
            return Path(candidate)
    return None


def write_report(
    store: Store,
    run: RunInfo,
    target: Path,
    *,
    media_file: MediaFile,
    rows_axis: str | None = None,
    cols_axis: str | None = None,
    single_file_jobs: int = SINGLE_FILE_JOBS,
    page_figures: int = PAGE_FIGURES,
) -> WrittenReport:
    """Write the run's report to `target`: one file up to `single_file_jobs` jobs, else an index there and pages of
    at most `page_figures` jobs in `pages_folder(target)`. `media_file(row)` is the job's file on disk, or None."""
    if target.is_dir():
        raise OutputError(f"cannot write the report to {target}: it is a folder (name an HTML file in it)")
    overview = store.overview(run.id)
    title = f"batchgen · {run.name}"
    if sum(overview.counts.values()) <= single_file_jobs:
        rows = store.job_rows(run.id)
        report_dir = target.absolute().parent
        html = render_report(
            rows, title=title, media_href=lambda row: _href(media_file(row), report_dir), rows_axis=rows_axis,
            cols_axis=cols_axis, money=overview.money, unused=overview.unused,
        )  # fmt: skip
        write_atomically(target, lambda out: out.write(html))
        return WrittenReport(target, len(rows))
    folder = pages_folder(target)
    if folder.exists() and not folder.is_dir():  # said now, not after the first pass over a million jobs
        raise OutputError(f"cannot write the report's pages to {folder}: it is a file (move it away, or choose -o)")
    pages_dir = folder.absolute()
    with _staging(folder) as staging, contextlib.closing(_Spool(staging / ".spool.sqlite")) as spool:
        with store.job_row_stream(run.id) as jobs:  # the snapshot is let go once the spool holds every figure
            tally, sample = RunTally(), LayoutSample()
            for row in jobs.rows():
                tally.add(row)
                sample.add(row)
            layout = choose_layout(sample.rows, rows_axis, cols_axis, names=tally.axis_names)
            spool.fill(jobs, layout, lambda row: _href(media_file(row), pages_dir))
        plans = _write_pages(spool, layout, tally, staging, relative_href(target.absolute(), pages_dir), title,
                             page_figures)  # fmt: skip
        spool.close()  # before the switch: the spool is in the staging folder, not one of the pages
        index = index_html(
            title, tally, layout, plans, relative_href(pages_dir, target.absolute().parent),
            money=overview.money, unused=overview.unused, run=run.name,
        )  # fmt: skip
        _switch(staging, folder, target, index)
    return WrittenReport(target, tally.jobs, folder, len(plans))


def _href(found: Path | None, report_dir: Path) -> str | None:
    return relative_href(found.absolute(), report_dir) if found else None


@contextlib.contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A hidden folder next to `folder` for the new pages, while this process holds the report's lock (an flock:
    the kernel lets it go when its holder dies, kill -9 included); removed, with whatever is in it, on any failure.
    What a killed writer left (staging folders, an old pages folder moved aside) is removed first."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(folder.parent / f".{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot write {folder}: {exc.strerror} (check the directory is writable)") from exc
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another `batchgen report` is writing {folder} now: wait for it, or choose -o") from None
        for leftover in folder.parent.glob(f".{glob.escape(folder.name)}.*"):
            if leftover.suffix in (".tmp", ".old") and leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        try:
            staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
            staging.chmod(0o755)  # mkdtemp makes a private folder; the pages are as readable as the index
        except OSError as exc:
            raise OutputError(f"cannot write {folder}: {exc.strerror} (check the directory is writable)") from exc
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # after the switch it is gone already
    finally:
        os.close(lock)


def _switch(staging: Path, folder: Path, target: Path, index: str) -> None:
    """Put the new pages in place and their index last. The old index goes first, so no index ever links to
    pages that are not its own."""
    try:
        target.unlink(missing_ok=True)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old")) / "pages"
            folder.rename(old)
        staging.rename(folder)
    except OSError as exc:
        raise OutputError(f"cannot put the report's pages in {folder}: {exc.strerror}") from exc
    write_atomically(target, lambda out: out.write(index))
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


class _Spool:
    """Every job's figure with its place in the grid, on disk: the pages are read from it in grid order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE", "cache_size = -65536"):
            self.db.execute(f"PRAGMA {pragma}")  # a scratch file: nothing to recover after a crash
        self.db.execute(
            "CREATE TABLE figures (place INTEGER PRIMARY KEY, section INTEGER, row_key TEXT, row_label TEXT, "
            "col INTEGER, figure TEXT)"
        )
        self.sections: dict[str, tuple[int, str]] = {}  # section key -> (number, heading)
        self.columns: list[dict[str, tuple[int, str]]] = []  # per section: column key -> (position, label)

    def fill(self, jobs: JobRowStream, layout: Layout, media_href: Callable[[JobRow], str | None]) -> None:
        def placed() -> Iterator[tuple[int, int, str, str, int, str]]:
            for seq, row in enumerate(jobs.rows()):
                key = canonical_json([axis_value(row, a) for a in layout.section_axes])
                section = self.sections.get(key)
                if section is None:
                    section = self.sections[key] = (len(self.sections), section_label(layout, row))
                    self.columns.append({})
                row_key, row_label = _key_and_label(row, layout.rows_axis)
                col_key, col_label = _key_and_label(row, layout.cols_axis)
                columns = self.columns[section[0]]
                col = columns.get(col_key)
                if col is None:
                    col = columns[col_key] = (len(columns), col_label)
                place = row.repeat * _REPEAT_STRIDE + seq
                yield place, section[0], row_key, row_label, col[0], job_figure(row, media_href(row))

        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO figures VALUES (?, ?, ?, ?, ?, ?)", placed())
        self.db.execute("CREATE INDEX figures_by_cell ON figures (section, row_key, place)")
        self.db.execute(
            "CREATE TABLE grid_rows AS SELECT section, row_key, MIN(place) AS first, row_label, COUNT(*) AS figures "
            "FROM figures GROUP BY section, row_key"
        )
        self.db.execute("CREATE INDEX grid_rows_in_order ON grid_rows (section, first)")
        self.db.execute("COMMIT")

    def close(self) -> None:
        """Close and delete the spool (it is not one of the report's files)."""
        self.db.close()
        self.path.unlink(missing_ok=True)

    def grid_rows(self) -> sqlite3.Cursor:
        """The table rows in order: (section, row key, row label, jobs)."""
        return self.db.execute("SELECT section, row_key, row_label, figures FROM grid_rows ORDER BY section, first")

    def cells(self, section: int, row_key: str) -> list[list[str]]:
        """One table row's figures, by column."""
        cells: list[list[str]] = [[] for _ in self.columns[section]]
        query = "SELECT col, figure FROM figures WHERE section = ? AND row_key = ? ORDER BY place"
        for col, figure in self.db.execute(query, (section, row_key)):
            cells[col].append(figure)
        return cells


def _writer(text: str) -> Callable[[TextIO], object]:
    return lambda out: out.write(text)


def _key_and_label(row: JobRow, axis: str | None) -> tuple[str, str]:
    if axis is None:
        return "", ""
    value = axis_value(row, axis)
    return canonical_json(value), "—" if value is None else cell_text(value)  # as report.py labels a header


def _write_pages(
    spool: _Spool, layout: Layout, tally: RunTally, staging: Path, index_href: str, title: str, page_figures: int
) -> list[PagePlan]:
    """Every section page from the spool into `staging`; the plan of the pages."""
    headings = {number: heading for number, heading in spool.sections.values()}
    plans = plan_pages(((s, headings[s], label, n) for s, _, label, n in spool.grid_rows()), page_figures)
    rows = spool.grid_rows()
    for plan in plans:  # the table rows again, in the same order, each page taking its share
        labels = [label for _, label in sorted(spool.columns[plan.section].values())]
        grid: list[GridRow] = []
        for _ in range(plan.grid_rows):
            section, row_key, row_label, _figures = next(rows)
            grid.append((row_label, spool.cells(section, row_key)))
        html = section_page_html(title, layout, plan, len(plans), labels, grid, statuses=tally.counts,
                                 index_href=index_href)  # fmt: skip
        write_atomically(staging / page_file(plan.number), _writer(html))
    return plans
