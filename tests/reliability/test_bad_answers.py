"""Bad answers the fault matrix of tests/engine only samples lightly: each knob at a rate that makes it certain."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batchgen.emulator import EmulatorConfig, Faults, running_emulator
from tests.kit import assert_exactly_once, run_against, write_manifest
from tests.kit_faults import assert_fired, fired

pytestmark = pytest.mark.timeout(60)


async def test_a_cut_off_enqueue_reply_is_reconciled_not_resent(tmp_path: Path) -> None:
    # A 200 whose JSON is cut in half: the generations exist, only their ids are lost. Treating it as "nothing was
    # created" resends the request and pays twice. Half the enqueues here are cut (the list stays readable).
    manifest = write_manifest(tmp_path, 10)
    faults = Faults(malformed_json_rate=0.5)
    with running_emulator(EmulatorConfig(seed=7, time_scale=0.0002, faults=faults)) as emu:
        summary = await run_against(emu, manifest, tmp_path)
        assert_fired(emu, "malformed_json_rate")
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
        assert not emu.ledger.duplicate_bodies()
    assert summary.exit_code == 0


async def test_garbage_and_oversized_sse_lines_do_not_break_the_stream(tmp_path: Path) -> None:
    # every completion comes after a truncated, a 256 KiB, or a meaningless line: the listener must read past them
    # on the same connection, and the runner must learn every result from the stream, not from the safety net
    manifest = write_manifest(tmp_path, 9)
    with running_emulator(EmulatorConfig(seed=5, time_scale=0.0002, faults=Faults(sse_garbage_rate=1.0))) as emu:
        summary = await run_against(emu, manifest, tmp_path, options={"silent_after": 30.0})
        assert_fired(emu, "sse_garbage_rate")
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
        garbage = [e for e in emu.ledger.events if e.event == "garbage"]
        assert len(garbage) == 9 and any(len(e.data) > 200_000 for e in garbage)  # the oversized kind was sent
        assert emu.ledger.stream_connections == 1
        assert emu.ledger.polls == {}
    assert summary.exit_code == 0


async def test_429s_that_shrink_the_limit_below_a_waiting_group_do_not_stall_the_run(tmp_path: Path) -> None:
    # groups of 3 identical requests wait for slots while 429s halve the limit (8 -> 4 -> 2 -> 1): a group that
    # holds 2 slots of a limit of 2 must be sent as it is, not wait for a third slot that can never come
    manifest = write_manifest(tmp_path, 8, repeat=3, concurrency=8)
    faults = Faults(enqueue_429_rate=0.5, retry_after=0.01)
    with running_emulator(EmulatorConfig(seed=3, duration_s=0.2, faults=faults)) as emu:
        with anyio.fail_after(40):
            summary = await run_against(emu, manifest, tmp_path)
        assert fired(emu, "enqueue_429_rate") >= 3, "429s enough to halve the limit from 8 to 1"
        assert_exactly_once(emu, tmp_path / "state" / "batchgen.db")
    assert summary.exit_code == 0
