"""Out of credits, as the API says it (HTTP 402 at enqueue): submitting stops at once, what is in flight finishes
and is downloaded, the rest waits, and a resume after a top-up finishes the run without paying twice."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from batchgen.api import RunSummary, resume_async
from batchgen.core.jobs import JobStatus
from batchgen.emulator import Account, EmulatorConfig, running_emulator
from tests.kit import FAST, FAST_RETRY, assert_exactly_once, job_rows, run_against, wait_for_async, write_manifest

pytestmark = pytest.mark.timeout(60)


async def test_a_402_stops_submitting_keeps_in_flight_jobs_and_a_resume_after_a_top_up_finishes(
    tmp_path: Path,
) -> None:
    # sora-2-pro 4 s at the emulator's placeholder $0.30/s is $1.20 a job: $3 pays for two of six
    manifest = write_manifest(tmp_path, 6, concurrency=4)
    db = tmp_path / "state" / "batchgen.db"
    config = EmulatorConfig(seed=4, duration_s=0.0, hold=True, keys={"k": Account("u", credits_usd=3.0)})
    with running_emulator(config) as emu:
        outcome: list[RunSummary] = []

        async def run() -> None:
            outcome.append(await run_against(emu, manifest, tmp_path))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            # two generations are in flight (held) when the third enqueue is refused
            await wait_for_async(lambda: any(e.status == 402 for e in emu.ledger.enqueues), what="a 402")
            await wait_for_async(lambda: len(emu.held) == 2, what="two held generations")
            emu.release()
        summary = outcome[0]
        refused = [e for e in emu.ledger.enqueues if e.status == 402]
        assert len(refused) <= 2, "no enqueue after the refusal, beyond those already on their way"
        assert len(emu.ledger.created_ids) == 2

        assert summary.exit_code == 1
        reason = summary.stopped_reason or ""
        assert "ran out of credits" in reason and "You have run out of credits." in reason
        assert "spent $2.40" in reason
        assert "4 job(s) were not sent" in reason
        assert "`batchgen resume batch`" in reason
        rows = job_rows(db)
        assert sorted(r.status.value for r in rows) == ["pending"] * 4 + ["succeeded"] * 2
        outputs = [r.output_path for r in rows if r.status is JobStatus.SUCCEEDED]
        for output in outputs:
            assert output and await anyio.Path(output).is_file(), "in-flight jobs were downloaded"

        emu.state.top_up("u", 10.0)
        resumed = await resume_async(db=db, base_url=emu.base_url, api_key=emu.api_key, retry=FAST_RETRY, **FAST)
        assert resumed.exit_code == 0 and resumed.stopped_reason is None
        assert_exactly_once(emu, db)  # six generations for six jobs: nothing was paid twice
        charged = sum((r.cost for r in emu.state.all() if r.cost is not None), Decimal(0))
        assert charged == Decimal("7.2")
