"""Writing `batchgen report`: one HTML file for a run of up to SINGLE_FILE_JOBS jobs, else an index and section
pages (core/report_pages.py) in a folder next to it, streamed from the database in bounded memory.

A large report reads the run's jobs once, from one snapshot (engine/job_stream.py): each job is added to the
summary and to a sample to choose the layout from, and its figure and its axes' values are filed into a spool (an
SQLite file in the staging folder). The snapshot is then let go (a long read keeps SQLite's WAL from being
checkpointed while runners write); the layout is chosen from the sample, each job's place in the grid worked out
in SQL, and the pages written from the spool in grid order, one page in memory at a time.

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
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    section_heading,
)
from batchgen.core.report_pages import LayoutSample, PagePlan, index_html, page_file, plan_pages, section_page_html
from batchgen.core.report_tally import PSEUDO_AXES, RunTally, axis_value
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
        tally, sample = RunTally(), LayoutSample()

        def counted(rows: Iterable[JobRow]) -> Iterator[JobRow]:
            for row in rows:
                tally.add(row)
                sample.add(row)
                yield row

        with store.job_row_stream(run.id) as jobs:  # one pass; the snapshot is let go once the spool holds it all
            spool.fill(counted(jobs.rows()), lambda row: _href(media_file(row), pages_dir))
        layout = choose_layout(sample.rows, rows_axis, cols_axis, names=tally.axis_names)
        spool.arrange(layout)
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
    """Every job's figure and its axes' values (canonical JSON), on disk; once the layout is chosen, each job's place
    in the grid is worked out in SQL, and the pages read it back in grid order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE", "cache_size = -65536"):
            self.db.execute(f"PRAGMA {pragma}")  # a scratch file: nothing to recover after a crash
        self.db.execute("CREATE TABLE figures (place INTEGER PRIMARY KEY, axes TEXT, figure TEXT)")
        self.axis_ids: dict[str, str] = {}  # axis name -> its key in `axes` (a0, a1, ...: safe in a JSON path)
        self.sections: dict[str, tuple[int, str]] = {}  # section key -> (number, heading)
        self.columns: dict[str, dict[str, tuple[int, str]]] = {}  # per section key: column key -> (position, label)

    def fill(self, rows: Iterable[JobRow], media_href: Callable[[JobRow], str | None]) -> None:
        """File every job: its place in the run's order (repeats after first repeats), its axes, its figure."""
        ids = self.axis_ids

        def filed() -> Iterator[tuple[int, str, str]]:
            for seq, row in enumerate(rows):
                axes = {}
                for name in (*row.variables, *row.params, *PSEUDO_AXES):
                    axis = ids.get(name)
                    if axis is None:
                        axis = ids[name] = f"a{len(ids)}"
                    axes[axis] = canonical_json(axis_value(row, name))
                yield row.repeat * _REPEAT_STRIDE + seq, json.dumps(axes), job_figure(row, media_href(row))

        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO figures VALUES (?, ?, ?)", filed())
        self.db.execute("COMMIT")

    def _key(self, axes: Sequence[str | None]) -> str:
        """SQL for a job's grouping key on these axes: their canonical values, joined by a character that canonical
        JSON always escapes."""
        parts = [f"COALESCE(json_extract(axes, '$.{self.axis_ids[a]}'), 'null')" for a in axes if a is not None]
        return " || char(30) || ".join(parts) if parts else "''"

    def arrange(self, layout: Layout) -> None:
        """Each job's section, row and column key by the layout, then the sections and columns in first-seen order."""
        section, row, col = self._key(layout.section_axes), self._key([layout.rows_axis]), self._key([layout.cols_axis])
        self.db.execute("BEGIN")
        self.db.execute(
            f"CREATE TABLE placed AS SELECT place, {section} AS section_key, {row} AS row_key, {col} AS col_key "
            "FROM figures"
        )
        self.db.execute("CREATE INDEX placed_by_cell ON placed (section_key, row_key, place, col_key)")
        self.db.execute(
            "CREATE TABLE sections AS SELECT section_key, MIN(place) AS first FROM placed GROUP BY section_key"
        )
        self.db.execute(
            "CREATE TABLE grid_rows AS SELECT section_key, row_key, MIN(place) AS first, COUNT(*) AS figures "
            "FROM placed GROUP BY section_key, row_key"
        )
        self.db.execute("COMMIT")
        for key, _ in self.db.execute("SELECT section_key, first FROM sections ORDER BY first"):
            values = [json.loads(v) for v in key.split("\x1e")] if layout.section_axes else []
            self.sections[key] = (len(self.sections), section_heading(layout, values))
            self.columns[key] = {}
        query = "SELECT section_key, col_key, MIN(place) AS first FROM placed GROUP BY section_key, col_key"
        for key, col_key, _ in self.db.execute(f"{query} ORDER BY first"):
            columns = self.columns[key]
            columns[col_key] = (len(columns), _label(col_key) if layout.cols_axis else "")

    def grid_rows(self) -> Iterator[tuple[str, int, str, str, int]]:
        """The table rows in order: (section key, section number, row key, row label, jobs)."""
        query = (
            "SELECT g.section_key, g.row_key, g.figures FROM grid_rows AS g JOIN sections AS s USING (section_key) "
            "ORDER BY s.first, g.first"
        )
        for key, row_key, figures in self.db.execute(query):
            yield key, self.sections[key][0], row_key, _label(row_key) if row_key else "", figures

    def cells(self, section_key: str, row_key: str) -> list[list[str]]:
        """One table row's figures, by column."""
        columns = self.columns[section_key]
        cells: list[list[str]] = [[] for _ in columns]
        query = (
            "SELECT p.col_key, f.figure FROM placed AS p JOIN figures AS f USING (place) "
            "WHERE p.section_key = ? AND p.row_key = ? ORDER BY p.place"
        )
        for col_key, figure in self.db.execute(query, (section_key, row_key)):
            cells[columns[col_key][0]].append(figure)
        return cells

    def close(self) -> None:
        """Close and delete the spool (it is not one of the report's files)."""
        self.db.close()
        self.path.unlink(missing_ok=True)


def _label(canonical: str) -> str:
    """A header's text from a grouping key's canonical JSON, as report.py labels a value."""
    value = json.loads(canonical)
    return "—" if value is None else cell_text(value)


def _writer(text: str) -> Callable[[TextIO], object]:
    return lambda out: out.write(text)


def _write_pages(
    spool: _Spool, layout: Layout, tally: RunTally, staging: Path, index_href: str, title: str, page_figures: int
) -> list[PagePlan]:
    """Every section page from the spool into `staging`; the plan of the pages."""
    headings = {number: heading for number, heading in spool.sections.values()}
    plans = plan_pages(((n, headings[n], label, jobs) for _, n, _, label, jobs in spool.grid_rows()), page_figures)
    keys = {number: key for key, (number, _) in spool.sections.items()}
    rows = spool.grid_rows()
    for plan in plans:  # the table rows again, in the same order, each page taking its share
        labels = [label for _, label in sorted(spool.columns[keys[plan.section]].values())]
        grid: list[GridRow] = []
        for _ in range(plan.grid_rows):
            section_key, _number, row_key, row_label, _jobs = next(rows)
            grid.append((row_label, spool.cells(section_key, row_key)))
        html = section_page_html(title, layout, plan, len(plans), labels, grid, statuses=tally.counts,
                                 index_href=index_href)  # fmt: skip
        write_atomically(staging / page_file(plan.number), _writer(html))
    return plans
