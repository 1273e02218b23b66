"""A runner paused past its lease (Ctrl-Z, a laptop lid, a VM pause) is taken over, and when it is continued it
sends nothing more: real processes, real SIGSTOP/SIGCONT, the emulator holding generations so nothing races."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchgen.emulator import EmulatorConfig, running_emulator
from tests.kit import IMAGE_MODEL, assert_exactly_once, wait_for, write_manifest
from tests.kit_processes import entry_cmd, run_row, started

pytestmark = pytest.mark.timeout(120)
LEASE = "1.0"


def _lease_over(db: Path) -> bool:
    until = run_row(db)["lease_until"]
    return until is not None and datetime.fromisoformat(until).replace(tzinfo=UTC) < datetime.now(UTC)


def _wait_for_the_write_lock_free(db: Path) -> None:
    """Until the runner's transaction ends: SQLite's busy handler waits for the lock (bounded by its timeout)."""
    waiter = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        waiter.execute("BEGIN IMMEDIATE")
        waiter.execute("ROLLBACK")
    except sqlite3.OperationalError:
        pass  # still held after 10 s: the caller's next attempt says so, bounded
    finally:
        waiter.close()


def _pause_outside_a_transaction(process: subprocess.Popen[str], db: Path) -> None:
    """SIGSTOP the runner at a moment it holds no write lock on the database (a pause inside one of its
    millisecond-long transactions would block every other process on SQLite until it is continued)."""
    for _ in range(200):
        process.send_signal(signal.SIGSTOP)
        probe = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            process.send_signal(signal.SIGCONT)
            _wait_for_the_write_lock_free(db)  # else the next SIGSTOP can land in that same transaction, again
        finally:
            probe.close()
    raise AssertionError("the runner always held the database's write lock")


def test_a_runner_paused_past_its_lease_is_taken_over_and_sends_nothing_when_continued(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, model=IMAGE_MODEL, prompts=[f"ox {i}" for i in range(6)], concurrency=2)
    db, out = tmp_path / "state" / "batchgen.db", tmp_path / "out"
    with running_emulator(EmulatorConfig(seed=21, duration_s=0.05, hold=True)) as emu:
        first_cmd = entry_cmd(
            "run", "--manifest", manifest, "--db", db, "--base-url", emu.base_url, "--out", out,
            "--lease-seconds", LEASE,
        )  # fmt: skip
        second_cmd = entry_cmd("resume", "--db", db, "--base-url", emu.base_url, "--lease-seconds", LEASE)
        with started(first_cmd, key=emu.api_key) as first:
            wait_for(lambda: len(emu.held) == 2, timeout=30, what="two generations in flight", process=first)
            _pause_outside_a_transaction(first, db)
            wait_for(lambda: _lease_over(db), timeout=10, what="the paused runner's lease to run out")
            with started(second_cmd, key=emu.api_key) as second:
                wait_for(lambda: run_row(db)["epoch"] == 2, timeout=30, what="the takeover", process=second)
                emu.release()
                _, taken_err = second.communicate(timeout=60)
            assert second.returncode == 0, taken_err
            enqueues_before = len(emu.ledger.enqueues)

            first.send_signal(signal.SIGCONT)
            _, paused_err = first.communicate(timeout=30)
        assert first.returncode == 4, paused_err
        assert "took this run over" in paused_err and "Traceback" not in paused_err
        assert len(emu.ledger.enqueues) == enqueues_before, "the continued runner sent an enqueue"
        rows = assert_exactly_once(emu, db)
    assert len(rows) == 6
    assert run_row(db)["owner"] is None
