"""The tallies SQLite's triggers keep (engine/tallies.py, m007) say what the aggregate reads say, after any change
to the jobs and the ledger; `status` reads a SQLite file through them with the standard library alone
(engine/glance.py), and says what the store says."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from batchgen.engine.glance import NEWEST_MIGRATION, glance
from batchgen.engine.migrations import MIGRATIONS, apply_migrations
from batchgen.engine.overview import run_overview
from batchgen.engine.store import Store
from batchgen.engine.tallies import UNFINISHED, held_by_runner, tallied_overview
from batchgen.engine.utc import utcnow

STATUSES = ("pending", "submitting", "unknown", "queued", "processing", "downloading", "succeeded", "failed")
REMOTE = ("queued", "processing", "succeeded", "failed", "cancelled", "lost")
T0 = "2026-11-01 12:00:00.000000"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    """A migrated state file with two runs (ids 1 and 2) and a runner of each."""
    db = tmp_path / "batchgen.db"
    store = Store.open(db)
    for name in ("a", "b"):
        store.ensure_run(
            name, manifest_path="m.yaml", manifest_sha256="", base_url="http://h", out_dir="o", settings={}
        )
    store.close()
    with closing(sqlite3.connect(db)) as con, con:
        for run_id in (1, 2):
            con.execute(
                "INSERT INTO runners (run_id, token, identity, host, pid, started_at, heartbeat_at, lease_until) "
                "VALUES (?, 1, 'elsewhere:1:t::', 'elsewhere', 1, ?, ?, ?)",
                (run_id, T0, T0, _stamp(utcnow() + timedelta(minutes=5))),
            )
    yield db


def _scanned(con: sqlite3.Connection, run_id: int) -> tuple[Any, dict[int, int]]:
    """What the aggregate reads say: overview.run_overview (through SQLAlchemy) and the runners' held counts."""
    store = Store.open(con.execute("PRAGMA database_list").fetchone()[2], create=False)
    try:
        with store.engine.connect() as db:
            overview = run_overview(db, run_id)
            held = dict(
                db.execute(
                    text(
                        "SELECT runner_id, COUNT(*) FROM jobs WHERE run_id = :r AND runner_id IS NOT NULL AND status "
                        f"IN ({', '.join(repr(s) for s in UNFINISHED)}) GROUP BY runner_id"
                    ),
                    {"r": run_id},
                ).all()
            )
    finally:
        store.close()
    return overview, held


def _same(tallied: Any, scanned: Any) -> None:
    assert tallied.counts == scanned.counts
    assert tallied.estimated_total == pytest.approx(scanned.estimated_total, abs=1e-9)
    assert tallied.money.spent == pytest.approx(scanned.money.spent, abs=1e-9)
    assert tallied.money.reserved == pytest.approx(scanned.money.reserved, abs=1e-9)
    assert tallied.money.budget == scanned.money.budget
    assert [u.generation_id for u in tallied.unused] == [u.generation_id for u in scanned.unused]
    assert tallied.money.unused_cost == pytest.approx(scanned.money.unused_cost, abs=1e-9)
    assert tallied.unused == scanned.unused


costs = st.one_of(st.none(), st.sampled_from([0.0, 0.1, 0.25, 1.2, 3.75]))
job_changes = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(STATUSES),
        "error_class": st.sampled_from([None, "removed", "content_policy"]),
        "runner_id": st.sampled_from([None, 1, 2]),
        "estimated_cost": costs,
        "generation_id": st.sampled_from([None, "g0", "g1", "g2", "g3", "g4", "g5"]),
    },
)
ledger_changes = st.fixed_dictionaries(
    {},
    optional={
        "remote_status": st.sampled_from(REMOTE),
        "cost": costs,
        "estimated_cost": costs,
        "job_id": st.sampled_from([None, 1, 2, 3, 4, 5, 99]),
    },
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add_job"), st.sampled_from([1, 2]), job_changes),
        st.tuples(st.just("move_job"), st.integers(1, 6), job_changes),
        st.tuples(st.just("drop_job"), st.integers(1, 6), st.just({})),
        st.tuples(st.just("add_generation"), st.integers(0, 5), ledger_changes),
        st.tuples(st.just("change_generation"), st.integers(0, 5), ledger_changes),
        st.tuples(st.just("move_generation_run"), st.integers(0, 5), st.just({})),
        st.tuples(st.just("budget"), st.sampled_from([1, 2]), st.just({})),
    ),
    max_size=25,
)


def _apply(con: sqlite3.Connection, step: tuple[str, int, dict[str, Any]], counter: list[int]) -> None:
    """One change through plain SQL: the triggers must follow whatever writes the rows."""
    kind, target, changes = step
    sets = ", ".join(f"{c} = ?" for c in changes)
    if kind == "add_job":
        counter[0] += 1
        row = {"status": "pending", "estimated_cost": 0.5, **changes}
        con.execute(
            "INSERT INTO jobs (run_id, key, model, params_json, variables_json, repeat, origin, media_type, status, "
            "attempts, estimated_cost, error_class, runner_id, generation_id, updated_at) "
            "VALUES (?, ?, 'm', '{}', '{}', 0, 'matrix', 'image', ?, 0, ?, ?, ?, ?, ?)",
            (
                target, f"k{counter[0]}", row["status"], row["estimated_cost"], row.get("error_class"),
                row.get("runner_id"), row.get("generation_id"), T0,
            ),
        )  # fmt: skip
    elif kind == "move_job" and changes:
        con.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*changes.values(), target))
    elif kind == "drop_job":
        con.execute("DELETE FROM jobs WHERE id = ?", (target,))
    elif kind == "add_generation":
        row = {"remote_status": "queued", "estimated_cost": 0.5, "cost": None, "job_id": None, **changes}
        con.execute(
            "INSERT OR IGNORE INTO generations (generation_id, run_id, job_id, model, request_json, how, seen_at, "
            "remote_status, estimated_cost, cost, updated_at) VALUES (?, 1, ?, 'm', '{\"prompt\": \"p\"}', 'enqueued', "
            "?, ?, ?, ?, ?)",
            (
                f"g{target}", row["job_id"], f"2026-11-01 12:00:0{target}.000000", row["remote_status"],
                row["estimated_cost"], row["cost"], T0,
            ),
        )  # fmt: skip
    elif kind == "change_generation" and changes:
        con.execute(f"UPDATE generations SET {sets} WHERE generation_id = ?", (*changes.values(), f"g{target}"))
    elif kind == "move_generation_run":
        con.execute("UPDATE generations SET run_id = 3 - run_id WHERE generation_id = ?", (f"g{target}",))
    elif kind == "budget":
        con.execute("UPDATE runs SET budget = 10.0 WHERE id = ?", (target,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_the_tallies_say_what_the_scans_say_after_any_changes(path: Path, steps: list[Any]) -> None:
    with closing(sqlite3.connect(path)) as con:
        con.execute("DELETE FROM generations")
        con.execute("DELETE FROM jobs")
        con.commit()
        counter = [0]
        for step in steps:
            _apply(con, step, counter)
        con.commit()
        for run_id in (1, 2):
            scanned, held = _scanned(con, run_id)
            cursor = con.cursor()
            _same(tallied_overview(cursor, run_id), scanned)
            assert held_by_runner(cursor, run_id) == held


def test_a_change_rolled_back_leaves_the_tallies_as_they_were(path: Path) -> None:
    with closing(sqlite3.connect(path)) as con:
        _apply(con, ("add_job", 1, {"status": "queued"}), [0])
        con.commit()
        before = tallied_overview(con.cursor(), 1)
        _apply(con, ("move_job", 1, {"status": "succeeded", "generation_id": "g1"}), [1])
        _apply(con, ("add_generation", 1, {"job_id": 1, "remote_status": "succeeded", "cost": 1.2}), [1])
        assert tallied_overview(con.cursor(), 1) != before  # seen inside the transaction ...
        con.rollback()
        assert tallied_overview(con.cursor(), 1) == before  # ... and gone with it


def test_a_database_from_before_the_tallies_gets_them_filled_in(tmp_path: Path) -> None:
    """m007 adds up what an older database holds: its status after the migration is what the scans said."""
    db = tmp_path / "old.db"
    store = Store.open(db)
    store.close()
    with closing(sqlite3.connect(db)) as con, con:  # make it a database of m006, with rows written then
        for statement in ("job_added", "job_moved", "job_generation", "job_removed"):
            con.execute(f"DROP TRIGGER tally_{statement}")
        for statement in ("generation_added", "generation_changed", "generation_removed"):
            con.execute(f"DROP TRIGGER tally_{statement}")
        con.execute("DROP TABLE job_tallies")
        con.execute("DROP TABLE ledger_tallies")
        con.execute("DELETE FROM schema_migrations WHERE name = 'm007_tallies'")
        con.execute(
            "INSERT INTO runs (id, name, manifest_path, manifest_sha256, base_url, out_dir, settings_json, "
            "created_at, updated_at) VALUES (1, 'a', 'm', '', 'http://h', 'o', '{}', ?, ?)",
            (T0, T0),
        )
        counter = [0]
        for step in [
            ("add_job", 1, {"status": "succeeded", "generation_id": "g1"}),
            ("add_job", 1, {"status": "queued", "generation_id": "g3", "runner_id": 1}),
            ("add_job", 1, {"status": "submitting", "estimated_cost": 1.2}),
            ("add_job", 1, {"status": "pending", "error_class": "removed"}),
            ("add_generation", 1, {"job_id": 1, "remote_status": "succeeded", "cost": 0.25}),
            ("add_generation", 2, {"job_id": 2, "remote_status": "succeeded", "cost": 0.25}),  # paid, unused
            ("add_generation", 3, {"job_id": 2, "remote_status": "processing"}),
        ]:
            _apply(con, step, counter)  # type: ignore[arg-type]
    with closing(sqlite3.connect(db)) as con:
        assert glance(db, "a") is None  # an older schema: the store's, which migrates it
        scanned, held = _scanned(con, 1)  # opening the store applied m007
        tallied = tallied_overview(con.cursor(), 1)
    _same(tallied, scanned)
    assert [u.generation_id for u in tallied.unused] == ["g2"]
    assert held_by_runner(sqlite3.connect(db).cursor(), 1) == held == {1: 1}


def test_glance_says_what_the_store_says(path: Path) -> None:
    with closing(sqlite3.connect(path)) as con, con:
        counter = [0]
        for step in [
            ("add_job", 1, {"status": "queued", "runner_id": 1, "generation_id": "g1"}),
            ("add_job", 1, {"status": "succeeded", "generation_id": "g2"}),
            ("add_generation", 0, {"job_id": 1, "remote_status": "succeeded", "cost": 0.3}),  # paid, unused
            ("add_generation", 1, {"job_id": 1, "remote_status": "processing"}),
            ("add_generation", 2, {"job_id": 2, "remote_status": "succeeded", "cost": 0.3}),
        ]:
            _apply(con, step, counter)  # type: ignore[arg-type]
        con.execute("UPDATE runners SET ended_at = ?, end_reason = 'done' WHERE run_id = 2", (T0,))
        con.execute("UPDATE runs SET budget = 5.0, stream_mode = 'live' WHERE id = 1")
    store = Store.open(path, create=False)
    try:
        for name, run_id in (("a", 1), ("b", 2), (None, 2)):
            seen = glance(path, name)
            assert seen is not None
            assert seen.run == store.get_run(name)
            assert seen.overview == store.overview(run_id)
            assert seen.runners == store.runners(run_id)
        assert seen.runners[0].live is False and seen.runners[0].end_reason == "done"
        first = glance(path, "a")
        assert first is not None and first.runners[0].live and first.runners[0].jobs_held == 1
        assert [u.generation_id for u in first.overview.unused] == ["g0"]
        assert first.overview.money.budget == 5.0
    finally:
        store.close()


def test_glance_leaves_to_the_store_what_it_cannot_read(path: Path, tmp_path: Path) -> None:
    assert glance(path, "no-such-run") is None
    assert glance(tmp_path / "missing.db", None) is None
    assert not (tmp_path / "missing.db").exists()  # never created
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    assert glance(tmp_path / "junk.db", None) is None
    with closing(sqlite3.connect(path)) as con, con:
        con.execute("INSERT INTO schema_migrations (name) VALUES ('m999_from_a_newer_batchgen')")
    assert glance(path, "a") is None


def test_glance_reads_the_newest_schema() -> None:
    assert NEWEST_MIGRATION == MIGRATIONS[-1][0]


def test_the_tallies_exist_only_on_sqlite() -> None:
    """PostgreSQL's runners write side by side; m007 adds nothing there (its status reads aggregates)."""
    from tests.kit_postgres import fresh_database

    with fresh_database() as url:
        store = Store.open(url)
        try:
            with store.engine.connect() as db:
                tables = {r[0] for r in db.execute(text("SELECT tablename FROM pg_tables"))}
                assert "job_tallies" not in tables and "runs" in tables
                assert {r[0] for r in db.execute(text("SELECT name FROM schema_migrations"))} >= {"m007_tallies"}
        finally:
            store.close()
    assert apply_migrations  # the one way migrations are applied, on both


def test_status_of_a_sqlite_file_imports_no_sqlalchemy(path: Path) -> None:
    """`status` has 1 s at a million jobs, and importing SQLAlchemy and SQLModel costs about half of it here."""
    probe = (
        "import sys\n"
        "from batchgen.cli import main\n"
        f"sys.argv = ['batchgen', 'status', '--json', '--db', {str(path)!r}, 'a']\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'sqlmodel'))\n"
        "print('LOADED', loaded)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGEN_")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert '"run": "a"' in done.stdout
    assert "LOADED []" in done.stdout
    assert json.loads(done.stdout[: done.stdout.index("LOADED")])["runners"][0]["live"] is True
