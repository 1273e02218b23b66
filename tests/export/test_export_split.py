"""An export split across two processes (engine/exports.py) writes what one process writes, whatever happens to
the helper: a change between the two snapshots, a helper that fails or answers nonsense, a column it lacks."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from batchgen.core.export import write_csv, write_jsonl
from batchgen.emulator import EmulatorConfig, running_emulator
from batchgen.engine.exports import SplitExport, Writer, write_export
from batchgen.engine.store import JOBS, Store
from tests.kit import run_against, write_manifest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HELPER = [sys.executable, "-m", "batchgen.cli.export_part"]
# a helper that first changes the job named on its command line, then is the real helper: a runner writing between
# the export's snapshot and the helper's
CHANGE_THEN_HELP = """
import runpy, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute(sys.argv[2])
db.close()
sys.argv = sys.argv[:1]
runpy.run_module("batchgen.cli.export_part", run_name="__main__")
"""
WRITERS = [pytest.param(write_csv, id="csv"), pytest.param(write_jsonl, id="jsonl")]


def _jobs(run_id: int, count: int, start: int = 0) -> list[dict[str, Any]]:
    """Jobs with what is hard to write: commas, quotes, line breaks, formulas, unicode, missing times, failures."""
    rows = []
    for n in range(start, start + count):
        at = T0 + timedelta(seconds=n, microseconds=n * 37 % 1_000_000)
        done = n % 5 != 0
        rows.append(
            {
                "run_id": run_id, "key": f"k{n:05d}", "model": "m", "repeat": n % 2, "origin": "matrix",
                "media_type": "image", "status": "succeeded" if done else "failed", "attempts": 1 + n % 3,
                "estimated_cost": 0.25 * (n % 4), "cost": 0.1 * (n % 7) if done else None, "updated_at": at,
                "params_json": json.dumps({"prompt": ["a cat, sitting", 'say "hi"', "=1+1", "line\nbreak", "café 🐂"]
                                           [n % 5] + f" {n}", "seconds": str(n % 3)}),
                "variables_json": json.dumps({"subject": f"s{n % 2}", "animal": f"a{n}"}),
                "generation_id": f"g{n}", "error": None if done else "no, it refused", "error_class":
                None if done else "content_policy", "enqueued_at": at, "started_at": at + timedelta(seconds=2),
                "completed_at": at + timedelta(seconds=9.5) if done else None,
            }
        )  # fmt: skip
    return rows


def _fill(store: Store, count: int = 240) -> int:
    run_id = store.ensure_run(
        "big", manifest_path="m.yaml", manifest_sha256="x", base_url="http://h", out_dir="out", settings={}
    ).id
    with store.engine.begin() as db:
        db.execute(insert(JOBS), _jobs(run_id, count))
    return run_id


def _export(store: Store, run_id: int, writer: Writer, split: SplitExport | None, *, guess_from: int = 5_000) -> str:
    with store.job_row_stream(run_id) as jobs:
        out = io.StringIO(newline="")
        written = write_export(jobs, writer, out, rewindable=True, guess_from=guess_from, split=split)
        assert written == jobs.middle()[0]  # every job of the export's snapshot
    return out.getvalue()


def _exported_to(path: Path, store: Store, run_id: int, writer: Writer, split: SplitExport, rewindable: bool) -> str:
    """An export into a real file (the part is appended as bytes), read back."""
    with store.job_row_stream(run_id) as jobs, path.open("w", encoding="utf-8", newline="") as out:
        write_export(jobs, writer, out, rewindable=rewindable, split=split)
    return path.read_bytes().decode("utf-8")  # as written: no newline translated


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Any:
    opened = Store.open(tmp_path / "state" / "batchgen.db")
    yield opened
    opened.close()


def _split(tmp_path: Path, command: Sequence[str] = HELPER) -> SplitExport:
    parts = tmp_path / "parts"
    parts.mkdir(exist_ok=True)
    return SplitExport(command, part_dir=parts, from_jobs=10)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("rewindable", [True, False], ids=["file", "stdout"])
def test_two_processes_write_what_one_writes(
    sqlite_store: Store, tmp_path: Path, writer: Writer, rewindable: bool
) -> None:
    run_id = _fill(sqlite_store)
    one = _export(sqlite_store, run_id, writer, None)
    split = _split(tmp_path)
    assert _exported_to(tmp_path / "out.txt", sqlite_store, run_id, writer, split, rewindable) == one
    assert split.outcomes == ["written by a helper process"]
    assert _export(sqlite_store, run_id, writer, split) == one  # into text with no bytes beneath: copied as text
    assert split.outcomes[-1] == "written by a helper process"
    assert list((tmp_path / "parts").iterdir()) == []  # the part files are gone
    assert one.count("\n") >= 240


@pytest.mark.parametrize(
    "change",
    [
        pytest.param("UPDATE jobs SET status = 'cancelled', updated_at = '2027-01-01 00:00:00.000001' WHERE id = {id}",
                     id="a job in the second half changed"),
        pytest.param("UPDATE jobs SET error = 'later', updated_at = '2026-01-01 00:00:00.000002' WHERE id = {id}",
                     id="changed with a clock set back"),
        pytest.param("DELETE FROM jobs WHERE id = {id}", id="a job gone"),
        pytest.param("INSERT INTO jobs (run_id, key, model, params_json, variables_json, repeat, origin, media_type,"
                     " status, attempts, updated_at) SELECT run_id, 'k99999', model, params_json, variables_json,"
                     " repeat, origin, media_type, status, attempts, updated_at FROM jobs WHERE id = {id}",
                     id="a job added"),
    ],
)  # fmt: skip
def test_a_change_between_the_two_snapshots_is_caught_and_the_half_written_by_this_process(
    sqlite_store: Store, tmp_path: Path, change: str
) -> None:
    run_id = _fill(sqlite_store)
    last = sqlite_store.job_rows(run_id)[-1]
    with sqlite_store.job_row_stream(run_id) as jobs:
        database, (_count, middle) = jobs.database_file(), jobs.middle()
    assert database is not None
    changed_id = middle + 10  # the ids are 1..240, the middle 121: a job in the second half, not the last
    before = _export(sqlite_store, run_id, write_csv, None)
    split = _split(tmp_path, [sys.executable, "-c", CHANGE_THEN_HELP, database, change.format(id=changed_id)])
    assert _export(sqlite_store, run_id, write_csv, split) == before  # the export's own snapshot, whole
    assert split.outcomes == ["the jobs changed between the two snapshots; written by this process"]
    after = _export(sqlite_store, run_id, write_csv, None)
    assert after != before  # the change was made (the fault fired), after the export's snapshot began
    assert last.job_key == "k00239"


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("import sys; sys.exit('cannot start')", "the helper failed (cannot start)"),
        ("print('not json')", "the helper failed (exit 0)"),
        ("import json; print(json.dumps([1, 2]))", "the helper failed (exit 0)"),
        ("import sys, json; json.load(sys.stdin); print(json.dumps({'count': 1, 'fingerprint': [0]}))",
         "the jobs changed between the two snapshots"),
    ],
)  # fmt: skip
def test_a_helper_that_fails_or_answers_nonsense_leaves_the_half_to_this_process(
    sqlite_store: Store, tmp_path: Path, script: str, said: str
) -> None:
    run_id = _fill(sqlite_store)
    one = _export(sqlite_store, run_id, write_jsonl, None)
    split = _split(tmp_path, [sys.executable, "-c", script])
    assert _export(sqlite_store, run_id, write_jsonl, split) == one
    assert len(split.outcomes) == 1 and split.outcomes[0].startswith(said), split.outcomes
    assert list((tmp_path / "parts").iterdir()) == []


def test_a_helper_that_cannot_be_started_leaves_the_run_to_this_process(sqlite_store: Store, tmp_path: Path) -> None:
    run_id = _fill(sqlite_store)
    one = _export(sqlite_store, run_id, write_csv, None)
    split = _split(tmp_path, [str(tmp_path / "no-such-helper")])
    assert _export(sqlite_store, run_id, write_csv, split) == one
    assert split.outcomes[0].startswith("the helper could not start ("), split.outcomes
    assert list((tmp_path / "parts").iterdir()) == []
    split.part_dir = tmp_path / "no-such-directory"
    assert _export(sqlite_store, run_id, write_csv, split) == one
    assert split.outcomes[1].startswith("no part file ("), split.outcomes


def test_a_column_only_the_second_half_has_starts_the_file_over_and_splits_again(
    sqlite_store: Store, tmp_path: Path
) -> None:
    run_id = _fill(sqlite_store)
    with sqlite_store.engine.begin() as db:
        late = _jobs(run_id, 1, start=500)[0] | {"params_json": json.dumps({"prompt": "late", "style": "noir"})}
        db.execute(insert(JOBS).values(**late))
    one = _export(sqlite_store, run_id, write_csv, None)
    split = _split(tmp_path)
    assert _export(sqlite_store, run_id, write_csv, split, guess_from=3) == one
    assert len(split.outcomes) == 2, split.outcomes
    assert split.outcomes[0].startswith("the helper stopped (job k00500 has style")
    assert split.outcomes[1] == "written by a helper process"
    assert "style" in one.splitlines()[0]


def test_a_small_run_or_postgresql_is_written_by_one_process(store: Store, tmp_path: Path) -> None:
    run_id = _fill(store, count=30)
    split = _split(tmp_path)
    split.from_jobs = 31
    one = _export(store, run_id, write_csv, None)
    assert _export(store, run_id, write_csv, split) == one
    assert split.outcomes == []
    split.from_jobs = 30
    assert _export(store, run_id, write_csv, split) == one
    assert split.outcomes == (["written by a helper process"] if store.engine.dialect.name == "sqlite" else [])


def test_batchgen_export_of_a_large_run_writes_what_one_process_writes(sqlite_store: Store, tmp_path: Path) -> None:
    # 20,000 jobs: what `batchgen export` splits; to a file and to stdout, csv and jsonl
    run_id = _fill(sqlite_store, count=20_000)
    database = str(sqlite_store.engine.url.database)
    for writer, suffix in ((write_csv, "csv"), (write_jsonl, "jsonl")):
        one = _export(sqlite_store, run_id, writer, None)
        out = tmp_path / f"big.{suffix}"
        command = [sys.executable, "-m", "batchgen.cli", "export", "big", "--db", database]
        done = subprocess.run([*command, "-o", str(out)], capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes().decode("utf-8") == one
        shown = subprocess.run([*command, "--format", suffix], capture_output=True, timeout=120, check=False)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.decode("utf-8") == one
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.csv",
        "big.jsonl",
        "oxen-config",
        "state",
    ]  # no part left


@pytest.mark.timeout(60)
async def test_a_runs_results_csv_is_split_where_its_options_say_and_reads_as_the_export(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 12)
    split = SplitExport(HELPER, from_jobs=4)  # no part_dir: results.csv puts its part beside itself
    with running_emulator(EmulatorConfig(seed=2, duration_s=0.02)) as emu:
        summary = await run_against(emu, manifest, tmp_path, options={"results_split": split})
    assert summary.exit_code == 0
    assert split.outcomes == ["written by a helper process"]
    store = Store.open(tmp_path / "state" / "batchgen.db", create=False)
    try:
        one = _export(store, store.get_run(summary.run).id, write_csv, None)
    finally:
        store.close()
    results = tmp_path / "out" / "results.csv"
    assert results.read_bytes().decode("utf-8") == one
    assert one.count("\r\n") == 13
    assert [p.name for p in results.parent.iterdir() if p.name.endswith(".part")] == []


def _export_stopped(command: list[str], out: Path, how: signal.Signals) -> tuple[int, bytes]:
    """`batchgen export` into OUT/big.csv, sent `how` once the helper's part file is there."""
    with subprocess.Popen([*command, "-o", str(out / "big.csv")], stderr=subprocess.PIPE) as export:
        for _ in range(6_000):  # until the helper's part file is there (at most 60 s)
            if any(p.suffix == ".part" for p in out.iterdir()) or export.poll() is not None:
                break
            time.sleep(0.01)
        assert export.poll() is None, "the export finished before it could be stopped"
        export.send_signal(how)
        _, errors = export.communicate(timeout=60)
    return export.returncode, errors


@pytest.mark.timeout(120)
def test_batchgen_export_stopped_leaves_neither_its_file_nor_the_part_behind(
    sqlite_store: Store, tmp_path: Path
) -> None:
    _fill(sqlite_store, count=200_000)  # seconds of export: the signal lands while both halves are written
    command = [sys.executable, "-m", "batchgen.cli", "export", "big", "--db", str(sqlite_store.engine.url.database)]
    out = tmp_path / "exports"
    out.mkdir()
    code, errors = _export_stopped(command, out, signal.SIGTERM)
    assert code == 130, errors
    assert list(out.iterdir()) == []  # no big.csv, no temp file, no part
    # killed outright, the export cannot clean up: its helper, left on its own, removes its part when it is done
    code, errors = _export_stopped(command, out, signal.SIGKILL)
    assert code == -signal.SIGKILL, errors
    for _ in range(6_000):  # until the helper is done (at most 60 s)
        if not any(p.suffix == ".part" for p in out.iterdir()):
            break
        time.sleep(0.01)
    assert [p.suffix for p in out.iterdir()] == [".tmp"]  # the export's own temp file stays, as after any kill -9
