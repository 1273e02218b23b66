"""The runner against the emulator over real loopback HTTP: exactly once, under every fault."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import anyio
import pytest

from batchgen.emulator import EmulatorConfig, Faults, running_emulator
from batchgen.errors import AuthError
from tests.kit import assert_exactly_once, keys_sent_elsewhere, run_against, wait_for_async, write_manifest
from tests.kit_faults import assert_fired

pytestmark = pytest.mark.timeout(60)


def config(faults: Faults | None = None, **kw: object) -> EmulatorConfig:
    return EmulatorConfig(seed=7, time_scale=0.0002, faults=faults or Faults(), **kw)  # type: ignore[arg-type]


async def test_every_job_succeeds_once_and_files_match(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 8)
    with running_emulator(config()) as emu:
        summary = await run_against(emu, manifest, tmp_path)
        rows = assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
    assert summary.exit_code == 0 and len(rows) == 8
    assert summary.csv_path is not None and summary.csv_path.is_file()
    # SSE mode: one enqueue and one download per job, plus the start-up access check and a few list calls
    assert summary.requests <= 2 * 8 + 4


async def test_a_run_larger_than_a_page_is_held_a_page_at_a_time(tmp_path: Path) -> None:
    # a runner holds (in the database, and in memory) a page of the run, never the whole of it: a million-job run
    # costs it what a thousand-job run does
    manifest = write_manifest(tmp_path, 40, concurrency=2)
    db = tmp_path / "state" / "batchgen.db"
    held: list[int] = []
    with running_emulator(config(hold=True)) as emu:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_against(emu, manifest, tmp_path, options={"claim_page": 8}))
            await wait_for_async(lambda: len(emu.held) == 2, what="two generations running")
            with contextlib.closing(sqlite3.connect(db)) as con:
                held.append(con.execute("SELECT count(*) FROM jobs WHERE runner_id IS NOT NULL").fetchone()[0])
            emu.release()
        rows = assert_exactly_once(emu, db)
    assert len(rows) == 40
    assert 2 <= held[0] <= 8, f"the runner held {held[0]} jobs with a page of 8"


async def test_running_again_redoes_nothing_and_adds_only_new_jobs(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 3)
    with running_emulator(config()) as emu:
        await run_against(emu, manifest, tmp_path)
        again = await run_against(emu, manifest, tmp_path)
        assert again.new_jobs == 0 and len(emu.ledger.created_ids) == 3
        write_manifest(tmp_path, 4)
        more = await run_against(emu, manifest, tmp_path)
        assert more.new_jobs == 1
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")


async def test_repeats_share_one_enqueue(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 2, repeat=4)
    with running_emulator(config()) as emu:
        await run_against(emu, manifest, tmp_path)
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
        enqueues = [e for e in emu.ledger.enqueues if e.generation_ids]
    assert len(enqueues) == 2 and all(e.body.get("num_generations") == 4 for e in enqueues)


async def test_wrong_key_exits_before_enqueueing_anything(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 2)
    with running_emulator(config()) as emu:
        with pytest.raises(AuthError, match="OXEN_API_KEY"):
            await run_against(emu, manifest, tmp_path, api_key="wrong-key")
        assert emu.ledger.enqueues == []


async def test_poll_only_mode_finishes_without_the_stream(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 5)
    with running_emulator(config()) as emu:
        summary = await run_against(emu, manifest, tmp_path, poll_only=True)
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
        assert emu.ledger.stream_connections == 0
    assert summary.exit_code == 0


KNOBS = {
    "dropped events": Faults(sse_drop_rate=0.5),
    "duplicated events": Faults(sse_duplicate_rate=0.5),
    "late events": Faults(sse_late_s=0.3),
    "early events": Faults(sse_early_rate=0.5),
    "disconnects": Faults(sse_disconnect_after_events=2),
    "foreign and noise events": Faults(sse_foreign_rate=0.5, sse_noise_rate=0.5, sse_garbage_rate=0.3),
    "enqueue 5xx": Faults(enqueue_5xx_rate=0.4),
    "enqueue 429 with Retry-After": Faults(enqueue_429_rate=0.4, retry_after=0.05),
    "enqueue 429 without Retry-After": Faults(enqueue_429_rate=0.4),
    "status 5xx and 429": Faults(status_5xx_rate=0.4, status_429_rate=0.3, sse_drop_rate=1.0),
    "download 5xx and 429": Faults(download_5xx_rate=0.4, download_429_rate=0.3),
    "lost enqueue replies": Faults(lost_reply_rate=0.4),
    "legacy API": Faults(legacy_mode=True, sse_drop_rate=0.5),
    "bad answers": Faults(
        malformed_json_rate=0.2,
        html_error_rate=0.2,
        unknown_status_rate=0.2,
        wrong_content_type_rate=0.2,
        truncated_download_rate=0.3,
        sse_drop_rate=0.5,
    ),
    "results on another host": Faults(result_host="localhost"),
    "everything at once": Faults.chaos(),
}
# At chaos rates ten jobs meet only some faults; with seed 7 these always fire (their stable ids do not depend on
# timing). Every other case proves every knob it turns on.
FIRED = {
    "everything at once": (
        "sse_duplicate_rate", "sse_late_s", "sse_noise_rate", "enqueue_429_rate", "download_429_rate",
        "lost_reply_rate", "fail_rate", "result_host",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(KNOBS))
async def test_exactly_once_under_fault(tmp_path: Path, case: str) -> None:
    faults = KNOBS[case]
    manifest = write_manifest(tmp_path, 10)
    with running_emulator(config(faults)) as emu:
        summary = await run_against(emu, manifest, tmp_path)
        assert_fired(emu, *FIRED.get(case, ()))
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db", allow_failed=faults.fail_rate > 0)
        assert not keys_sent_elsewhere(emu), "the key travelled to a host other than the API's"
    assert summary.exit_code in (0, 1)


@pytest.mark.parametrize("case", ["everything at once", "lost enqueue replies"])
async def test_exactly_once_under_fault_on_postgres(tmp_path: Path, postgres_url: str, case: str) -> None:
    # the same store code on the other back end: a run, its reconciliation of lost replies, the ledger
    faults = KNOBS[case]
    with running_emulator(config(faults)) as emu:
        summary = await run_against(emu, write_manifest(tmp_path, 10), tmp_path, db=postgres_url)
        assert_fired(emu, *FIRED.get(case, ("lost_reply_rate",)))
        assert_exactly_once(emu, postgres_url, allow_failed=faults.fail_rate > 0)
    assert summary.exit_code in (0, 1)


async def test_stuck_generations_time_out_are_cancelled_and_the_run_ends(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 6)
    with running_emulator(config(Faults(stuck_rate=0.5))) as emu:
        summary = await run_against(emu, manifest, tmp_path, options={"job_timeout": 1.0})
        assert_fired(emu, "stuck_rate")
        rows = assert_exactly_once(emu, tmp_path / "state" / "batchgen.db", allow_failed=True)
        timed_out = [r for r in rows if r.error_class == "timeout"]
        assert timed_out, "the seed should make some generation stuck"
        for row in timed_out:
            remote = emu.state.get(row.generation_id or "")
            assert remote is not None and remote.status.value == "cancelled"
    assert summary.exit_code == 1


async def test_submitting_waits_while_paid_results_wait_for_their_download(tmp_path: Path) -> None:
    """Downloads slower than the generations: past `download_backlog` paid results waiting, nothing more is sent
    until one is fetched (paid work does not pile up behind a slow link, its URLs expiring)."""
    backlog, concurrency = 2, 3
    manifest = write_manifest(tmp_path, 10)
    faults = Faults(result_size_bytes=40_000, download_bandwidth_bps=100_000)  # 0.4 s a file, one at a time
    options = {"concurrency": concurrency, "download_concurrency": 1, "download_backlog": backlog}
    with running_emulator(EmulatorConfig(seed=7, duration_s=0.0, faults=faults)) as emu:
        summary = await run_against(emu, manifest, tmp_path, options=options)
        assert_fired(emu, "download_bandwidth_bps")
        # downloads go one at a time: the second starts once the first is fetched. Until the first is recorded
        # the runner can have sent at most backlog - 1 jobs now downloading plus the jobs in flight (a batch is
        # sent only while the backlog has room, looked at again after its slots were taken), then one more
        second_download = sorted(d.time for d in emu.ledger.downloads)[1]
        sent_before = sum(len(e.generation_ids) for e in emu.ledger.enqueues if e.time < second_download)
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
    assert summary.exit_code == 0
    assert sent_before <= backlog + concurrency, f"{sent_before} jobs sent before the first download was fetched"
