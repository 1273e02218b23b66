"""Disk trouble under `batchgen run`: an output directory that cannot exist, a disk that fills up mid-download, a
read-only state database. Each is a clear error (exit 2, no traceback), leaves the state intact, and the run
finishes exactly once with `batchgen resume` once the cause is gone.

Tests run as root, which ignores file permissions, so the troubles are real ones: a path under a regular file,
and small tmpfs mounts (skipped where mounting is not allowed, except under CI, where they must run)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgen.emulator import EmulatorConfig, RunningEmulator, running_emulator
from tests.kit import IMAGE_MODEL, assert_exactly_once, require, write_manifest
from tests.kit_processes import assert_clean_user_error, batchgen, job_statuses, run_row

pytestmark = pytest.mark.timeout(90)
JOBS = 12


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(seed=8, duration_s=0.05)) as running:
        yield running


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 32 KiB tmpfs (8 pages: a few small files); remount it with `mount -o remount,...`."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    require(shutil.which("mount") and shutil.which("umount"), "mount and umount (util-linux) are not installed")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(where)], capture_output=True)
    require(
        mounted.returncode == 0,
        f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}",
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


def run_with_blocked_output(emu: RunningEmulator, tmp_path: Path, db: Path) -> Path:
    """`batchgen run --out BLOCKER/out` where BLOCKER is a regular file; returns BLOCKER."""
    manifest = write_manifest(tmp_path, model=IMAGE_MODEL, prompts=[f"ox {i}" for i in range(JOBS)], concurrency=4)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be\n")
    result = batchgen(
        "run", manifest, "--db", db, "--base-url", emu.base_url, "--out", blocker / "out", key=emu.api_key
    )  # fmt: skip
    assert_clean_user_error(result, 2, "cannot create the output directory", str(blocker / "out"))
    return blocker


def test_an_output_directory_under_a_file_enqueues_nothing_and_resumes(emu: RunningEmulator, tmp_path: Path) -> None:
    db = tmp_path / "state" / "batchgen.db"
    blocker = run_with_blocked_output(emu, tmp_path, db)
    assert emu.ledger.enqueues == []  # refused before a single paid request
    assert job_statuses(db) == {"pending": JOBS} and run_row(db)["owner"] is None
    blocker.unlink()
    resumed = batchgen("resume", "--db", db, key=emu.api_key)
    assert resumed.returncode == 0, resumed.stderr
    assert len(assert_exactly_once(emu, db)) == JOBS


def test_a_full_disk_mid_download_stops_cleanly_and_resume_fetches_without_regenerating(
    emu: RunningEmulator, tmp_path: Path, tmpfs: Path
) -> None:
    db = tmp_path / "state" / "batchgen.db"
    manifest = write_manifest(tmp_path, model=IMAGE_MODEL, prompts=[f"yak {i}" for i in range(JOBS)], concurrency=4)
    result = batchgen("run", manifest, "--db", db, "--base-url", emu.base_url, "--out", tmpfs, key=emu.api_key)
    assert_clean_user_error(result, 2, "No space left on device", "batchgen resume")
    statuses = job_statuses(db)
    assert statuses.get("succeeded", 0) < JOBS and "failed" not in statuses, statuses  # nothing written off
    assert run_row(db)["owner"] is None
    created = len(emu.ledger.created_ids)

    remount(tmpfs, "size=8m")  # space freed (the WAL of a dozen jobs, with their indexes, passes 1 MB)
    resumed = batchgen("resume", "--db", db, key=emu.api_key)
    assert resumed.returncode == 0, resumed.stderr
    assert len(assert_exactly_once(emu, db)) == JOBS
    # results paid for before the disk filled were downloaded, not generated again (exactly once counts them)
    assert created >= 1
    assert not list(tmpfs.glob(".*.part"))


def test_a_read_only_database_is_a_clear_error_and_sends_nothing(
    emu: RunningEmulator, tmp_path: Path, tmpfs: Path
) -> None:
    remount(tmpfs, "size=8m")  # room for the WAL of a dozen jobs with their indexes
    db = tmpfs / "batchgen.db"
    blocker = run_with_blocked_output(emu, tmp_path, db)  # a run with every job pending
    blocker.unlink()
    remount(tmpfs, "ro")
    before = db.read_bytes()
    result = batchgen("resume", "--db", db, key=emu.api_key)
    assert_clean_user_error(result, 2, str(db), "read-only", "make it writable")
    assert emu.ledger.enqueues == []  # no intent on disk, so no request may leave
    assert db.read_bytes() == before

    remount(tmpfs, "rw")
    resumed = batchgen("resume", "--db", db, key=emu.api_key)
    assert resumed.returncode == 0, resumed.stderr
    assert len(assert_exactly_once(emu, db)) == JOBS
