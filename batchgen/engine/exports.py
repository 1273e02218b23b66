"""A run's export written: columns guessed and checked, and a large run's second half written by a helper process.

`write_export` is the one way a run is exported (`batchgen export`, results.csv). The columns need every job's
axes before the first row. Into a file that can be rewound they are guessed from the first jobs and checked on
every row; a job with an axis the guess lacks starts the file over, from a full first pass. Most runs have the same
axes throughout, so most exports read the jobs once; stdout, which cannot be rewound, always gets the full pass.

Encoding a million rows is Python's work on one core (a million-row CSV took 12-14 s); on SQLite a second process
can read the same file. So, for a run of `SplitExport.from_jobs` jobs or more, the export splits the jobs at their
middle id: the helper (`command`, which runs `write_part` on the task it reads from stdin) writes the jobs from the
middle on into a part file, while this process writes the first half into the output; then the part is appended.

The two processes read two snapshots. The helper's is used only when it is the same as this process's for the
helper's half, which the helper and this process each check by one aggregate read (the half's count, its last
change and the sum of its changes' microseconds: every change to a job moves its updated_at). When they differ (a
runner wrote in between), when the helper fails or is too slow, or when it finds a job with an axis the columns
lack, this process writes the second half itself from its own snapshot, as a one-process export would: the output
is the same either way. On PostgreSQL, for a database in memory, on one core, or for a small run, nothing splits.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from batchgen.core.export import ExportRecords, MissingColumnError, export_columns_of, write_csv, write_jsonl
from batchgen.engine.job_stream import PAGE, JobRowStream

__all__ = ["SplitExport", "Writer", "write_export", "write_part"]

_WRITERS = {"csv": write_csv, "jsonl": write_jsonl}
_COPY_CHUNK = 1 << 20


class Writer(Protocol):
    """write_csv or write_jsonl, as the export calls them."""

    def __call__(self, rows: ExportRecords, out: TextIO, columns: Sequence[str], *, header: bool = ...) -> int: ...


@dataclass
class SplitExport:
    """How an export may split: `command` starts the helper process (`python -m batchgen.cli.export_part`), which
    reads its task as JSON on stdin and answers `write_part`'s result as JSON on stdout. The part file goes in
    `part_dir` (the output's directory: the same disk, not a temp file system in memory; None: the temp dir).
    `outcomes` tells, for each export it served, how the second half was written."""

    command: Sequence[str]
    part_dir: Path | None = None
    from_jobs: int = 20_000
    outcomes: list[str] = field(default_factory=list)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _writer_name(writer: Writer) -> str | None:
    return next((name for name, known in _WRITERS.items() if known is writer), None)


def write_export(
    jobs: JobRowStream,
    writer: Writer,
    out: TextIO,
    *,
    rewindable: bool,
    guess_from: int = PAGE,
    split: SplitExport | None = None,
) -> int:
    """Write every job through `writer` (write_csv or write_jsonl) to `out`; return the count. `rewindable`: `out`
    can be started over (a file), so the columns may be guessed from the first `guess_from` jobs; `split`: a large
    run's second half may be written by a helper process."""
    if rewindable:
        guess = export_columns_of(dict.fromkeys(jobs.axis_names(limit=guess_from)))
        try:
            return _write_columns(jobs, writer, out, guess, split)
        except MissingColumnError:
            out.seek(0)
            out.truncate()
    # jobs share their names: each distinct tuple once (the pass yields one per job)
    return _write_columns(jobs, writer, out, export_columns_of(dict.fromkeys(jobs.axis_names())), split)


def _write_columns(
    jobs: JobRowStream, writer: Writer, out: TextIO, columns: Sequence[str], split: SplitExport | None
) -> int:
    """Every job through `writer` under `columns` into `out`, the second half by a helper process where `split`
    allows and the run is large enough; the count. MissingColumnError as the one-process export raises it."""
    name, database = _writer_name(writer), jobs.database_file()
    if split is None or name is None or database is None or _cores() < 2:
        return _whole(jobs, writer, out, columns)
    count, middle = jobs.middle()
    if count < split.from_jobs:
        return _whole(jobs, writer, out, columns)
    with _helper(split, jobs, name, database, columns, middle) as helper:
        if helper is None:  # it could not start (why: in outcomes)
            return _whole(jobs, writer, out, columns)
        with closing(jobs.records(before=middle)) as records:
            started = time.monotonic()
            written = writer(ExportRecords(records), out, columns)
            own_seconds = time.monotonic() - started
        second = helper.collect(jobs.fingerprint(middle), own_seconds)
        split.outcomes.append(helper.outcome)
        if second is None:
            with closing(jobs.records(since=middle)) as records:
                return written + writer(ExportRecords(records), out, columns, header=False)
        _append(helper.part, out)
        return written + second


def _whole(jobs: JobRowStream, writer: Writer, out: TextIO, columns: Sequence[str]) -> int:
    with closing(jobs.records()) as records:
        return writer(ExportRecords(records), out, columns)


class _Helper:
    """The helper process writing the second half, and what it answered."""

    def __init__(self, process: subprocess.Popen[bytes], part: Path) -> None:
        self.process, self.part = process, part
        self.outcome = "written by a helper process"

    def collect(self, fingerprint: list[Any], own_seconds: float) -> int | None:
        """The helper's count once it is done and its snapshot of the half is this process's; None (and why, in
        `outcome`) when this process must write the half itself."""
        try:
            answer, errors = self.process.communicate(timeout=max(60.0, 3 * own_seconds))
        except subprocess.TimeoutExpired:
            self.outcome = "the helper was too slow; written by this process"
            return None
        try:
            result = json.loads(answer) if self.process.returncode == 0 else None
        except ValueError:
            result = None
        if not isinstance(result, dict):
            last = errors.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {self.process.returncode}"]
            self.outcome = f"the helper failed ({last[0]}); written by this process"
            return None
        if "error" in result:
            self.outcome = f"the helper stopped ({result['error']}); written by this process"
            return None
        if result.get("fingerprint") != fingerprint:
            self.outcome = "the jobs changed between the two snapshots; written by this process"
            return None
        return int(result["count"])


@contextmanager
def _helper(
    split: SplitExport, jobs: JobRowStream, name: str, database: str, columns: Sequence[str], middle: int
) -> Iterator[_Helper | None]:
    """The helper, started on the jobs from `middle` (None when it cannot be: no part file, no process); stopped
    and its part file removed when the block ends."""
    task = {
        "database": os.path.abspath(database),
        "format": name,
        "columns": list(columns),
        "records": list(jobs.records_statement(middle)),
        "fingerprint": list(jobs.fingerprint_statement(middle)),
    }
    try:
        fd, part_name = tempfile.mkstemp(dir=split.part_dir, prefix=".batchgen-export-", suffix=".part")
    except OSError as exc:
        split.outcomes.append(f"no part file ({exc}); written by this process")
        yield None
        return
    os.close(fd)
    part = Path(part_name)
    try:
        process = subprocess.Popen(
            list(split.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        part.unlink(missing_ok=True)
        split.outcomes.append(f"the helper could not start ({exc}); written by this process")
        yield None
        return
    task["part"] = str(part)
    try:
        stdin, process.stdin = process.stdin, None  # closed here: communicate must not flush it again
        if stdin is not None:  # (it is: asked for above)
            with contextlib.suppress(BrokenPipeError):  # a helper gone at once says why on stderr
                stdin.write(json.dumps(task).encode())
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        yield _Helper(process, part)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()  # reaped, its pipes closed
        part.unlink(missing_ok=True)


def _append(part: Path, out: TextIO) -> None:
    """The part file's text after what `out` holds: as bytes where `out` is UTF-8 over a binary buffer."""
    buffer = getattr(out, "buffer", None)
    encoding = getattr(out, "encoding", None)
    if buffer is not None and encoding is not None and codecs.lookup(encoding).name == "utf-8":
        out.flush()
        with part.open("rb") as source:
            shutil.copyfileobj(source, buffer, _COPY_CHUNK)
        buffer.flush()
        return
    with part.open(encoding="utf-8", newline="") as source:
        while chunk := source.read(_COPY_CHUNK):
            out.write(chunk)


def write_part(task: Mapping[str, Any]) -> dict[str, Any]:
    """The helper's work: the task's jobs (from `records`) into its part file, under its columns, with no header,
    all from one snapshot of `database` read only; the count and the snapshot's fingerprint of those jobs, or the
    error that stopped it (a job with an axis the columns lack)."""
    writer = _WRITERS[task["format"]]
    uri = Path(task["database"]).absolute().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=15.0)
    try:
        connection.execute("BEGIN")  # one snapshot: the fingerprint and the rows read it alike
        fingerprint = list(connection.execute(*task["fingerprint"]).fetchone())
        cursor = connection.execute(*task["records"])
        rows = (row for page in iter(lambda: cursor.fetchmany(5_000), []) for row in page)
        with open(task["part"], "w", encoding="utf-8", newline="") as part:
            try:
                count = writer(ExportRecords(rows), part, task["columns"], header=False)
            except MissingColumnError as exc:
                return {"error": str(exc)}
        connection.execute("COMMIT")
    finally:
        connection.close()
    return {"count": count, "fingerprint": fingerprint}
