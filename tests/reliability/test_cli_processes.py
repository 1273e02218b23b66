"""`batchgen run` as a process: Ctrl-C, and a second runner on the same run. The emulator runs in this process.

The emulator holds every generation (EmulatorConfig(hold=True)) so "mid-run" does not depend on how fast this
machine is: the run cannot finish until the test calls emu.release().
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from batchgen.emulator import EmulatorConfig, running_emulator
from tests.kit import IMAGE_MODEL, assert_exactly_once, wait_for, write_manifest
from tests.kit_processes import assert_clean_user_error, batchgen, batchgen_cmd, job_statuses, run_row, started

pytestmark = pytest.mark.timeout(90)
UNFINISHED = {"pending", "submitting", "queued", "processing", "downloading"}


def test_ctrl_c_exits_130_says_how_to_resume_and_the_resume_finishes_exactly_once(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, model=IMAGE_MODEL, prompts=[f"ox {i}" for i in range(16)], concurrency=4)
    db, out = tmp_path / "state" / "batchgen.db", tmp_path / "out"
    # hold: the 4 running generations cannot finish, so the Ctrl-C lands mid-run however slow the machine is
    with running_emulator(EmulatorConfig(seed=3, duration_s=0, hold=True)) as emu:
        args = ("run", manifest, "--db", db, "--base-url", emu.base_url, "--out", out)
        with started(batchgen_cmd(*args), key=emu.api_key) as runner:
            wait_for(lambda: len(emu.held) >= 4, timeout=60, what="4 running generations", process=runner)
            runner.send_signal(signal.SIGINT)
            stdout, stderr = runner.communicate(timeout=30)
        assert runner.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert "batchgen resume batch" in stderr  # how to continue, with the run's name
        assert Path(stdout.strip()) == out / "results.csv" and (out / "results.csv").is_file()
        # resumable: the lease is released, and work was left
        assert run_row(db)["owner"] is None
        assert UNFINISHED & set(job_statuses(db)), job_statuses(db)

        emu.release()  # the interrupted generations, and every later one, may finish now
        resumed = batchgen("resume", "--db", db, key=emu.api_key)
        assert resumed.returncode == 0, resumed.stderr
        rows = assert_exactly_once(emu, db)
    assert len(rows) == 16


def test_a_second_runner_on_a_live_run_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, model=IMAGE_MODEL, prompts=[f"yak {i}" for i in range(10)], concurrency=2)
    db, out = tmp_path / "state" / "batchgen.db", tmp_path / "out"
    # hold: the first runner's generations stay running until the other two have been refused
    with running_emulator(EmulatorConfig(seed=4, duration_s=0, hold=True)) as emu:
        args = ("run", manifest, "--db", db, "--base-url", emu.base_url, "--out", out)
        with started(batchgen_cmd(*args), key=emu.api_key) as first:
            wait_for(lambda: len(emu.held) >= 1, timeout=60, what="a running generation", process=first)
            before = run_row(db)
            # the same manifest with other settings, and a resume: both must leave the live run alone
            second = batchgen(
                "run", manifest, "--db", db, "--base-url", emu.base_url, "--out", tmp_path / "elsewhere", "-j", "7",
                key=emu.api_key,
            )  # fmt: skip
            third = batchgen("resume", "--db", db, key=emu.api_key)
            assert first.poll() is None, "the first runner ended while its generations were held"
            after = run_row(db)
            emu.release()
            _, stderr = first.communicate(timeout=60)
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
