"""The money ledger: no generation is paid twice and no run passes its budget, under each failure an audit found.

Each test reproduces one finding of the audit against the emulator (over loopback), checks from the emulator's
ledger that its fault fired, and asserts on what the API charged: generations created equal jobs, and the charged
total stays within the budget. Each one failed on the code before the ledger (see the commit that added it).
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from batchgen.api import resume_async
from batchgen.core.jobs import JobStatus
from batchgen.emulator import Account, EmulatorConfig, Faults, RunningEmulator, running_emulator
from batchgen.engine.cancel import cancel_run
from batchgen.engine.store import Store
from tests.kit import (
    FAST,
    FAST_RETRY,
    assert_exactly_once,
    interrupt_when,
    job_rows,
    run_against,
    wait_for_async,
    write_manifest,
)
from tests.kit_faults import assert_fired

SORA_4S = Decimal("1.2")  # the emulator's placeholder price of a 4 s sora-2-pro clip at standard resolution


def charged(emu: RunningEmulator) -> Decimal:
    """What the API charged the account, from the emulator's own rows."""
    return sum((row.cost for row in emu.state.all() if row.cost is not None), Decimal(0))


def lost_replies(emu: RunningEmulator) -> list[str]:
    """Generation ids created by enqueues whose reply never reached the client: proof the fault fired."""
    return [gid for record in emu.ledger.enqueues if not record.replied for gid in record.generation_ids]


# ---- finding 3: two lost num_generations=4 replies must not adopt the same generations ------------------------


async def test_two_lost_batched_replies_of_identical_requests_never_share_a_generation(tmp_path: Path) -> None:
    faults = Faults(lost_reply_rate=1.0)
    with running_emulator(EmulatorConfig(seed=5, duration_s=0.05, faults=faults)) as emu:
        # 8 samples of one request: two enqueues of num_generations=4, both replies lost, reconciled side by side
        summary = await run_against(
            emu,
            write_manifest(tmp_path, ["an ox"], repeat=8),
            tmp_path,
            options={"concurrency": 8, "reconcile_grace": 0.2},
        )
        assert len(lost_replies(emu)) == 8, "both batched replies were lost"
        assert [len(r.generation_ids) for r in emu.ledger.enqueues] == [4, 4]
        rows = assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
    assert summary.exit_code == 0
    assert len({r.generation_id for r in rows}) == 8
    assert len({r.sha256 for r in rows}) == 8, "no file is shared between two jobs"


# ---- finding 4: organisation namespaces -------------------------------------------------------------------------


async def test_a_lost_reply_of_an_organisation_job_is_found_in_its_namespace(tmp_path: Path) -> None:
    keys = {"k": Account("ada", namespaces=("acme",))}
    faults = Faults(lost_reply_rate=1.0)
    with running_emulator(EmulatorConfig(seed=6, duration_s=0.05, keys=keys, faults=faults)) as emu:
        extra = "jobs:\n  - prompt: an org clip\n    target_namespace: acme\n"
        summary = await run_against(emu, write_manifest(tmp_path, ["a user clip"], extra=extra), tmp_path)
        assert len(lost_replies(emu)) == 2
        assert any("namespace=acme" in query for query in emu.ledger.list_calls), "the org's queue was read"
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
    assert summary.exit_code == 0


# ---- finding 5: --retry-failed must not re-adopt the job's own old generation -----------------------------------


async def test_retry_failed_never_adopts_the_jobs_own_old_generation(tmp_path: Path) -> None:
    faults = Faults(lost_reply_rate=1.0, fail_rate=0.5)
    db = tmp_path / "state" / "batchgen.db"
    path = write_manifest(tmp_path, [f"clip {i}" for i in range(8)])
    with running_emulator(EmulatorConfig(seed=7, duration_s=0.05, faults=faults)) as emu:
        await run_against(emu, path, tmp_path)
        first = {r.job_key: r.generation_id for r in job_rows(db) if r.status is JobStatus.FAILED}
        assert first, "the seed should fail some generations"
        assert_fired(emu, "fail_rate", "lost_reply_rate")
        enqueues_before = len(emu.ledger.enqueues)
        await run_against(emu, path, tmp_path, retry_failed=True)
        retried = {r.job_key: r.generation_id for r in job_rows(db) if r.job_key in first}
        new_enqueues = emu.ledger.enqueues[enqueues_before:]
        assert len(new_enqueues) == len(first), "each failed job was sent once more"
        assert all(not record.replied for record in new_enqueues), "the retries' replies were lost too"
        for key, old in first.items():
            assert retried[key] != old, f"job {key} re-adopted its own failed generation {old}"
        assert {retried[k] for k in first} == {g for r in new_enqueues for g in r.generation_ids}


# ---- finding 6: cancel and timeout keep what is paid ------------------------------------------------------------


async def test_a_timed_out_generation_that_succeeded_meanwhile_is_kept_not_failed(tmp_path: Path) -> None:
    # the completion events never arrive and the safety net is far away: the job looks unfinished past its timeout,
    # while the API has finished (and charged) it. DELETE on a finished row answers 200 and does nothing.
    # Timeouts are checked every watchdog tick; no poll comes before the 0.5 s timeout (the safety net waits 6 s, and
    # the unproven stream's first poll 60 s), so the runner cancels both jobs instead of polling them.
    faults = Faults(sse_drop_rate=1.0)
    with running_emulator(EmulatorConfig(seed=8, duration_s=0.05, faults=faults)) as emu:
        summary = await run_against(
            emu,
            write_manifest(tmp_path, ["slow ox 1", "slow ox 2"]),
            tmp_path,
            options={"silent_after": 6.0, "job_timeout": 0.5, "poll_first_after": 60.0},
        )
        assert len(emu.ledger.dropped_events) == 2, "the completion events were dropped"
        assert sum(1 for r in emu.ledger.requests if r.method == "DELETE") == 2, "the timeout cancelled both"
        rows = assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
    assert summary.exit_code == 0 and all(r.status is JobStatus.SUCCEEDED for r in rows)


async def test_cancel_keeps_and_downloads_a_generation_that_already_succeeded(tmp_path: Path) -> None:
    db = tmp_path / "state" / "batchgen.db"
    path = write_manifest(tmp_path, ["ox 1", "ox 2", "ox 3"])
    with running_emulator(EmulatorConfig(seed=9, duration_s=0.05, hold=True)) as emu:
        await interrupt_when(lambda: run_against(emu, path, tmp_path), lambda: len(emu.held) == 3)
        emu.release()  # they finish (and are charged) while nobody listens
        await wait_for_async(lambda: all(row.status.is_terminal for row in emu.state.all()))
        store = Store.open(db, create=False)
        try:
            info = store.get_run(None)
            done = await cancel_run(store, info, emu.base_url, emu.api_key)
        finally:
            store.close()
        assert sum(1 for r in emu.ledger.requests if r.method == "DELETE") == 3
        assert done.kept == 3 and not done.left
        rows = assert_exactly_once(emu, db)
    assert {r.status for r in rows} == {JobStatus.SUCCEEDED}


async def test_a_cancel_that_cannot_land_leaves_the_job_in_flight_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "state" / "batchgen.db"
    path = write_manifest(tmp_path, ["ox 1", "ox 2"])
    config = EmulatorConfig(seed=9, duration_s=0.05, hold=True, faults=Faults(cancel_5xx_rate=1.0))
    with running_emulator(config) as emu:
        await interrupt_when(lambda: run_against(emu, path, tmp_path), lambda: len(emu.held) == 2)
        store = Store.open(db, create=False)
        try:
            done = await cancel_run(store, store.get_run(None), emu.base_url, emu.api_key, retry=FAST_RETRY)
            statuses = {j.status for j in store.load_jobs(store.get_run(None).id, list(JobStatus))}
        finally:
            store.close()
        assert_fired(emu, "cancel_5xx_rate")
        assert done.local == 0 and len(done.left) == 2 and all("could not be cancelled" in x for x in done.left)
        assert statuses <= {JobStatus.QUEUED, JobStatus.PROCESSING}, "a job whose cancel failed is still in flight"
        # the generations run on (they were never cancelled): a resume finishes them, paid once each
        emu.release()
        summary = await resume_async(db=db, base_url=emu.base_url, api_key=emu.api_key, retry=FAST_RETRY, **FAST)
        rows = assert_exactly_once(emu, db)
    assert summary.exit_code == 0 and {r.status for r in rows} == {JobStatus.SUCCEEDED}


# ---- finding 7: the budget is the run's, across edits and resumes -----------------------------------------------


async def test_an_edited_manifest_under_the_same_name_does_not_get_a_fresh_budget(tmp_path: Path) -> None:
    budget = "budget: 5.00\n"  # four 4 s clips at $1.20 fit ($4.80); eight do not
    with running_emulator(EmulatorConfig(seed=10, duration_s=0.05)) as emu:
        first = await run_against(emu, write_manifest(tmp_path, ["a", "b", "c", "d"], extra=budget), tmp_path)
        assert first.exit_code == 0 and charged(emu) == 4 * SORA_4S
        # the user swaps in four new prompts under the same run name and budget: the plan alone fits the budget
        second = await run_against(emu, write_manifest(tmp_path, ["e", "f", "g", "h"], extra=budget), tmp_path)
        assert charged(emu) <= Decimal("5.00"), f"the run spent ${charged(emu)} against a budget of $5.00"
        assert len(emu.ledger.created_ids) == 4
    assert second.exit_code == 1
    assert second.stopped_reason is not None
    for words in ("$5.00", "$4.80 spent", "left"):
        assert words in second.stopped_reason


# ---- finding 8: a client clock minutes off still finds its own generation ---------------------------------------


@pytest.mark.parametrize("offset_s", [-420.0, 420.0])
async def test_a_lost_reply_is_found_whatever_the_clock_skew(tmp_path: Path, offset_s: float) -> None:
    faults = Faults(lost_reply_rate=1.0, clock_offset_s=offset_s)
    with running_emulator(EmulatorConfig(seed=11, duration_s=0.05, faults=faults)) as emu:
        summary = await run_against(emu, write_manifest(tmp_path, ["ox 1", "ox 2", "ox 3"]), tmp_path)
        assert len(lost_replies(emu)) == 3
        assert_fired(emu, "clock_offset_s")
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
    assert summary.exit_code == 0


# ---- finding 9: finished rows that left the list are looked up in the history -----------------------------------


@pytest.mark.parametrize("knob", ["legacy_mode", "finished_missing_from_list"])
async def test_a_lost_reply_of_a_finished_generation_is_found_in_the_history(tmp_path: Path, knob: str) -> None:
    # the generation finishes before the first reconciliation reads the queue, and finished rows are not listed
    faults = Faults(lost_reply_rate=1.0, **{knob: True})  # type: ignore[arg-type]
    with running_emulator(EmulatorConfig(seed=12, duration_s=0.0, faults=faults)) as emu:
        summary = await run_against(
            emu, write_manifest(tmp_path, ["ox 1", "ox 2"]), tmp_path, options={"reconcile_grace": 0.2}
        )
        assert len(lost_replies(emu)) == 2
        assert_fired(emu, knob)
        assert any(r.path == "/api/ai/generations" for r in emu.ledger.requests), "the history was read"
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
    assert summary.exit_code == 0


# ---- the ledger is shown -----------------------------------------------------------------------------------------


async def test_every_generation_is_in_the_ledger_with_its_job_and_status(tmp_path: Path) -> None:
    faults = Faults(lost_reply_rate=0.5)
    db = tmp_path / "state" / "batchgen.db"
    with running_emulator(EmulatorConfig(seed=13, duration_s=0.05, faults=faults)) as emu:
        await run_against(emu, write_manifest(tmp_path, [f"ox {i}" for i in range(6)]), tmp_path)
        assert lost_replies(emu)
        store = Store.open(db, create=False)
        try:
            run = store.get_run(None)
            ledger = store.ledger(run.id)
            money = store.money(run.id)
        finally:
            store.close()
        assert {g.generation_id for g in ledger} == set(emu.ledger.created_ids)
        assert Counter(g.how for g in ledger) == {
            "enqueued": 6 - len(lost_replies(emu)),
            "adopted": len(lost_replies(emu)),
        }
        assert {g.remote_status for g in ledger} == {"succeeded"}
        assert money.spent == pytest.approx(float(charged(emu)))
        assert money.reserved == 0.0 and money.unused == 0


# ---- status and unused show the money --------------------------------------------------------------------------


def test_status_and_unused_name_a_paid_generation_no_job_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from batchgen.cli import app
    from batchgen.core.jobs import JobSpec
    from batchgen.core.lifecycle import JobEvent
    from batchgen.core.remote import RemoteGeneration
    from batchgen.engine.store import NewJob

    db = tmp_path / "state" / "batchgen.db"
    store = Store.open(db)
    try:
        run = store.ensure_run("r", manifest_path="m.yaml", manifest_sha256="0", base_url="http://127.0.0.1:1",
                               out_dir=str(tmp_path / "out"), settings={}, budget=10.0)  # fmt: skip
        lease = store.acquire_run(run.id)
        store.add_jobs(lease, [NewJob(JobSpec("openai-sora-2-pro", {"prompt": "ox"}), estimated_cost=1.2)])
        (job,) = store.claim_jobs(lease, 10)
        store.record_intents(lease, [job])
        store.record_enqueued(lease, [(job, "g-old")])
        store.mark_failed(lease, job, JobEvent.FAILED_REMOTELY, error="boom", error_class="remote")
        store.retry_failed(lease)
        (job,) = store.claim_jobs(lease, 10)
        store.record_intents(lease, [job])
        store.record_enqueued(lease, [(job, "g-new")])
        # the history later says the old generation did succeed after all, and was charged
        store.record_remote_rows(lease, [(RemoteGeneration("g-old", "succeeded"), 1.25)])
        store.release_run(lease)
    finally:
        store.close()
    monkeypatch.setenv("BATCHGEN_DB", str(db))
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["spent"] == 1.25 and data["reserved"] == 1.2 and data["budget"] == 10.0
    assert data["left"] == pytest.approx(10.0 - 1.25 - 1.2)
    table = CliRunner().invoke(app, ["status"], env={"COLUMNS": "200"}).stdout
    assert "spent $1.25 of $10.00 budget ($1.20 reserved, $7.55 left)" in table
    assert [u["generation_id"] for u in data["unused_generations"]] == ["g-old"]
    listed = CliRunner().invoke(app, ["unused"])
    assert listed.exit_code == 0 and "g-old" in listed.stdout and "g-new" not in listed.stdout
    exported = CliRunner().invoke(app, ["export", "-o", str(tmp_path / "r.csv")])
    assert exported.exit_code == 0 and "1 generation(s) are paid for but used by no job" in exported.stderr
    assert "spent $1.25, reserved $1.20 of a $10.00 budget" in exported.stderr
    reported = CliRunner().invoke(app, ["report", "-o", str(tmp_path / "r.html")])
    assert reported.exit_code == 0, reported.output
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "g-old" in html and "paid for but used by no job" in html and "batchgen unused r --download" in html
