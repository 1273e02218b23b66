"""The state database: schema and migrations, the fenced lease, the lifecycle applied in SQL, the budget, the
ledger, and reconciliation's adoption of orphans.

Setup writes a job's status (and ledger rows) straight into the database with its driver (sqlite3, or psycopg):
that is arranging the state under test, never patching the code under test. The tests that take the `fresh` or
`shared` store run on both back ends: a SQLite file, and a PostgreSQL database of their own.
"""

from __future__ import annotations

import itertools
import json
import select as select_module
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from batchgen.core.jobs import JobSpec, JobStatus
from batchgen.core.lifecycle import LIFECYCLE, IllegalTransition, JobEvent
from batchgen.core.matching import Window
from batchgen.core.remote import RemoteGeneration
from batchgen.engine.migrations import MIGRATIONS
from batchgen.engine.records import Fetched
from batchgen.engine.store import GENERATIONS, JOBS, RUNS, JobState, Lease, NewJob, Store, apply_event
from batchgen.errors import BudgetExceededError, LeaseLostError, RunLockedError, StateError

S = JobStatus
E = JobEvent
REPO = Path(__file__).resolve().parents[2]
LONG_AGO = "2000-01-01 00:00:00.000000"
HAS_GENERATION = {S.QUEUED, S.PROCESSING, S.DOWNLOADING, S.SUCCEEDED, S.FAILED, S.CANCELLED}
_unique = itertools.count()


# ---- helpers -----------------------------------------------------------------------------------------------


def _open(tmp_path: Path, name: str = "r", *, budget: float | None = None, at: str | None = None) -> tuple[Store, int]:
    store = Store.open(at or tmp_path / "s" / "batchgen.db")
    run = _run(store, name, budget=budget)
    return store, run


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """Where a test's store lives: None for a SQLite file under tmp_path, else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    from tests.kit_postgres import fresh_database

    with fresh_database() as url:
        yield url


def _run(store: Store, name: str, *, budget: float | None = None) -> int:
    info = store.ensure_run(
        name,
        manifest_path="m.yaml",
        manifest_sha256="x",
        base_url="http://h",
        out_dir="out",
        settings={"concurrency": 2},
        budget=budget,
    )
    return info.id


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Iterator[tuple[Store, Lease]]:
    """SQLite only: for what is SQLite's own (synchronous levels, file permissions)."""
    store, run_id = _open(tmp_path)
    try:
        yield store, store.acquire_run(run_id)
    finally:
        store.close()


@pytest.fixture
def fresh(tmp_path: Path, location: str | None) -> Iterator[tuple[Store, Lease]]:
    store, run_id = _open(tmp_path, at=location)
    try:
        yield store, store.acquire_run(run_id)
    finally:
        store.close()


def _sql(path: Path | str, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(path, str):  # PostgreSQL: the same statement with the driver's placeholders
        import psycopg

        with psycopg.connect(path.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as pg:
            cursor = pg.execute(statement.replace("?", "%s"), args)  # type: ignore[arg-type]
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    with closing(sqlite3.connect(path)) as con:
        con.execute("PRAGMA synchronous=OFF")  # setup and inspection need no fsync
        with con:
            return con.execute(statement, args).fetchall()


def _dump(path: Path | str) -> list[str]:
    """Everything in the database, as text: two equal dumps mean nothing changed."""
    if isinstance(path, str):
        tables = ("runs", "jobs", "generations")
        return [repr(row) for t in tables for row in _sql(path, f"SELECT * FROM {t} ORDER BY 1")]
    with closing(sqlite3.connect(path)) as con:
        return list(con.iterdump())


def _job_row(path: Path | str, job_id: int) -> tuple[Any, ...]:
    (row,) = _sql(path, "SELECT * FROM jobs WHERE id = ?", (job_id,))
    return row


def _status(path: Path | str, job_id: int) -> str:
    return str(_sql(path, "SELECT status FROM jobs WHERE id = ?", (job_id,))[0][0])


def _ledger_ids(path: Path | str) -> set[str]:
    return {r[0] for r in _sql(path, "SELECT generation_id FROM generations")}


def _add(
    store: Store,
    lease: Lease,
    prompt: str | None = None,
    *,
    cost: float | None = 1.0,
    repeat: int = 0,
    held: bool = True,
) -> JobState:
    """A new pending job; `held` by the lease's runner (as if claimed), or nobody's."""
    spec = JobSpec("m", {"prompt": prompt or f"p{next(_unique)}", "seconds": "4"}, repeat=repeat)
    store.add_jobs(lease, [NewJob(spec, estimated_cost=cost)])
    if held:
        _sql(
            store.path,
            "UPDATE jobs SET runner_id = ? WHERE run_id = ? AND key = ?",
            (lease.runner_id, lease.run_id, spec.key),
        )
    return _load(store, lease, spec.key, S.PENDING)


def _load(store: Store, lease: Lease, key: str, status: JobStatus | None = None) -> JobState:
    wanted = list(JobStatus) if status is None else [status]
    (job,) = [j for j in store.load_jobs(lease.run_id, wanted) if j.key == key]
    return job


def _put(store: Store, lease: Lease, job: JobState, status: JobStatus, **columns: Any) -> JobState:
    """Put a job in `status` directly (test setup); with a generation id, give it a ledger row too."""
    remote_status = columns.pop("remote_status", "queued")
    values = {"status": status.value, "runner_id": lease.runner_id, **columns}
    assignments = ", ".join(f"{k} = ?" for k in values)
    _sql(store.path, f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job.id))
    gid = columns.get("generation_id")
    if gid:
        _ledger(store.path, lease.run_id, gid, job.id, remote_status)
    return _load(store, lease, job.key, status)


def _one_in_each_status(store: Store, lease: Lease) -> dict[JobStatus, JobState]:
    """A new job in every status (one write to add them, one to place them): those with a generation have it in
    the ledger too."""
    specs = {status: JobSpec("m", {"prompt": f"p{next(_unique)}", "seconds": "4"}) for status in JobStatus}
    store.add_jobs(lease, [NewJob(spec, estimated_cost=1.0) for spec in specs.values()])
    for status, spec in specs.items():
        gid = f"g-{spec.key}" if status in HAS_GENERATION else None
        _sql(
            store.path,
            "UPDATE jobs SET status = ?, generation_id = ?, runner_id = ? WHERE run_id = ? AND key = ?",
            (status.value, gid, lease.runner_id, lease.run_id, spec.key),
        )
        if gid:
            _sql(
                store.path,
                "INSERT INTO generations (generation_id, run_id, job_id, model, request_json, how, seen_at,"
                " remote_status, estimated_cost, updated_at) SELECT ?, run_id, id, 'm', '{}', 'enqueued', ?,"
                " 'queued', 1.0, ? FROM jobs WHERE run_id = ? AND key = ?",
                (gid, LONG_AGO, LONG_AGO, lease.run_id, spec.key),
            )
    by_key = {
        j.key: j for j in store.load_jobs(lease.run_id, list(JobStatus)) if j.key in {s.key for s in specs.values()}
    }
    jobs = {status: by_key[spec.key] for status, spec in specs.items()}
    assert {status: job.status for status, job in jobs.items()} == {status: status for status in JobStatus}
    return jobs


def _ledger(path: Path | str, run_id: int, gid: str, job_id: int | None, remote_status: str, **extra: Any) -> None:
    values = {
        "generation_id": gid,
        "run_id": run_id,
        "job_id": job_id,
        "model": "m",
        "request_json": "{}",
        "how": "enqueued",
        "seen_at": LONG_AGO,
        "remote_status": remote_status,
        "estimated_cost": 1.0,
        "updated_at": LONG_AGO,
        **extra,
    }
    _sql(
        path,
        f"INSERT INTO generations ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
        tuple(values.values()),
    )


def _remote(gid: str, status: str, **kw: Any) -> RemoteGeneration:
    return RemoteGeneration(gid, status, model="m", **kw)


# ---- schema, migrations, setup -----------------------------------------------------------------------------


def test_schema_from_migrations_matches_the_tables(tmp_path: Path) -> None:
    store, _ = _open(tmp_path)
    store.close()
    with closing(sqlite3.connect(tmp_path / "s" / "batchgen.db")) as db:
        for table in (RUNS, JOBS, GENERATIONS):
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table.name})")}
            assert columns == {c.name for c in table.columns}, table.name
        applied = [row[0] for row in db.execute("SELECT name FROM schema_migrations ORDER BY name")]
        assert applied == [name for name, _ in MIGRATIONS]
        assert "m002_money_ledger" in applied
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    store, run_id = _open(tmp_path)
    store.close()
    again = Store.open(tmp_path / "s" / "batchgen.db", create=False)
    try:
        assert again.get_run("r").id == run_id
        counts = _sql(again.path, "SELECT name, COUNT(*) FROM schema_migrations GROUP BY name")
        assert sorted(counts) == sorted((name, 1) for name, _ in MIGRATIONS)
    finally:
        again.close()


def test_open_without_create_refuses_a_missing_database(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no state database"):
        Store.open(tmp_path / "nothing.db", create=False)
    assert not (tmp_path / "nothing.db").exists()


def test_opening_a_new_database_waits_for_another_process_creating_it(tmp_path: Path) -> None:
    """A brand-new file is in rollback mode, where SQLite refuses the switch to WAL at once (no busy wait) while
    another connection holds the write lock: the opener must wait for it, not fail with 'database is locked'."""
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None)  # another process, mid-way through creating the schema
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE scratch (x)")
    outcome: dict[str, Any] = {}

    def open_it() -> None:
        try:
            outcome["store"] = Store.open(path)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    opener = threading.Thread(target=open_it)
    opener.start()
    try:
        # while the lock is held the open cannot succeed; if it already failed, it did not wait
        opener.join(timeout=0.5)
        assert "error" not in outcome, f"opening gave up instead of waiting: {outcome['error']}"
        assert "store" not in outcome
    finally:
        other.execute("ROLLBACK")
        other.close()
        opener.join(timeout=30)
    assert not opener.is_alive()
    assert "error" not in outcome, outcome
    store = outcome["store"]
    try:
        assert _sql(path, "PRAGMA journal_mode") == [("wal",)]
        assert [n for (n,) in _sql(path, "SELECT name FROM schema_migrations ORDER BY name")] == [
            n for n, _ in MIGRATIONS
        ]
    finally:
        store.close()


def _old_database(path: Path) -> None:
    """A database made by the first release (m001 only), with a succeeded job and a queued one."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as db:
            db.execute(text("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, applied_at DATETIME)"))
            name, first = MIGRATIONS[0]
            first(db)
            db.execute(text("INSERT INTO schema_migrations VALUES (:n, CURRENT_TIMESTAMP)"), {"n": name})
            db.execute(
                text(
                    "INSERT INTO runs (id, name, manifest_path, manifest_sha256, base_url, out_dir, settings_json,"
                    " created_at, updated_at) VALUES (1, 'old', 'm', 'x', 'http://h', 'o', '{}', :t, :t)"
                ),
                {"t": LONG_AGO},
            )
            for job_id, status, gid, cost in ((1, "succeeded", "g-done", 0.5), (2, "queued", "g-busy", None)):
                db.execute(
                    text(
                        "INSERT INTO jobs (id, run_id, key, model, params_json, variables_json, repeat, origin,"
                        " media_type, status, generation_id, attempts, estimated_cost, cost, updated_at)"
                        " VALUES (:id, 1, :key, 'm', '{}', '{}', 0, '', 'video', :status, :gid, 1, 2.0, :cost, :t)"
                    ),
                    {"id": job_id, "key": f"k{job_id}", "status": status, "gid": gid, "cost": cost, "t": LONG_AGO},
                )
    finally:
        engine.dispose()


def test_a_migration_that_fails_half_way_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path)
    # a table in the way: m002's ALTER TABLEs succeed, then its CREATE TABLE generations fails
    _sql(path, "CREATE TABLE generations (note TEXT)")
    _sql(path, "INSERT INTO generations VALUES ('in the way')")
    before = _dump(path)
    with pytest.raises(StateError, match="generations"):
        Store.open(path)
    assert _dump(path) == before, "the columns m002 added before failing must be rolled back"
    assert "epoch" not in {row[1] for row in _sql(path, "PRAGMA table_info(runs)")}
    assert _sql(path, "SELECT name FROM schema_migrations") == [(MIGRATIONS[0][0],)]

    # once the obstacle is gone, the same database opens and is migrated, its generations in the ledger
    _sql(path, "DROP TABLE generations")
    store = Store.open(path, create=False)
    try:
        assert [n for (n,) in _sql(path, "SELECT name FROM schema_migrations ORDER BY name")] == [
            n for n, _ in MIGRATIONS
        ]
        ledger = {row.generation_id: row for row in store.ledger(1)}
        assert set(ledger) == {"g-done", "g-busy"}
        assert ledger["g-done"].remote_status == "succeeded" and ledger["g-busy"].remote_status == "queued"
        money = store.money(1)
        assert (money.spent, money.reserved) == (0.5, 2.0)
    finally:
        store.close()


def test_add_jobs_is_idempotent_by_key_and_rows_round_trip(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    jobs = [
        NewJob(JobSpec("m", {"prompt": f"p{i}", "seconds": "4"}, variables={"v": i}), estimated_cost=1.5)
        for i in range(3)
    ]
    assert store.add_jobs(lease, jobs) == 3
    assert store.add_jobs(lease, [*jobs, NewJob(JobSpec("m", {"prompt": "new"}))]) == 1
    rows = store.job_rows(lease.run_id)
    assert [r.prompt for r in rows] == ["p0", "p1", "p2", "new"]
    assert rows[1].variables == {"v": 1} and rows[1].estimated_cost == 1.5 and rows[1].status is JobStatus.PENDING
    assert store.status_counts(lease.run_id) == {JobStatus.PENDING: 4}
    assert store.estimated_total(lease.run_id) == 4.5


def test_unknown_run_names_the_known_ones(fresh: tuple[Store, Lease]) -> None:
    store, _ = fresh
    with pytest.raises(StateError, match=r"no run named 'nope'.*runs: r"):
        store.get_run("nope")
    assert store.get_run(None).name == "r"


def test_the_intent_is_fsynced_and_later_transitions_are_not(fresh_sqlite: tuple[Store, Lease]) -> None:
    store, lease = fresh_sqlite
    job = _add(store, lease)
    levels: list[int] = []

    def on_commit(conn: Any) -> None:
        levels.append(conn.exec_driver_sql("PRAGMA synchronous").scalar())

    event.listen(store.engine, "commit", on_commit)
    store.record_intents(lease, [job])
    store.record_enqueued(lease, [(job, "g")])
    assert levels[0] == 2, "the intent must be fsynced (FULL) before the POST leaves"
    assert levels[-1] == 1, "later transitions are NORMAL: a crash keeps them, a power cut only sends a job back a step"
    # another connection (another process) sees both at once
    assert _sql(store.path, "SELECT status, attempts, generation_id FROM jobs") == [("queued", 1, "g")]


# ---- the lifecycle, applied by the store -------------------------------------------------------------------


def _applied_directly(event_: JobEvent) -> Callable[[Store, Lease, JobState], None]:
    def run(store: Store, _lease: Lease, job: JobState) -> None:
        with store._write() as db:
            apply_event(db, [job.id], event_)

    return run


def _failed(event_: JobEvent, remote_status: str | None) -> Callable[[Store, Lease, JobState], None]:
    def run(store: Store, lease: Lease, job: JobState) -> None:
        remote = _remote(job.generation_id or "", remote_status) if remote_status else None
        store.mark_failed(lease, job, event_, error="x", error_class="remote", remote=remote)

    return run


# the public method that applies each event (the four selected by a run-wide query are applied with apply_event here,
# and their selection is tested below)
ACTIONS: dict[JobEvent, Callable[[Store, Lease, JobState], Any]] = {
    E.INTENT: lambda s, ls, j: s.record_intents(ls, [j]),
    E.UNSENT: lambda s, ls, j: s.mark_unsent(ls, [j.id]),
    E.NOT_CREATED: lambda s, ls, j: s.mark_not_created(ls, [j.id], error="nothing", error_class="not_created"),
    E.ENQUEUED: lambda s, ls, j: s.record_enqueued(ls, [(j, f"new-{j.key}")]),
    E.UNDECIDABLE: lambda s, ls, j: s.mark_undecidable(ls, [j.id], error="unreadable queue"),
    E.REJECTED: lambda s, ls, j: s.mark_rejected(ls, [j.id], error="422"),
    E.STARTED: lambda s, ls, j: s.mark_started(ls, j, _remote(j.generation_id or "", "processing")),
    E.SUCCEEDED_REMOTELY: lambda s, ls, j: s.mark_succeeded_remotely(
        ls, j, _remote(j.generation_id or "", "succeeded"), download=True
    ),
    E.FINISHED_WITHOUT_DOWNLOAD: lambda s, ls, j: s.mark_finished_without_download(ls, j),
    E.DOWNLOADED: lambda s, ls, j: s.mark_downloaded(ls, j, path="o/x.mp4", sha256="ab", size=3),
    E.DOWNLOAD_FAILED: lambda s, ls, j: s.mark_download_failed(ls, j, error="404"),
    E.REDOWNLOAD: _applied_directly(E.REDOWNLOAD),
    E.FAILED_REMOTELY: _failed(E.FAILED_REMOTELY, "failed"),
    E.CANCELLED_REMOTELY: _failed(E.CANCELLED_REMOTELY, "cancelled"),
    E.VANISHED: _failed(E.VANISHED, None),
    E.TIMED_OUT: _failed(E.TIMED_OUT, None),
    E.CANCELLED_BY_USER: lambda s, ls, j: s.mark_cancelled_by_user(ls, [j.id]),
    E.RETIRED: _applied_directly(E.RETIRED),
    E.RETRY: _applied_directly(E.RETRY),
    E.RESUBMIT: lambda s, ls, j: s.resubmit_unknown(ls, [j.id]),
    E.FORGOTTEN: _applied_directly(E.FORGOTTEN),
}


def test_every_event_has_an_action() -> None:
    assert set(ACTIONS) == set(JobEvent)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Lease]]:
    """One database for the whole matrix (per back end): every case works on a job of its own."""
    from tests.kit_postgres import fresh_database

    with fresh_database() if request.param == "postgres" else _nothing() as url:
        store = Store.open(url or tmp_path_factory.mktemp("matrix") / "batchgen.db")
        try:
            yield store, store.acquire_run(_run(store, "matrix"), lease_seconds=3600)
        finally:
            store.close()


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


@pytest.mark.parametrize("event_", list(JobEvent), ids=lambda e: e.value)
def test_the_store_moves_a_job_only_from_the_events_sources(shared: tuple[Store, Lease], event_: JobEvent) -> None:
    """For each status, a job of its own in that status takes the event: it moves to the event's target when the
    status is a source, and otherwise IllegalTransition is raised and neither the job nor its ledger row changes."""
    store, lease = shared
    move = LIFECYCLE[event_]
    problems: list[str] = []
    ledger_query = "SELECT * FROM generations WHERE job_id = ?"
    for status, job in _one_in_each_status(store, lease).items():
        before_row = _job_row(store.path, job.id)
        before_ledger = _sql(store.path, ledger_query, (job.id,))
        if status in move.sources:
            ACTIONS[event_](store, lease, job)
            if (now := _status(store.path, job.id)) != move.target.value:
                problems.append(f"{status.value}: moved to {now}, not {move.target.value}")
            if event_ is E.ENQUEUED and _sql(
                store.path, "SELECT job_id FROM generations WHERE generation_id = ?", (f"new-{job.key}",)
            ) != [(job.id,)]:
                problems.append(f"{status.value}: the enqueued generation is not in the ledger")
            if event_ is E.INTENT and _sql(store.path, "SELECT attempts FROM jobs WHERE id = ?", (job.id,)) != [(1,)]:
                problems.append(f"{status.value}: the intent did not count an attempt")
            continue
        try:
            ACTIONS[event_](store, lease, job)
        except IllegalTransition:
            pass
        else:
            problems.append(f"{status.value}: accepted (moved to {_status(store.path, job.id)})")
        if _job_row(store.path, job.id) != before_row:
            problems.append(f"{status.value}: refused, yet the job row changed")
        if _sql(store.path, ledger_query, (job.id,)) != before_ledger:
            problems.append(f"{status.value}: refused, yet the ledger changed (not rolled back)")
    assert problems == [], f"event {event_.value}: " + "; ".join(problems)


def test_a_refused_job_in_a_batch_refuses_the_whole_batch(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    ok = _add(store, lease)
    queued = _put(store, lease, _add(store, lease), S.QUEUED, generation_id="gq")
    done = _put(store, lease, _add(store, lease), S.SUCCEEDED, generation_id="gd", remote_status="succeeded")
    before = _dump(store.path)
    with pytest.raises(IllegalTransition):
        store.record_intents(lease, [ok, queued])
    with pytest.raises(IllegalTransition):
        store.mark_cancelled_by_user(lease, [ok.id, queued.id, done.id])
    assert _dump(store.path) == before, "the jobs that could move did not move either"


def test_a_batch_of_completions_or_downloads_moves_every_job_or_none(fresh: tuple[Store, Lease]) -> None:
    """The runner commits what a turn of the loop heard in one transaction (engine/per_turn.py): one refused job
    (moved already, or let go) refuses the whole batch; an accepted batch moves each job with its own facts."""
    store, lease = fresh
    a = _put(store, lease, _add(store, lease), S.QUEUED, generation_id="ga")
    b = _put(store, lease, _add(store, lease), S.PROCESSING, generation_id="gb")
    done = _put(store, lease, _add(store, lease), S.SUCCEEDED, generation_id="gd", remote_status="succeeded")
    ok = [(a, _remote("ga", "succeeded")), (b, _remote("gb", "succeeded"))]
    before = _dump(store.path)
    with pytest.raises(IllegalTransition):
        store.mark_many_succeeded_remotely(lease, [*ok, (done, _remote("gd", "succeeded"))], download=True)
    assert _dump(store.path) == before
    _sql(store.path, "UPDATE jobs SET runner_id = NULL WHERE id = ?", (b.id,))  # b let go: a sweep
    before = _dump(store.path)
    with pytest.raises(LeaseLostError):
        store.mark_many_succeeded_remotely(lease, ok, download=True)
    assert _dump(store.path) == before
    _sql(store.path, "UPDATE jobs SET runner_id = ? WHERE id = ?", (lease.runner_id, b.id))

    a.result_url, b.result_url = "http://x/a.png", None
    assert store.mark_many_succeeded_remotely(lease, ok, download=True) is S.DOWNLOADING
    assert {_status(store.path, j.id) for j in (a, b)} == {"downloading"}
    assert _sql(store.path, "SELECT remote_status FROM generations WHERE generation_id IN ('ga', 'gb')") == [
        ("succeeded",),
        ("succeeded",),
    ]
    assert _sql(store.path, "SELECT result_url FROM jobs WHERE id = ?", (a.id,)) == [("http://x/a.png",)]

    files = [Fetched(a, "o/a.png", "aa", 3), Fetched(b, "o/b.png", "bb", 5)]
    before = _dump(store.path)
    with pytest.raises(IllegalTransition):
        store.mark_many_downloaded(lease, [*files, Fetched(done, "o/d.png", "dd", 1)])
    assert _dump(store.path) == before
    store.mark_many_downloaded(lease, files)
    rows = _sql(
        store.path, "SELECT status, output_path, sha256, bytes FROM jobs WHERE id IN (?, ?) ORDER BY id", (a.id, b.id)
    )
    assert rows == [("succeeded", "o/a.png", "aa", 3), ("succeeded", "o/b.png", "bb", 5)]


def test_a_batch_of_enqueue_replies_with_an_id_the_ledger_has_writes_nothing(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    one, two, three = (_submitting(store, lease, p) for p in ("a", "b", "c"))
    store.record_enqueued(lease, [(one, "g1")])
    before = _dump(store.path)
    with pytest.raises(IllegalTransition, match="already in the ledger"):
        store.record_enqueued(lease, [(two, "g2"), (three, "g1")])
    assert _dump(store.path) == before
    store.record_enqueued(lease, [(two, "g2"), (three, "g3")])
    assert {_status(store.path, j.id) for j in (two, three)} == {"queued"}
    assert _ledger_ids(store.path) == {"g1", "g2", "g3"}


def _one_of_each(store: Store, lease: Lease) -> dict[str, JobState]:
    """A job in every status, plus the failed/cancelled variants the run-wide selections tell apart."""
    jobs = {}
    for status in JobStatus:
        gid = f"g-{status.value}" if status in HAS_GENERATION else None
        jobs[status.value] = _put(store, lease, _add(store, lease), status, generation_id=gid, error_class="remote")
    jobs["failed-download"] = _put(
        store,
        lease,
        _add(store, lease),
        S.FAILED,
        generation_id="g-fd",
        remote_status="succeeded",
        error_class="download",
    )
    jobs["failed-paid"] = _put(
        store,
        lease,
        _add(store, lease),
        S.FAILED,
        generation_id="g-fp",
        remote_status="succeeded",
        error_class="timeout",
    )
    jobs["cancelled-paid"] = _put(
        store, lease, _add(store, lease), S.CANCELLED, generation_id="g-cp", remote_status="succeeded"
    )
    return jobs


def _moved(store: Store, jobs: dict[str, JobState]) -> dict[str, str]:
    return {name: _status(store.path, j.id) for name, j in jobs.items() if _status(store.path, j.id) != j.status}


def test_retry_failed_resends_only_unpaid_failures_and_keeps_their_generations(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    jobs = _one_of_each(store, lease)
    assert store.retry_failed(lease) == 2
    assert _moved(store, jobs) == {"failed": "pending", "cancelled": "pending"}
    assert _sql(store.path, "SELECT generation_id, error FROM jobs WHERE id = ?", (jobs["failed"].id,)) == [
        (None, None)
    ]
    assert {"g-failed", "g-cancelled"} <= {g.generation_id for g in store.ledger(lease.run_id)}


def test_retry_downloads_fetches_again_and_never_resends(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    jobs = _one_of_each(store, lease)
    assert store.retry_downloads(lease) == 1
    assert _moved(store, jobs) == {"failed-download": "downloading"}
    assert _sql(store.path, "SELECT generation_id FROM jobs WHERE id = ?", (jobs["failed-download"].id,)) == [("g-fd",)]


def test_forget_remote_sends_back_every_unfinished_job_and_zeroes_its_generation(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    jobs = _one_of_each(store, lease)
    assert store.forget_remote(lease) == 6
    expected = ("submitting", "unknown", "queued", "processing", "downloading", "failed-download")
    assert _moved(store, jobs) == dict.fromkeys(expected, "pending")
    lost = {g.generation_id: g for g in store.ledger(lease.run_id) if g.remote_status == "lost"}
    assert set(lost) == {"g-queued", "g-processing", "g-downloading", "g-fd"}
    assert all(g.cost == 0.0 and g.estimated_cost == 0.0 for g in lost.values())


def test_retire_jobs_cancels_only_never_sent_jobs_the_manifest_dropped(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    jobs = _one_of_each(store, lease)
    kept = _add(store, lease)
    assert store.retire_jobs(lease, keep={kept.key}) == 1
    assert _moved(store, {**jobs, "kept": kept}) == {"pending": "cancelled"}
    assert _sql(store.path, "SELECT error_class FROM jobs WHERE id = ?", (jobs["pending"].id,)) == [("removed",)]
    assert store.status_counts(lease.run_id)[S.CANCELLED] == 2, "a retired job is not counted as cancelled"


# ---- the lease ----------------------------------------------------------------------------------------------


def test_a_second_live_acquire_is_refused_and_release_frees_the_run(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    if store.postgres:  # there a second runner joins, with a token of its own; only an exclusive taking is refused
        joined = store.acquire_run(lease.run_id)
        assert joined.runner_id != lease.runner_id and joined.epoch == lease.epoch + 1
        with pytest.raises(RunLockedError, match=r"being run by 2 runner\(s\)"):
            store.acquire_run(lease.run_id, exclusive=True)
        store.confirm_lease(lease)  # both stay live
        store.confirm_lease(joined)
        store.release_run(joined)
    else:
        with pytest.raises(RunLockedError, match="being run by process"):
            store.acquire_run(lease.run_id)
        with pytest.raises(RunLockedError):
            _run(store, "r")  # nor may a second `run` rewrite the settings a live runner reads
    store.release_run(lease)
    assert store.get_run("r").owner is None
    again = store.acquire_run(lease.run_id, exclusive=True)
    assert again.epoch > lease.epoch


def _take_over(store: Store, lease: Lease) -> Lease:
    """The first holder was paused past its lease: a second runner takes the run."""
    _sql(store.path, "UPDATE runs SET lease_until = ? WHERE id = ?", (LONG_AGO, lease.run_id))
    _sql(store.path, "UPDATE runners SET lease_until = ? WHERE id = ?", (LONG_AGO, lease.runner_id))
    return store.acquire_run(lease.run_id)


STALE_WRITES: dict[str, Callable[[Store, Lease, dict[str, JobState]], Any]] = {
    "record_intents": lambda s, ls, j: s.record_intents(ls, [j["pending"]]),
    "record_enqueued": lambda s, ls, j: s.record_enqueued(ls, [(j["submitting"], "g-late")]),
    "confirm_lease": lambda s, ls, j: s.confirm_lease(ls),
    "claim_orphans": lambda s, ls, j: s.claim_orphans(
        ls,
        [j["submitting"]],
        [
            RemoteGeneration(
                "g-orphan",
                "queued",
                model="m",
                prompt=j["submitting"].params["prompt"],
                enqueued_at=(j["submitting"].intent_at or datetime.now()) + timedelta(seconds=1),
            )
        ],
        Window(clock_offset=timedelta(0)),
    ),
    "add_jobs": lambda s, ls, j: s.add_jobs(ls, [NewJob(JobSpec("m", {"prompt": "late"}))]),
    "mark_unsent": lambda s, ls, j: s.mark_unsent(ls, [j["submitting"].id]),
    "mark_cancelled_by_user": lambda s, ls, j: s.mark_cancelled_by_user(ls, [j["pending"].id]),
    "retry_failed": lambda s, ls, j: s.retry_failed(ls),
    "record_remote_rows": lambda s, ls, j: s.record_remote_rows(ls, [(_remote("g-q", "succeeded"), 9.0)]),
}


@pytest.mark.parametrize("write", list(STALE_WRITES))
def test_after_a_takeover_every_write_of_the_old_lease_is_refused(fresh: tuple[Store, Lease], write: str) -> None:
    store, old = fresh
    jobs = {"pending": _add(store, old), "submitting": _add(store, old), "failed": _add(store, old)}
    store.record_intents(old, [jobs["submitting"]])
    jobs["submitting"] = _load(store, old, jobs["submitting"].key)
    _put(store, old, jobs["failed"], S.FAILED, generation_id="g-q")
    new = _take_over(store, old)
    assert new.epoch == old.epoch + 1
    store.claim_jobs(new, 100)  # the old runner's jobs were let go: the new one takes them up
    before = _dump(store.path)
    with pytest.raises(LeaseLostError):
        STALE_WRITES[write](store, old, jobs)
    assert _dump(store.path) == before
    store.release_run(old)  # a no-op for a lease that was taken over
    assert _dump(store.path) == before
    STALE_WRITES[write](store, new, jobs)  # the new holder's same write goes through
    assert _dump(store.path) != before


CHILD = r"""
import json, sys
from batchgen.engine.store import Store
from batchgen.errors import RunLockedError
stores = {}
print(json.dumps("ready"), flush=True)
while line := sys.stdin.readline():
    command, path, *rest = json.loads(line)
    if command == "open":
        stores[path] = Store.open(path)
        answer = "opened"
    else:
        try:
            answer = {"won": stores[path].acquire_run(rest[0], lease_seconds=3600).epoch}
        except RunLockedError as exc:
            answer = {"locked": str(exc)}
    print(json.dumps(answer), flush=True)
# stdin closed: exit, holding what was won until now
"""


class _Children:
    """Child processes that take each step together (the parent sends it to all of them only once every one
    has answered the previous step); always reaped."""

    def __init__(self, n: int) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                cwd=REPO,
            )
            for _ in range(n)
        ]
        assert self._answers() == ["ready"] * n  # imported: from here every step starts at the same moment

    def _answers(self, timeout: float = 30.0) -> list[Any]:
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            readable, _, _ = select_module.select([proc.stdout], [], [], timeout)
            assert readable, f"no answer from child {proc.pid} within {timeout} s"
            answers.append(json.loads(proc.stdout.readline() or "null"))
        return answers

    def step(self, *command: Any) -> list[Any]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        return self._answers()

    def finish(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        assert [proc.wait(timeout=30) for proc in self.procs] == [0] * len(self.procs)

    def reap(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


NEW_DATABASES = 5  # each brand-new database is one more chance for the two openings to collide


def test_two_processes_at_once_both_open_a_new_database_and_one_takes_the_run(tmp_path: Path) -> None:
    children = _Children(2)
    store: Store | None = None
    try:
        for i in range(NEW_DATABASES):
            # both create and migrate the same brand-new database at the same moment
            path = tmp_path / f"new{i}" / "batchgen.db"
            assert children.step("open", str(path)) == ["opened", "opened"]
            counts = _sql(path, "SELECT name, COUNT(*) FROM schema_migrations GROUP BY name ORDER BY name")
            assert counts == [(name, 1) for name, _ in MIGRATIONS]
            tables = {r[0] for r in _sql(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert {"runs", "jobs", "generations", "schema_migrations"} <= tables

        store = Store.open(path, create=False)
        run_id = _run(store, "r")
        # both acquire the run at the same moment: exactly one wins, the other is told who holds it
        answers = children.step("acquire", str(path), run_id)
        assert sorted(next(iter(a)) for a in answers) == ["locked", "won"], answers
        winner = children.procs[["won" in a for a in answers].index(True)]
        assert f"process {winner.pid}" in next(a["locked"] for a in answers if "locked" in a)
        assert _sql(path, "SELECT epoch FROM runs") == [(1,)]
        # while the winner lives, this process is refused too
        with pytest.raises(RunLockedError, match=str(winner.pid)):
            store.acquire_run(run_id)
        children.finish()
        # the winner exited without releasing (as kill -9 would): its hour-long lease is free at once
        assert store.get_run("r").owner is None, "status must not call a dead runner live"
        assert store.acquire_run(run_id).epoch == 2
    finally:
        children.reap()
        if store is not None:
            store.close()


# ---- the budget ------------------------------------------------------------------------------------------------


def test_an_intent_past_the_budget_is_refused_counting_spent_in_flight_and_reserved(tmp_path: Path) -> None:
    store, run_id = _open(tmp_path, budget=10.0)
    lease = store.acquire_run(run_id)
    a, b, c, d, e, f, x = (_add(store, lease, cost=2.0) for _ in range(7))
    # a: succeeded and its cost is known (1.50); b: succeeded, cost not read yet (its estimate, 2.00)
    # c: in flight (2.00); x: failed remotely (costs nothing); d: submitting (2.00); e: undecidable (2.00)
    store.record_intents(lease, [a, b, c, x])
    store.record_enqueued(lease, [(a, "ga"), (b, "gb"), (c, "gc"), (x, "gx")])
    store.record_remote_rows(lease, [(_remote("ga", "succeeded"), 1.5), (_remote("gb", "succeeded"), None)])
    x = _load(store, lease, x.key)
    store.mark_failed(lease, x, E.FAILED_REMOTELY, error="boom", error_class="remote", remote=_remote("gx", "failed"))
    store.record_intents(lease, [d, e])
    store.mark_undecidable(lease, [e.id], error="unreadable")
    money = store.money(run_id)
    assert (money.spent, money.reserved, money.budget, money.left) == (3.5, 6.0, 10.0, 0.5)

    before = _dump(store.path)
    with pytest.raises(BudgetExceededError) as info:
        store.record_intents(lease, [f])
    err = info.value
    assert (err.spent, err.reserved, err.budget, err.needed) == (3.5, 6.0, 10.0, 2.0)
    for part in ("$3.50 spent", "$6.00 reserved", "$0.50 left", "$2.00"):
        assert part in str(err)
    assert _dump(store.path) == before, "a refused intent writes nothing"

    # the same job fits once a reservation is released (d was never sent)
    store.mark_unsent(lease, [d.id])
    store.record_intents(lease, [f])
    assert _status(store.path, f.id) == "submitting"
    store.close()


def test_the_budget_is_checked_for_the_whole_batch_and_may_be_met_exactly(tmp_path: Path) -> None:
    store, run_id = _open(tmp_path, budget=5.0)
    lease = store.acquire_run(run_id)
    a, b, c = (_add(store, lease, cost=2.5) for _ in range(3))
    with pytest.raises(BudgetExceededError):
        store.record_intents(lease, [a, b, c])
    assert {_status(store.path, j.id) for j in (a, b, c)} == {"pending"}, "not even the jobs that would fit"
    store.record_intents(lease, [a, b])  # 5.00 of 5.00
    assert store.money(run_id).left == 0.0
    with pytest.raises(BudgetExceededError):
        store.record_intents(lease, [_add(store, lease, cost=0.01)])
    store.record_intents(lease, [_add(store, lease, cost=None)])  # an unpriced job reserves nothing
    store.close()


def test_at_the_budget_the_ledger_itself_decides_not_its_tallies(tmp_path: Path) -> None:
    """On SQLite an intent reads the ledger's money from the tallies its triggers keep (one row, not a pass over a
    million); a sum kept change by change may differ from one added up in the last bits, so within a millionth of
    the budget the intent adds the ledger up. Here the tally is made to differ by a hair either way, at the budget."""
    store, run_id = _open(tmp_path, budget=5.0)
    lease = store.acquire_run(run_id)
    a, b = _add(store, lease, cost=2.5), _add(store, lease, cost=2.5)
    store.record_intents(lease, [a])
    store.record_enqueued(lease, [(a, "ga")])
    store.record_remote_rows(lease, [(_remote("ga", "succeeded"), 2.5)])  # spent 2.50: b meets the budget exactly
    _sql(store.path, "UPDATE ledger_tallies SET spent = spent + 100")  # a tally just past it would refuse b
    store.record_intents(lease, [b])
    assert _status(store.path, b.id) == "submitting"
    c = _add(store, lease, cost=1e-8)
    _sql(store.path, "UPDATE ledger_tallies SET spent = spent - 200")  # and one just under would let c through
    with pytest.raises(BudgetExceededError):
        store.record_intents(lease, [c])
    _sql(
        store.path, "UPDATE ledger_tallies SET spent = spent - 1000000000"
    )  # far from the budget the tally decides alone
    store.record_intents(lease, [c])
    store.close()


def _enqueue(store: Store, lease: Lease, job: JobState, gid: str) -> JobState:
    store.record_intents(lease, [job])
    store.record_enqueued(lease, [(_load(store, lease, job.key), gid)])
    return _load(store, lease, job.key)


def _time_out_and_retry(store: Store, lease: Lease, job: JobState) -> JobState:
    """Timed out, cancelled, and the cancel not seen to land (the generation may still run): then --retry-failed."""
    store.mark_failed(lease, job, E.TIMED_OUT, error="too slow", error_class="timeout")
    assert store.retry_failed(lease) == 1
    store.claim_jobs(lease, 100)  # a retried job is nobody's until a runner claims it
    return _load(store, lease, job.key)


def test_a_retried_jobs_old_generation_stays_in_the_ledger_and_is_counted(tmp_path: Path) -> None:
    store, run_id = _open(tmp_path, budget=3.0)
    lease = store.acquire_run(run_id)
    job = _time_out_and_retry(store, lease, _enqueue(store, lease, _add(store, lease, cost=2.0), "old"))
    assert job.status is S.PENDING and job.generation_id is None
    assert [(g.generation_id, g.job_id) for g in store.ledger(run_id)] == [("old", job.id)]
    # the old generation was never seen to end: it may still be charged, so it stays reserved
    assert store.money(run_id).reserved == 2.0
    with pytest.raises(BudgetExceededError):
        store.record_intents(lease, [job])
    # the history then says it succeeded after all: it is spent, and unused (the job no longer has it)
    assert store.record_remote_rows(lease, [(_remote("old", "succeeded"), 1.25)]) == 1
    money = store.money(run_id)
    assert (money.spent, money.reserved, money.unused, money.unused_cost) == (1.25, 0.0, 1, 1.25)
    with pytest.raises(BudgetExceededError, match=r"\$1\.25 spent"):
        store.record_intents(lease, [job])  # 1.25 + 2.00 > 3.00
    store.close()


def test_money_reports_a_paid_generation_whose_job_now_uses_another(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    job = _enqueue(store, lease, _add(store, lease, cost=2.0), "unused")
    assert store.unused_generations(lease.run_id) == [] and store.money(lease.run_id).unused == 0
    job = _enqueue(store, lease, _time_out_and_retry(store, lease, job), "current")
    # the history then says the first generation ran and succeeded: paid for, and no job uses it
    store.record_remote_rows(lease, [(_remote("unused", "succeeded"), 0.75)])
    assert job.generation_id == "current"
    unused = store.unused_generations(lease.run_id)
    assert [(g.generation_id, g.job_id, g.cost) for g in unused] == [("unused", job.id, 0.75)]
    money = store.money(lease.run_id)
    assert (money.unused, money.unused_cost) == (1, 0.75)
    # failed, cancelled and lost generations cost nothing and are not listed
    _ledger(store.path, lease.run_id, "gone-f", None, "failed")
    _ledger(store.path, lease.run_id, "gone-c", None, "cancelled")
    _ledger(store.path, lease.run_id, "gone-l", None, "lost")
    assert [g.generation_id for g in store.unused_generations(lease.run_id)] == ["unused"]


# ---- the ledger and reconciliation ---------------------------------------------------------------------------


def _submitting(store: Store, lease: Lease, prompt: str, repeat: int = 0) -> JobState:
    job = _add(store, lease, prompt, repeat=repeat)
    store.record_intents(lease, [job])
    return _load(store, lease, job.key)


def _candidate(gid: str, job: JobState, seconds: float) -> RemoteGeneration:
    assert job.intent_at is not None
    return RemoteGeneration(
        gid,
        "queued",
        model="m",
        prompt=job.params["prompt"],
        enqueued_at=job.intent_at + timedelta(seconds=seconds),
        params={"seconds": 4},
    )


def _window(job: JobState) -> Window:
    assert job.intent_at is not None
    return Window(clock_offset=timedelta(0), server_now=job.intent_at + timedelta(minutes=1))


def test_a_generation_already_in_the_ledger_cannot_be_enqueued_again(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    one, two = _submitting(store, lease, "a"), _submitting(store, lease, "b")
    store.record_enqueued(lease, [(one, "g1")])
    before = _dump(store.path)
    with pytest.raises(IllegalTransition, match="already in the ledger"):
        store.record_enqueued(lease, [(two, "g2"), (two, "g1")])
    assert _dump(store.path) == before


def test_two_claims_for_identical_requests_never_share_a_generation(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    j1, j2 = _submitting(store, lease, "same", 0), _submitting(store, lease, "same", 1)
    candidates = [_candidate("late", j2, 3), _candidate("early", j1, 1)]
    first = store.claim_orphans(lease, [j1], candidates, _window(j2))
    second = store.claim_orphans(lease, [j2], candidates, _window(j2))
    assert {k: g.generation_id for k, g in first.items()} == {j1.id: "early"}, "the oldest match first"
    assert {k: g.generation_id for k, g in second.items()} == {j2.id: "late"}
    assert [(g.generation_id, g.job_id, g.how) for g in store.ledger(lease.run_id)] == [
        ("early", j1.id, "adopted"),
        ("late", j2.id, "adopted"),
    ]
    # a third identical job finds nothing left
    j3 = _submitting(store, lease, "same", 2)
    assert store.claim_orphans(lease, [j3], candidates, _window(j3)) == {}
    assert _status(store.path, j3.id) == "submitting"
    # a job already claimed cannot take a second generation: refused, and the ledger is as it was
    extra = _candidate("extra", j2, 4)
    with pytest.raises(IllegalTransition):
        store.claim_orphans(lease, [j1], [extra], _window(j2))
    assert "extra" not in _ledger_ids(store.path)
    assert _sql(store.path, "SELECT generation_id FROM jobs WHERE id = ?", (j1.id,)) == [("early",)]


def test_two_claims_at_once_from_two_connections_adopt_a_candidate_once(tmp_path: Path) -> None:
    store, run_id = _open(tmp_path)
    lease = store.acquire_run(run_id)
    jobs = [_submitting(store, lease, "same", 0), _submitting(store, lease, "same", 1)]
    other = Store.open(store.path, create=False)
    candidates = [_candidate("only", jobs[1], 1)]
    barrier = threading.Barrier(2, timeout=10)
    results: dict[int, Any] = {}

    def claim(i: int, s: Store) -> None:
        try:
            barrier.wait()
            results[i] = s.claim_orphans(lease, [jobs[i]], candidates, _window(jobs[1]))
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=claim, args=(i, s)) for i, s in enumerate((store, other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert not any(t.is_alive() for t in threads)
        assert all(isinstance(r, dict) for r in results.values()), results
        winners = [jobs[i].id for i, r in results.items() if r]
        assert len(winners) == 1, results
        assert [(g.generation_id, g.job_id) for g in store.ledger(run_id)] == [("only", winners[0])]
    finally:
        other.close()
        store.close()


def test_a_generation_of_another_run_is_never_adopted(tmp_path: Path) -> None:
    store, run_a = _open(tmp_path, "a")
    run_b = _run(store, "b")
    lease_a, lease_b = store.acquire_run(run_a), store.acquire_run(run_b)
    theirs = _submitting(store, lease_b, "same")
    store.record_enqueued(lease_b, [(theirs, "shared")])
    mine = _submitting(store, lease_a, "same")
    assert store.claim_orphans(lease_a, [mine], [_candidate("shared", mine, 1)], _window(mine)) == {}
    assert _status(store.path, mine.id) == "submitting"
    assert store.ledger(run_a) == []
    with pytest.raises(IllegalTransition):
        store.record_enqueued(lease_a, [(mine, "shared")])
    store.close()


def test_a_retried_jobs_old_generation_cannot_be_adopted_again(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    job = _add(store, lease, "again")
    store.record_intents(lease, [job])
    store.record_enqueued(lease, [(_load(store, lease, job.key), "old")])
    job = _load(store, lease, job.key)
    store.mark_failed(lease, job, E.FAILED_REMOTELY, error="x", error_class="remote", remote=_remote("old", "failed"))
    assert store.retry_failed(lease) == 1
    store.claim_jobs(lease, 100)
    store.record_intents(lease, [_load(store, lease, job.key)])
    job = _load(store, lease, job.key)
    # the listing shows the old generation as if it matched the new attempt: it is in the ledger, so it is skipped
    old = _candidate("old", job, 1)
    assert store.claim_orphans(lease, [job], [old], _window(job)) == {}
    found = store.claim_orphans(lease, [job], [old, _candidate("new", job, 2)], _window(job))
    assert {k: g.generation_id for k, g in found.items()} == {job.id: "new"}
    assert {(g.generation_id, g.job_id) for g in store.ledger(lease.run_id)} == {("old", job.id), ("new", job.id)}


def test_an_older_database_where_two_jobs_share_a_generation_still_opens(tmp_path: Path) -> None:
    """The unfenced matching before the ledger could give one generation to two jobs; the ledger's backfill must
    not make such a database impossible to open."""
    from sqlalchemy import create_engine, text

    from batchgen.engine.migrations import m001_initial

    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as db:
        m001_initial(db)
        db.execute(text("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, applied_at DATETIME)"))
        db.execute(text("INSERT INTO schema_migrations VALUES ('m001_initial', CURRENT_TIMESTAMP)"))
        db.execute(
            text(
                "INSERT INTO runs (id, name, manifest_path, manifest_sha256, base_url, out_dir, settings_json, "
                "created_at, updated_at) VALUES (1, 'r', 'm', '', 'u', 'o', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        for job_id in (1, 2):
            db.execute(
                text(
                    "INSERT INTO jobs (id, run_id, key, model, params_json, variables_json, repeat, origin, "
                    "media_type, status, generation_id, attempts, updated_at) VALUES "
                    "(:id, 1, :key, 'm', '{}', '{}', 0, '', 'video', 'succeeded', 'shared', 1, CURRENT_TIMESTAMP)"
                ),
                {"id": job_id, "key": f"k{job_id}"},
            )
    engine.dispose()
    store = Store.open(path)
    try:
        ledger = store.ledger(1)
    finally:
        store.close()
    assert [(g.generation_id, g.job_id, g.remote_status) for g in ledger] == [("shared", 1, "succeeded")]


def test_claims_take_only_jobs_nobody_holds_and_retries_let_jobs_go(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    sent, failed, waiting = (_add(store, lease, held=False) for _ in range(3))
    claimed = {j.id for j in store.claim_jobs(lease, 10)}
    assert claimed == {sent.id, failed.id, waiting.id}
    assert store.claim_jobs(lease, 10) == []  # held: nobody claims them again
    _put(store, lease, sent, S.QUEUED, generation_id="g-sent")
    _put(store, lease, failed, S.FAILED, error_class="moderation")
    store.retry_failed(lease)  # the failed job is nobody's now: whoever claims next sends it
    assert [j.id for j in store.claim_jobs(lease, 10)] == [failed.id]
    store.release_run(lease)  # leaving lets every job go, the one in flight first for whoever comes next
    nxt = store.acquire_run(lease.run_id)
    assert [j.id for j in store.claim_jobs(nxt, 1)] == [sent.id]
    assert {j.id for j in store.claim_jobs(nxt, 10)} == {failed.id, waiting.id}


def test_a_claim_of_sent_jobs_only_leaves_the_pending_ones(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    sent, waiting = _add(store, lease, held=False), _add(store, lease, held=False)
    store.claim_jobs(lease, 10)
    _put(store, lease, sent, S.QUEUED, generation_id="g-sent")
    store.release_run(lease)
    nxt = store.acquire_run(lease.run_id)
    assert [j.id for j in store.claim_jobs(nxt, 10, only_sent=True)] == [sent.id]
    assert store.claim_jobs(nxt, 10, only_sent=True) == []
    assert [j.id for j in store.claim_jobs(nxt, 10)] == [waiting.id]


def test_a_jobs_progress_is_written_only_by_the_runner_that_holds_it(fresh: tuple[Store, Lease]) -> None:
    store, lease = fresh
    job = _put(store, lease, _add(store, lease), S.QUEUED, generation_id="g-held")
    _sql(store.path, "UPDATE jobs SET runner_id = NULL WHERE id = ?", (job.id,))  # let go (a sweep, a retry)
    before = _dump(store.path)
    for write in (
        lambda: store.mark_started(lease, job, _remote("g-held", "processing")),
        lambda: store.mark_succeeded_remotely(lease, job, _remote("g-held", "succeeded"), download=True),
        lambda: store.mark_failed(lease, job, E.TIMED_OUT, error="slow", error_class="timeout"),
        lambda: store.record_result_url(lease, job, "http://x/y.png"),
    ):
        with pytest.raises(LeaseLostError):
            write()
        assert _dump(store.path) == before
    store.claim_jobs(lease, 10)
    store.mark_started(lease, job, _remote("g-held", "processing"))
    assert _load(store, lease, job.key).status is S.PROCESSING


def test_a_jobs_progress_does_not_wait_for_the_runs_lock(postgres_url: str, tmp_path: Path) -> None:
    # the run's lock serialises only what the runners share (intents, adoptions): a completion goes through while
    # another runner is inside a locked write
    from batchgen.engine.postgres import lock_for_writing

    store, run_id = _open(tmp_path, at=postgres_url)
    try:
        lease = store.acquire_run(run_id)
        job = _put(store, lease, _add(store, lease), S.QUEUED, generation_id="g-free")
        other = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with other.connect() as db, db.begin():
                lock_for_writing(db, run_id)
                done = threading.Event()
                worker = threading.Thread(
                    target=lambda: (store.mark_started(lease, job, _remote("g-free", "processing")), done.set())
                )
                worker.start()
                worker.join(timeout=30)  # bounded: on failure it waits for the lock until the transaction ends
                assert done.is_set(), "a completion waited for the run's lock"
            worker.join(timeout=30)
        finally:
            other.dispose()
        with pytest.raises(LeaseLostError):  # an intent still decides under the lock, and on held jobs only
            store.record_intents(lease, [_add(store, lease, held=False)])
    finally:
        store.close()


def test_add_jobs_reads_a_generator_in_chunks_and_adds_only_new_keys(fresh: tuple[Store, Lease]) -> None:
    from batchgen.engine.transitions import ADD_CHUNK

    store, lease = fresh
    total = 2 * ADD_CHUNK + 7
    specs = [JobSpec("m", {"prompt": f"bulk {i}"}) for i in range(total)]
    assert store.add_jobs(lease, (NewJob(s, 1.0) for s in specs[: ADD_CHUNK + 1])) == ADD_CHUNK + 1
    assert store.add_jobs(lease, (NewJob(s, 1.0) for s in specs)) == total - ADD_CHUNK - 1
    assert store.add_jobs(lease, (NewJob(s, 1.0) for s in specs)) == 0
    assert sorted(j.key for j in store.load_jobs(lease.run_id, [S.PENDING])) == sorted(s.key for s in specs)


def test_a_pending_job_priced_later_shows_a_new_updated_at(fresh: tuple[Store, Lease]) -> None:
    """Every change to what export and the gallery show moves the job's updated_at, which the gallery watches for
    changes: a job added while prices were unknown, then given this plan's estimate, is a change."""
    store, lease = fresh
    spec = JobSpec("m", {"prompt": "priced later", "seconds": "4"})
    store.add_jobs(lease, [NewJob(spec, estimated_cost=None)])
    _sql(store.path, "UPDATE jobs SET updated_at = ?", (LONG_AGO,))
    store.add_jobs(lease, [NewJob(spec, estimated_cost=0.4)])
    ((estimate, updated),) = _sql(store.path, "SELECT estimated_cost, updated_at FROM jobs")
    assert estimate == 0.4
    assert str(updated) > LONG_AGO
