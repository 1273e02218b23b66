"""The text files a run leaves for people (results CSV, exports, the report), written so none is ever half there."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from batchgen.core.export import write_csv
from batchgen.engine.exports import SplitExport, write_export
from batchgen.engine.store import RunInfo, Store
from batchgen.errors import OutputError


def write_atomically(path: Path, write: Callable[[TextIO], object]) -> None:
    """Write UTF-8 text through `write` into a temp file next to `path`, fsync it, make it 0644 and rename it into
    place: a reader sees the old file or the whole new one, never a part. On any failure the temp file is removed;
    an OSError becomes an OutputError naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror} (check the directory is writable)") from exc
    try:
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes a private (0600) file; an output is as readable as any other
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
        raise


def write_results_csv(store: Store, run: RunInfo, out_dir: Path, split: SplitExport | None = None) -> Path:
    """Write the run's `results.csv` (one row per job) into `out_dir` atomically and return its path. The rows
    stream from the database, none held: at the end of (or on Ctrl-C in) a million-job run too; a large run's
    second half by a helper process where `split` gives one (engine/exports.py)."""
    path = out_dir / "results.csv"
    if split is not None and split.part_dir is None:
        split = replace(split, part_dir=out_dir)  # the part beside the file, on its disk
    with store.job_row_stream(run.id) as jobs:
        write_atomically(path, lambda out: write_export(jobs, write_csv, out, rewindable=True, split=split))
    return path
