from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.core.jobs import JobSpec, JobStatus
from batchgen.engine.migrations import MIGRATIONS
from batchgen.engine.store import JOBS, RUNS, NewJob, Store
from batchgen.errors import RunLockedError, StateError


def _store(tmp_path: Path) -> tuple[Store, int]:
    store = Store.open(tmp_path / "s" / "batchgen.db")
    run = store.ensure_run(
        "r",
        manifest_path="m.yaml",
        manifest_sha256="x",
        base_url="http://h",
        out_dir="out",
        settings={"concurrency": 2},
    )
    return store, run.id


def test_schema_from_migrations_matches_the_tables(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    db = sqlite3.connect(store.path)
    for table in (RUNS, JOBS):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table.name})")}
        assert columns == {c.name for c in table.columns}, table.name
    applied = [row[0] for row in db.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert applied == [name for name, _ in MIGRATIONS]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_add_jobs_is_idempotent_by_key_and_rows_round_trip(tmp_path: Path) -> None:
    store, run_id = _store(tmp_path)
    jobs = [
        NewJob(JobSpec("m", {"prompt": f"p{i}", "seconds": "4"}, variables={"v": i}), estimated_cost=1.5)
        for i in range(3)
    ]
    assert store.add_jobs(run_id, jobs) == 3
    assert store.add_jobs(run_id, [*jobs, NewJob(JobSpec("m", {"prompt": "new"}))]) == 1
    rows = store.job_rows(run_id)
    assert [r.prompt for r in rows] == ["p0", "p1", "p2", "new"]
    assert rows[1].variables == {"v": 1} and rows[1].estimated_cost == 1.5 and rows[1].status is JobStatus.PENDING
    assert store.status_counts(run_id) == {JobStatus.PENDING: 4}


def test_intent_then_enqueued_is_committed(tmp_path: Path) -> None:
    store, run_id = _store(tmp_path)
    store.add_jobs(run_id, [NewJob(JobSpec("m", {"prompt": "a"}))])
    (job,) = store.load_jobs(run_id, [JobStatus.PENDING])
    intent = store.record_intent([job.id])
    assert intent.tzinfo is not None
    # a second connection (another process) sees the intent at once
    raw = sqlite3.connect(store.path)
    assert raw.execute("SELECT status, attempts FROM jobs").fetchone() == ("submitting", 1)
    store.record_enqueued([(job.id, "gen-1")])
    assert raw.execute("SELECT status, generation_id FROM jobs").fetchone() == ("queued", "gen-1")
    assert store.owned_generation_ids() == {"gen-1"}


def test_a_second_live_runner_is_refused_and_a_dead_ones_lease_is_taken(tmp_path: Path) -> None:
    store, run_id = _store(tmp_path)
    owner = store.acquire_run(run_id)
    with pytest.raises(RunLockedError, match="being run by process"):
        store.acquire_run(run_id)
    store.release_run(run_id, owner)
    # a lease held by a process that no longer exists is free at once (kill -9 then resume)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = os.uname().nodename
    raw = sqlite3.connect(store.path)
    raw.execute("UPDATE runs SET owner = ?, heartbeat_at = CURRENT_TIMESTAMP", (f"{host}:{dead.stdout.strip()}:t",))
    raw.commit()
    assert store.get_run(None).owner is None, "status must not call a killed runner live"
    assert store.acquire_run(run_id)
    assert store.get_run(None).owner is not None


def test_unknown_run_names_the_known_ones(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    with pytest.raises(StateError, match=r"no run named 'nope'.*runs: r"):
        store.get_run("nope")
    assert store.get_run(None).name == "r"


def test_only_the_intent_to_enqueue_is_committed_with_a_full_fsync(tmp_path: Path) -> None:
    from sqlalchemy import event

    store, run_id = _store(tmp_path)
    store.add_jobs(run_id, [NewJob(JobSpec("m", {"prompt": "a"}))])
    (job,) = store.load_jobs(run_id, [JobStatus.PENDING])
    levels: list[int] = []
    event.listen(
        store.engine, "commit", lambda conn: levels.append(conn.exec_driver_sql("PRAGMA synchronous").scalar())
    )
    store.record_intent([job.id])
    store.record_enqueued([(job.id, "g")])
    assert levels[0] == 2, "the intent must be fsynced (FULL) before the POST leaves"
    assert levels[-1] == 1, "later transitions are NORMAL: a crash keeps them, a power cut only sends a job back a step"
