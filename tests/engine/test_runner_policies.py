"""Money and control: credits, budgets, retry of failures, cancel; over loopback against the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.core.jobs import JobStatus
from batchgen.emulator import Account, EmulatorConfig, Faults, running_emulator
from batchgen.engine.cancel import cancel_run
from batchgen.engine.client import RetryPolicy
from batchgen.engine.store import Store
from batchgen.errors import BudgetError
from tests.kit import FAST, FAST_RETRY, assert_exactly_once, interrupt_when, job_rows, run_against, write_manifest
from tests.kit_faults import assert_fired

pytestmark = pytest.mark.timeout(60)


async def test_running_out_of_credits_stops_submitting_and_says_so(tmp_path: Path) -> None:
    # sora-2-pro 4 s at the emulator's placeholder $0.30/s is $1.20 a job: $3 pays for two, not three
    manifest = write_manifest(tmp_path, 6)
    emulator = EmulatorConfig(seed=3, duration_s=0.05, keys={"k": Account("u", credits_usd=3.0)})
    with running_emulator(emulator) as emu:
        summary = await run_against(emu, manifest, tmp_path, options={"concurrency": 1})
        created = len(emu.ledger.created_ids)
    assert summary.exit_code == 1
    assert summary.stopped_reason and "credits" in summary.stopped_reason
    rows = job_rows(tmp_path / "state" / "batchgen.db")
    pending = [r for r in rows if r.status is JobStatus.PENDING]
    assert pending, "jobs that could not be paid for stay pending for a later resume"
    assert created < len(rows)


async def test_max_cost_stops_submitting_before_the_budget_is_passed(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 5)  # 5 x $1.20 = $6.00 estimated
    with running_emulator(EmulatorConfig(seed=3, duration_s=0.05)) as emu:
        with pytest.raises(BudgetError):
            await run_against(emu, manifest, tmp_path, max_cost=2.5)
        assert emu.ledger.enqueues == [], "a plan over budget is refused before anything is sent"


async def test_retry_failed_resubmits_only_failed_jobs(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 8)
    with running_emulator(EmulatorConfig(seed=5, duration_s=0.05, faults=Faults(fail_rate=0.4))) as emu:
        first = await run_against(emu, manifest, tmp_path)
        failed = [r.job_key for r in job_rows(tmp_path / "state" / "batchgen.db") if r.status is JobStatus.FAILED]
        assert first.exit_code == 1 and failed
        assert_fired(emu, "fail_rate")
        created_before = len(emu.ledger.created_ids)
        await run_against(emu, manifest, tmp_path, retry_failed=True)
        # exactly one new generation per failed job, none for the ones that had succeeded
        assert len(emu.ledger.created_ids) - created_before == len(failed)


async def test_cancel_stops_in_flight_generations_remotely(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 4)
    db = tmp_path / "state" / "batchgen.db"
    with running_emulator(EmulatorConfig(seed=5, duration_s=30.0)) as emu:
        # what Ctrl-C does: the runner stops, the generations keep running
        await interrupt_when(lambda: run_against(emu, manifest, tmp_path), lambda: len(emu.ledger.created_ids) >= 4)
        # whether or not the runner had recorded every generation id, cancel finds and stops all four
        store = Store.open(db)
        try:
            done = await cancel_run(store, store.get_run(None), emu.base_url, emu.api_key)
        finally:
            store.close()
        assert done.remote == 4 and done.local == 4
        states = {emu.state.get(g).status.value for g in emu.ledger.created_ids}  # type: ignore[union-attr]
    assert states == {"cancelled"}
    assert {r.status for r in job_rows(db)} == {JobStatus.CANCELLED}


async def test_cancel_also_stops_generations_whose_enqueue_reply_was_lost(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 3)
    db = tmp_path / "state" / "batchgen.db"
    with running_emulator(EmulatorConfig(seed=5, duration_s=30.0, faults=Faults(lost_reply_rate=1.0))) as emu:
        # the runner waits long before reconciling, so it is stopped while its jobs are still `submitting`
        await interrupt_when(
            lambda: run_against(emu, manifest, tmp_path, options={"reconcile_grace": 30.0}),
            lambda: len(emu.ledger.created_ids) >= 3,
        )
        assert_fired(emu, "lost_reply_rate")
        assert {r.status for r in job_rows(db)} == {JobStatus.SUBMITTING}
        store = Store.open(db)
        try:
            done = await cancel_run(store, store.get_run(None), emu.base_url, emu.api_key)
        finally:
            store.close()
        states = {emu.state.get(g).status.value for g in emu.ledger.created_ids}  # type: ignore[union-attr]
    assert done.remote == 3 and states == {"cancelled"}
    assert {r.generation_id for r in job_rows(db)} == set(emu.ledger.created_ids)


async def test_an_interrupted_run_resumes_without_paying_twice(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 6)
    db = tmp_path / "state" / "batchgen.db"
    with running_emulator(EmulatorConfig(seed=9, duration_s=0.5)) as emu:
        await interrupt_when(lambda: run_against(emu, manifest, tmp_path), lambda: len(emu.ledger.created_ids) >= 3)
        summary = await run_against(emu, manifest, tmp_path)
        assert summary.exit_code == 0
        assert_exactly_once(emu, db)


async def test_an_undecidable_enqueue_is_marked_unknown_frees_its_slot_and_is_reconciled_again_on_resume(
    tmp_path: Path,
) -> None:
    from batchgen.api import resume_async

    # every enqueue reply is lost and most queue reads come back malformed; the first run retries no read and
    # reconciles once, so a malformed read leaves its enqueue undecidable (whichever reads the timing makes bad)
    faults = Faults(lost_reply_rate=1.0, malformed_json_rate=0.6)
    manifest = write_manifest(tmp_path, 8)
    db = tmp_path / "state" / "batchgen.db"
    with running_emulator(EmulatorConfig(seed=11, duration_s=0.05, faults=faults)) as emu:
        summary = await run_against(
            emu, manifest, tmp_path, options={"reconcile_tries": 1, "concurrency": 2},
            retry=RetryPolicy(attempts=1, initial=0, maximum=0),
        )  # fmt: skip
        unknown = [r for r in job_rows(db) if r.status is JobStatus.UNKNOWN]
        # concurrency 2: had an unknown job kept its slot, the run would have stalled after two of them
        assert len(unknown) > 2, "fewer undecidable enqueues than slots: the slots' release is not shown"
        assert summary.exit_code == 1
        assert_fired(emu, "lost_reply_rate", "malformed_json_rate")
        sent_before = len(emu.ledger.enqueues)
        # a plain resume reconciles them again (the lost replies did create their generations): they are adopted,
        # never sent again
        resumed = await resume_async(db=db, base_url=emu.base_url, api_key=emu.api_key, retry=FAST_RETRY, **FAST)
        assert len(emu.ledger.enqueues) == sent_before
        rows = job_rows(db)
        assert not [r for r in rows if r.status is JobStatus.UNKNOWN]
        assert resumed.exit_code == 0
        assert len(emu.ledger.created_ids) == len(rows), "one generation per job: nothing was paid twice"
        assert {r.generation_id for r in rows} == set(emu.ledger.created_ids)


async def test_jobs_removed_from_an_edited_manifest_are_not_sent(tmp_path: Path) -> None:
    db = tmp_path / "state" / "batchgen.db"
    manifest = write_manifest(tmp_path, 4)
    # an account with no credits: every job stays pending
    with running_emulator(EmulatorConfig(seed=2, duration_s=0.05, keys={"k": Account("u", credits_usd=0.0)})) as emu:
        first = await run_against(emu, manifest, tmp_path)
    assert first.exit_code == 1 and {r.status for r in job_rows(db)} == {JobStatus.PENDING}
    write_manifest(tmp_path, 2)  # the user drops two prompts
    with running_emulator(EmulatorConfig(seed=2, duration_s=0.05)) as emu:
        second = await run_against(emu, manifest, tmp_path)
        assert len(emu.ledger.created_ids) == 2
    assert second.retired_jobs == 2
    assert second.exit_code == 0, "every job the manifest still asks for succeeded"
    statuses = sorted(r.status.value for r in job_rows(db))
    assert statuses == ["cancelled", "cancelled", "succeeded", "succeeded"]


async def test_an_interrupted_emulated_run_continues_on_a_fresh_emulator(tmp_path: Path) -> None:
    from batchgen.api import resume_async, run_async
    from batchgen.errors import StateError

    manifest = write_manifest(tmp_path, 6)
    db = tmp_path / "state" / "batchgen.db"
    kwargs = {"db": db, "out": tmp_path / "out", "emulate": True, "retry": FAST_RETRY, **FAST}

    def sent() -> bool:
        try:
            return any(r.generation_id for r in job_rows(db))
        except StateError:  # the run is not in the database yet
            return False

    # Ctrl-C: the emulator, and every generation it held, is gone
    await interrupt_when(lambda: run_async(manifest, time_scale=0.01, **kwargs), sent)  # type: ignore[arg-type]
    with pytest.raises(StateError, match="--emulate"):
        await resume_async(db=db)
    again = await run_async(manifest, time_scale=0.0005, **kwargs)  # type: ignore[arg-type]
    assert again.exit_code == 0 and again.counts == {JobStatus.SUCCEEDED: 6}
