"""kill -9 at random moments, then resume, again and again: still exactly one generation per job, and every file
is the one the emulator served. The runner is a real process (runner_entry.py, fast timings); the emulator runs here
with every fault knob on, so the ledger sees every request any of the runners sent."""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
from pathlib import Path

import pytest

from batchgen.core.jobs import JobStatus
from batchgen.emulator import EmulatorConfig, Faults, Status, running_emulator
from tests.kit import IMAGE_MODEL, assert_exactly_once, keys_sent_elsewhere, wait_for, write_manifest
from tests.kit_faults import assert_fired
from tests.kit_processes import entry_cmd, exported_csv, job_statuses, run_row, started

IN_FLIGHT = {
    JobStatus.SUBMITTING.value,
    JobStatus.QUEUED.value,
    JobStatus.PROCESSING.value,
    JobStatus.DOWNLOADING.value,
}


def crash_loop(tmp_path: Path, *, prompts: int, repeat: int, kills: int, seed: int, most_requests: int) -> None:
    rng = random.Random(seed)
    prompt_texts = [f"ox number {i}" for i in range(prompts)]
    manifest = write_manifest(tmp_path, prompt_texts, model=IMAGE_MODEL, repeat=repeat, concurrency=8)
    db, out = tmp_path / "state" / "batchgen.db", tmp_path / "out"
    jobs = prompts * repeat
    config = EmulatorConfig(seed=seed, duration_s=0.1, faults=Faults.chaos(seed))
    with running_emulator(config) as emu:
        common = ("--db", db, "--base-url", emu.base_url)
        killed_in_flight = 0
        for attempt in range(kills):
            command = ("run", "--manifest", manifest, "--out", out) if attempt == 0 else ("resume",)
            # a random moment: after a random number of this runner's requests reached the API, plus a jitter
            seen = len(emu.ledger.requests)
            wanted = rng.randint(3, most_requests)
            with started(entry_cmd(*command, *common), key=emu.api_key) as runner:
                wait_for(
                    lambda seen=seen, wanted=wanted: len(emu.ledger.requests) - seen >= wanted,
                    timeout=60,
                    what=f"request {wanted} of runner {attempt}",
                    process=runner,
                )
                time.sleep(rng.uniform(0, 0.05))
                runner.kill()
                runner.communicate(timeout=10)
            assert runner.returncode == -9, f"runner {attempt} ended on its own before its kill"
            killed_in_flight += bool(IN_FLIGHT & set(job_statuses(db)))

        with started(entry_cmd("resume", *common), key=emu.api_key) as final:
            try:
                _, stderr = final.communicate(timeout=60 + jobs / 5)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the last resume did not finish: {job_statuses(db)}") from None
        assert final.returncode in (0, 1), stderr

        # the kills hit work in flight (else this test proves nothing), and the last runner released the run
        assert killed_in_flight >= 1
        assert run_row(db)["owner"] is None
        rows = assert_exactly_once(emu, db, allow_failed=True)
        assert len(rows) == jobs
        for row in rows:
            if row.status is JobStatus.FAILED:  # only the emulator's own failures (fail_rate), nothing of ours
                generation = emu.state.get(row.generation_id or "")
                assert generation is not None and generation.status is Status.FAILED, (row.job_key, row.error)
        assert not keys_sent_elsewhere(emu)
        # chaos met the runners: these knobs act on every generation or on its first request, whenever the kills land
        assert_fired(
            emu, "sse_drop_rate", "sse_late_s", "sse_foreign_rate", "lost_reply_rate", "download_429_rate",
            "truncated_download_rate", "fail_rate", "result_host",
        )  # fmt: skip

        # the export, as a user reads it, says the same
        served = emu.ledger.served_sha256
        exported = exported_csv(db, tmp_path / "export.csv")
        assert len(exported) == jobs and len({r["job_key"] for r in exported}) == jobs
        for record in exported:
            if record["status"] == "succeeded":
                data = Path(record["output_path"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == record["sha256"] == served[record["generation_id"]]
        # killed downloads leave no partial files behind once their job is done
        assert not list(out.glob(".*.part"))


def test_crash_loop_quick(tmp_path: Path) -> None:
    crash_loop(tmp_path, prompts=20, repeat=3, kills=3, seed=11, most_requests=25)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_crash_loop_long(tmp_path: Path) -> None:
    crash_loop(tmp_path, prompts=100, repeat=3, kills=10, seed=12, most_requests=40)
