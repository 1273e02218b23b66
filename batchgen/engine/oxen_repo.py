"""A run's results as an Oxen dataset: a local Oxen repository holding the files, the results table and the
manifest, committed once per change (`batchgen export --oxen-repo DIR`, or `output: {oxen_repo: DIR}`).

The layout of DIR, stable from one commit to the next so that only what changed is committed:

    DIR/files/NAME          each succeeded job's file, hard-linked (or copied) from the run's output directory;
                            when DIR *is* the output directory the files stay where they are
    DIR/results.csv         one row per job; output_path relative to DIR
    DIR/results.parquet     the same table with typed columns (when pyarrow is importable: oxenai brings it)
    DIR/manifest.yaml       the manifest the run was made from

The `oxenai` package (a Rust extension; the `oxen` extra) is imported only here and only when used.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from batchgen.core.export import export_records, write_csv
from batchgen.core.jobs import JobRow, JobStatus
from batchgen.engine.outputs import write_atomically
from batchgen.engine.store import RunInfo, Store
from batchgen.errors import OutputError

FILES_DIR = "files"
TABLE_CSV = "results.csv"
TABLE_PARQUET = "results.parquet"
MANIFEST_COPY = "manifest.yaml"
INSTALL_HINT = "pip install 'batchgen[oxen]'"


@dataclass(frozen=True, slots=True)
class DatasetCommit:
    """What one export did: the commit it made (None: nothing had changed since `head`) and the paths in it."""

    repo: Path
    commit_id: str | None
    head: str | None  # the repository's latest commit after the export
    message: str
    added: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    parquet: bool = False


def commit_run(store: Store, run: RunInfo, repo_dir: Path) -> DatasetCommit:
    """Lay the run's files, table and manifest out in `repo_dir` (an Oxen repository, made if need be) and commit
    whatever changed with a message naming the run, its manifest's sha256, its job counts and its cost."""
    oxen = check_ready()
    rows = store.job_rows(run.id)
    counts = store.status_counts(run.id)
    spent = store.money(run.id).spent
    repo_dir = repo_dir.absolute()
    out_dir = Path(run.out_dir).absolute()
    try:
        repo_dir.mkdir(parents=True, exist_ok=True)
        table_rows, paths = _place_files(rows, out_dir, repo_dir)
    except OSError as exc:
        raise OutputError(f"cannot lay out the dataset in {repo_dir}: {exc}") from exc
    write_atomically(repo_dir / TABLE_CSV, lambda out: write_csv(table_rows, out))
    paths.append(TABLE_CSV)
    parquet = _write_parquet(table_rows, repo_dir / TABLE_PARQUET)
    if parquet:
        paths.append(TABLE_PARQUET)
    manifest_sha = _copy_manifest(Path(run.manifest_path), repo_dir / MANIFEST_COPY)
    if manifest_sha is not None:
        paths.append(MANIFEST_COPY)
    message = commit_message(run.name, manifest_sha, {str(s): n for s, n in counts.items()}, spent)
    with _oxen_errors(repo_dir), _stdout_to_stderr():
        repo = oxen.Repo(str(repo_dir))
        if not (repo_dir / ".oxen").is_dir():
            repo.init()
        for path in paths:
            repo.add(str(repo_dir / path))
        staged = repo.status()
        added = tuple(sorted(staged.added_files()))
        modified = tuple(sorted(staged.modified_files()))
        removed = tuple(sorted(staged.removed_files()))
        commit_id = repo.commit(message).id if added or modified or removed else None
        log = repo.log()
    head = log[0].id if log else None
    return DatasetCommit(repo_dir, commit_id, head, message, added, modified, removed, parquet)


def commit_message(run: str, manifest_sha256: str | None, counts: Mapping[str, int], spent: float) -> str:
    """`batchgen run NAME: 4 jobs (3 succeeded, 1 failed), $0.16 spent, manifest sha256 ...` (pure)."""
    total = sum(counts.values())
    parts = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    manifest = f"manifest sha256 {manifest_sha256}" if manifest_sha256 else "manifest file not found"
    return f"batchgen run {run}: {total} job(s) ({parts or 'none'}), ${spent:.2f} spent, {manifest}"


def check_ready() -> ModuleType:
    """The `oxen` module of the oxenai package, once it is importable and has a user to commit as; otherwise an
    OutputError saying what to install or configure."""
    try:
        oxen = importlib.import_module("oxen")
    except ImportError as exc:
        raise OutputError(f"an Oxen dataset needs the oxenai package ({exc}): {INSTALL_HINT}") from None
    # oxen refuses to commit without a name and email (and its `current_user` panics when there are none)
    config = Path(oxen.util.get_oxen_config_dir()) / "user_config.toml"
    if not config.is_file():
        raise OutputError(
            f"oxen needs a name and email for its commits and has none ({config} is missing): run "
            "`oxen config --name 'YOUR NAME' --email YOU@EXAMPLE.COM`, or in Python "
            "`oxen.user.config_user('YOUR NAME', 'YOU@EXAMPLE.COM')`"
        )
    return oxen


def _place_files(rows: Sequence[JobRow], out_dir: Path, repo_dir: Path) -> tuple[list[JobRow], list[str]]:
    """Bring every succeeded job's file into `repo_dir` and return the rows with output_path relative to it, and
    the paths (relative to it) to add."""
    in_place = out_dir == repo_dir
    table: list[JobRow] = []
    paths: list[str] = []
    for row in rows:
        source = _output_file(row.output_path, out_dir) if row.status is JobStatus.SUCCEEDED else None
        if source is None:
            table.append(replace(row, output_path=None))
            continue
        if in_place and source.is_relative_to(repo_dir):
            relative = source.relative_to(repo_dir).as_posix()
        else:
            inside = source.relative_to(out_dir) if source.is_relative_to(out_dir) else Path(source.name)
            relative = (Path(FILES_DIR) / inside).as_posix()
            _link_or_copy(source, repo_dir / relative, row.sha256)
        table.append(replace(row, output_path=relative))
        paths.append(relative)
    return table, paths


def _output_file(output_path: str | None, out_dir: Path) -> Path | None:
    """Where a job's file is: as stored, or relative to the output directory's parent, or inside it."""
    if not output_path:
        return None
    stored = Path(output_path)
    for candidate in (stored, out_dir.parent / stored, out_dir / stored.name):
        if candidate.is_file():
            return candidate.absolute()
    return None


def _link_or_copy(source: Path, target: Path, sha256: str | None) -> None:
    """Make `target` hold `source`'s bytes: a hard link where the file system allows one, else a copy. A target
    that already holds them (same file, or same size and sha256) is left alone, so a second export costs nothing."""
    if target.exists():
        if os.path.samefile(source, target):
            return
        if target.stat().st_size == source.stat().st_size and sha256 and _sha256(target) == sha256:
            return
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:
        shutil.copyfile(source, temp)
    os.replace(temp, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_manifest(manifest: Path, target: Path) -> str | None:
    """Copy the run's manifest beside the table and return its sha256 (None when the file is gone)."""
    try:
        data = manifest.read_bytes()
    except OSError:
        return None
    write_atomically(target, lambda out: out.write(data.decode("utf-8", errors="replace")))
    return hashlib.sha256(data).hexdigest()


def _write_parquet(rows: Sequence[JobRow], path: Path) -> bool:
    """The table as Parquet when pyarrow is importable (oxenai depends on it); False when it is not."""
    try:
        parquet = importlib.import_module("pyarrow.parquet")
        pyarrow = importlib.import_module("pyarrow")
    except ImportError:
        return False
    columns, records = export_records(rows)
    table = pyarrow.table({c: _column([r[c] for r in records]) for c in columns})
    temp = path.with_name(f".{path.name}.tmp")
    try:
        parquet.write_table(table, str(temp))
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
    return True


def _column(values: list[Any]) -> list[Any]:
    """One type per Parquet column: values of one scalar kind as they are (ints with floats become floats),
    anything else (lists, mappings, mixed kinds) as compact JSON text."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1 and kinds <= {str, int, float, bool}:
        return values
    if kinds <= {int, float}:
        return [None if v is None else float(v) for v in values]
    return [None if v is None else json.dumps(v, separators=(",", ":"), ensure_ascii=False) for v in values]


@contextlib.contextmanager
def _oxen_errors(repo_dir: Path) -> Iterator[None]:
    """oxen raises ValueError (or its own exceptions) for a repository it cannot use: name the directory."""
    try:
        yield
    except (ValueError, OSError, RuntimeError) as exc:
        raise OutputError(f"oxen could not commit to {repo_dir}: {exc}") from exc


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """oxen's Rust core prints progress ("oxen added 3 files") to file descriptor 1, which is batchgen's data
    channel: point it at stderr for the duration. (Python's own buffered stdout is not flushed here, and so lands
    on fd 1 after it is restored.)"""
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
