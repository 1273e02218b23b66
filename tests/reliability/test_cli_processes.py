"""`batchgen run` as a process: Ctrl-C, and a second runner on the same run. The emulator runs in this process."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from batchgen.emulator import EmulatorConfig, running_emulator
from tests.engine.conftest import assert_exactly_once

from .conftest import (
    REPO,
    assert_clean_user_error,
    batchgen,
    batchgen_cmd,
    env_with,
    image_manifest,
    job_statuses,
    run_row,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)
UNFINISHED = {"pending", "submitting", "queued", "processing", "downloading"}


def start_batchgen(*args: str | Path, key: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        batchgen_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with(key), cwd=REPO
    )


def test_ctrl_c_exits_130_says_how_to_resume_and_the_resume_finishes_exactly_once(tmp_path: Path) -> None:
    manifest = image_manifest(tmp_path, [f"ox {i}" for i in range(16)], concurrency=4)
    db, out = tmp_path / "state" / "batchgen.db", tmp_path / "out"
    with running_emulator(EmulatorConfig(seed=3, duration_s=0.5)) as emu:
        runner = start_batchgen("run", manifest, "--db", db, "--base-url", emu.base_url, "--out", out, key=emu.api_key)
        try:
            wait_for(lambda: len(emu.ledger.created_ids) >= 4, timeout=30, what="4 generations", process=runner)
            runner.send_signal(signal.SIGINT)
            stdout, stderr = runner.communicate(timeout=20)
        finally:
            runner.kill()
        assert runner.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert "batchgen resume batch" in stderr  # how to continue, with the run's name
        assert Path(stdout.strip()) == out / "results.csv" and (out / "results.csv").is_file()
        # resumable: the lease is released, and work was left (else the Ctrl-C came too late to test anything)
        assert run_row(db)["owner"] is None
        assert UNFINISHED & set(job_statuses(db)), job_statuses(db)

        resumed = batchgen("resume", "--db", db, key=emu.api_key)
        assert resumed.returncode == 0, resumed.stderr
        rows = assert_exactly_once(emu, db)
    assert len(rows) == 16


def test_a_second_runner_on_a_live_run_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    manifest = image_manifest(tmp_path, [f"yak {i}" for i in range(10)], concurrency=2)
    db, out = tmp_path / "state" / "batchgen.db", tmp_path / "out"
    with running_emulator(EmulatorConfig(seed=4, duration_s=0.4)) as emu:
        first = start_batchgen("run", manifest, "--db", db, "--base-url", emu.base_url, "--out", out, key=emu.api_key)
        try:
            wait_for(lambda: len(emu.ledger.created_ids) >= 1, timeout=30, what="a generation", process=first)
            before = run_row(db)
            # the same manifest with other settings, and a resume: both must leave the live run alone
            second = batchgen(
                "run", manifest, "--db", db, "--base-url", emu.base_url, "--out", tmp_path / "elsewhere", "-j", "7",
                key=emu.api_key,
            )  # fmt: skip
            third = batchgen("resume", "--db", db, key=emu.api_key)
            assert first.poll() is None, "the first runner finished before the others tried: nothing was tested"
            after = run_row(db)
            _, stderr = first.communicate(timeout=60)
        finally:
            first.kill()
        for refused in (second, third):
            assert_clean_user_error(refused, 2, "is being run by process", "batchgen resume")
        assert first.returncode == 0, stderr
        # the refused runner rewrote nothing: a later resume or export still finds the files where they are
        for column in ("out_dir", "base_url", "settings_json"):
            assert after[column] == before[column], column
        assert json.loads(after["settings_json"])["concurrency"] == 2
        assert not (tmp_path / "elsewhere").exists()
        rows = assert_exactly_once(emu, db)
    assert len(rows) == 10
