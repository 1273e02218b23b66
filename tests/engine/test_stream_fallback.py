"""Never waiting on silence (issue 12): a stream that is connected but delivers nothing (a buffering or gzipping
proxy, emulated by the emulator's proxy knobs) is told apart from a quiet one, the runner polls on its learned
schedule instead, and `status` says so; a paused runner (SIGSTOP, a laptop's sleep) reconnects and polls at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from batchgen.core.jobs import JobStatus
from batchgen.core.progress import Progress
from batchgen.emulator import EmulatorConfig, Faults, RunningEmulator, running_emulator
from batchgen.emulator.state import Status
from batchgen.engine.store import Store
from tests.kit import IMAGE_MODEL, assert_exactly_once, run_against, wait_for, wait_for_async, write_manifest
from tests.kit_faults import assert_fired
from tests.kit_processes import batchgen, entry_cmd, started
from tests.reliability.test_lease_takeover import _pause_outside_a_transaction

JOBS = 8


def status_reads(emu: RunningEmulator) -> int:
    """GET /api/ai/queue/{id}: one job's status read."""
    return sum(1 for r in emu.ledger.requests if r.method == "GET" and r.path.startswith("/api/ai/queue/"))


@pytest.mark.parametrize(
    "faults",
    [
        Faults(sse_buffering="until_close"),
        Faults(sse_buffering="until_close", sse_gzip=True),
        Faults(sse_buffering="bulk", sse_buffer_bytes=4096, sse_gzip=True),
        Faults(sse_gzip=True),  # gzip alone: zlib holds small frames back until its window fills
    ],
    ids=["until-close", "until-close-gzip", "bulk-gzip", "gzip"],
)
async def test_a_stream_that_delivers_nothing_is_polled_around_and_every_job_finishes_once(
    tmp_path: Path, faults: Faults
) -> None:
    modes: list[str] = []
    with running_emulator(EmulatorConfig(seed=5, duration_s=0.05, faults=faults)) as emu:
        summary = await run_against(
            emu,
            write_manifest(tmp_path, JOBS, model=IMAGE_MODEL, concurrency=4),
            tmp_path,
            on_progress=lambda p: modes.append(p.stream),
        )
        rows = assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
        assert_fired(emu, *(k for k in ("sse_buffering", "sse_gzip") if getattr(faults, k) not in ("off", False)))
        reads = status_reads(emu)
    assert summary.exit_code == 0 and len(rows) == JOBS
    assert "live" not in modes, "the stream never delivered, yet it was trusted"
    # each job is read about once when it is due (a few twice while the schedule learns the run's durations)
    assert JOBS <= reads <= 3 * JOBS, reads


async def test_a_direct_stream_stays_live_and_costs_no_polls(tmp_path: Path) -> None:
    modes: list[str] = []
    with running_emulator(EmulatorConfig(seed=5, duration_s=0.05, keepalive_s=0.1)) as emu:
        summary = await run_against(
            emu,
            write_manifest(tmp_path, JOBS, model=IMAGE_MODEL, concurrency=4),
            tmp_path,
            options={"poll_first_after": 30.0},  # the stream proves itself (keep-alives, events) long before
            on_progress=lambda p: modes.append(p.stream),
        )
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
        reads = status_reads(emu)
    assert summary.exit_code == 0
    assert modes and set(modes) <= {"live", "unproven", "connecting"} and modes[-1] == "live"
    assert reads == 0
    assert summary.requests <= 2 * JOBS + 4  # one enqueue and one download per job


async def test_status_says_the_stream_is_buffered_and_why_while_the_run_polls(tmp_path: Path) -> None:
    db = tmp_path / "state" / "batchgen.db"
    seen: list[Progress] = []
    config = EmulatorConfig(seed=5, duration_s=0.05, hold=True, faults=Faults(sse_buffering="until_close"))
    with running_emulator(config) as emu:
        manifest = write_manifest(tmp_path, 2, model=IMAGE_MODEL, concurrency=2)
        async with anyio.create_task_group() as tg:
            # keep-alives every 0.2 s (as this run is told): 0.3 s of a connected stream delivering nothing is enough
            tg.start_soon(
                lambda: run_against(emu, manifest, tmp_path, options={"keepalive_period": 0.2}, on_progress=seen.append)
            )
            await wait_for_async(lambda: len(emu.held) == 2, what="both generations running")

            def noted() -> bool:
                return db.exists() and Store.open(db).get_run("batch").stream_mode == "buffered"

            await wait_for_async(noted, what="the runner noting a buffered stream")
            shown = await anyio.to_thread.run_sync(lambda: batchgen("status", "--db", db, "--json"))
            text = await anyio.to_thread.run_sync(lambda: batchgen("status", "--db", db))
            emu.release()
        assert_fired(emu, "sse_buffering")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["running"] and data["stream"] == "buffered"
    assert "delivered nothing" in data["stream_note"]
    assert "buffered (a proxy holds it back)" in text.stdout
    # once the run is over, nothing claims a stream
    after = json.loads(batchgen("status", "--db", db, "--json").stdout)
    assert after["stream"] is None and after["counts"] == {JobStatus.SUCCEEDED.value: 2}
    assert any("stream buffered: polling" in p.line() for p in seen)


def test_a_paused_runner_reconnects_and_polls_at_once_instead_of_waiting_out_the_silence(tmp_path: Path) -> None:
    # The completion events are lost (as when a laptop's connection died in its sleep) and every other way of
    # hearing about them is minutes away: the safety net (600 s), the schedule's first poll (600 s). Only noticing
    # the pause can finish this run in the time the test gives it.
    db, out = tmp_path / "state" / "batchgen.db", tmp_path / "out"
    manifest = write_manifest(tmp_path, 3, model=IMAGE_MODEL, concurrency=3)
    config = EmulatorConfig(seed=9, duration_s=0.05, hold=True, keepalive_s=0.1, faults=Faults(sse_drop_rate=1.0))
    with running_emulator(config) as emu:
        command = entry_cmd(
            "run", "--manifest", manifest, "--db", db, "--base-url", emu.base_url, "--out", out,
            "--option", "silent_after=600", "--option", "poll_first_after=600", "--option", "keepalive_period=0.2",
            "--option", "pause_after=1.0",
        )  # fmt: skip
        with started(command, key=emu.api_key) as runner:
            wait_for(lambda: len(emu.held) == 3, timeout=30, what="three generations running", process=runner)
            _pause_outside_a_transaction(runner, db)
            paused_at = time.monotonic()
            emu.release()
            wait_for(
                lambda: all(g.status is Status.SUCCEEDED for g in emu.state.all()), timeout=10, what="all finished"
            )
            streams_before = emu.ledger.stream_connections
            time.sleep(max(0.0, 2.0 - (time.monotonic() - paused_at)))  # the pause itself: 2 s, past pause_after
            runner.send_signal(signal.SIGCONT)
            try:
                _, err = runner.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                raise AssertionError("the continued runner waited on silence instead of polling") from None
        assert runner.returncode == 0, err
        assert emu.ledger.stream_connections > streams_before, "the runner did not reconnect after its pause"
        assert_fired(emu, "sse_drop_rate")
        rows = assert_exactly_once(emu, db)
    assert len(rows) == 3
