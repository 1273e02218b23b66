"""Hold/release: generations stay `processing` until the test lets them go, whatever the clock says."""

from __future__ import annotations

import threading

import httpx
import pytest

from batchgen.emulator import EmulatorConfig, RunningEmulator, running_emulator
from tests.kit import wait_for

from .clients import FLUX, SORA, authed, wait_terminal


def _held(n: int, emu: RunningEmulator) -> list[str]:
    """Wait until exactly `n` generations are held; their ids."""
    ids: list[str] = wait_for(lambda: emu.held if len(emu.held) == n else None)
    return ids


def _status(c: httpx.Client, gid: str) -> str:
    status: str = c.get(f"/api/ai/queue/{gid}").json()["status"]
    return status


def test_held_generations_stay_processing_until_released_one_by_one_then_all() -> None:
    with running_emulator(EmulatorConfig(seed=1, duration_s=0, hold=True)) as emu, authed(emu) as c:
        ids = [
            g["generation_id"]
            for g in c.post("/api/ai/queue", json={**FLUX, "num_generations": 3}).json()["generations"]
        ]
        held = _held(3, emu)
        assert sorted(held) == sorted(ids)
        assert sorted(f.subject for f in emu.ledger.fired("hold")) == sorted(ids)
        for gid in ids:
            row = c.get(f"/api/ai/queue/{gid}").json()
            assert (row["status"], row["completed_at"]) == ("processing", None) and row["started_at"] is not None
        assert emu.ledger.terminal_times == {}

        (first,) = emu.release(1)
        assert first == held[0]  # oldest first
        assert wait_terminal(c, first)["status"] == "succeeded"
        rest = [g for g in held if g != first]
        assert emu.held == rest and [_status(c, g) for g in rest] == ["processing", "processing"]

        assert sorted(emu.release()) == sorted(rest)
        for gid in rest:
            assert wait_terminal(c, gid)["status"] == "succeeded"
        # the gate stays open: a later generation is not held
        later = c.post("/api/ai/queue", json={**FLUX, "prompt": "later"}).json()["generations"][0]["generation_id"]
        assert wait_terminal(c, later)["status"] == "succeeded"
        assert later not in {f.subject for f in emu.ledger.fired("hold")} and emu.held == []


def test_releases_given_before_anything_is_held_go_to_the_next_arrivals() -> None:
    with running_emulator(EmulatorConfig(seed=2, duration_s=0, hold=True)) as emu, authed(emu) as c:
        assert emu.release(2) == []
        ids = [
            g["generation_id"]
            for g in c.post("/api/ai/queue", json={**FLUX, "num_generations": 3}).json()["generations"]
        ]
        (still_held,) = _held(1, emu)
        done = [g for g in ids if g != still_held]
        assert [wait_terminal(c, g)["status"] for g in done] == ["succeeded", "succeeded"]
        assert _status(c, still_held) == "processing"
        assert [f.subject for f in emu.ledger.fired("hold")] == [still_held]
        emu.release()
        assert wait_terminal(c, still_held)["status"] == "succeeded"


def test_a_generation_cancelled_while_held_is_let_go_without_using_a_release() -> None:
    with running_emulator(EmulatorConfig(seed=3, duration_s=0, hold=True)) as emu, authed(emu) as c:
        c.post("/api/ai/queue", json={**FLUX, "num_generations": 2})
        cancelled, kept = _held(2, emu)
        assert c.delete(f"/api/ai/queue/{cancelled}").status_code == 200
        assert emu.held == [kept]
        assert sorted(emu.release(1)) == sorted([cancelled, kept])
        assert wait_terminal(c, kept)["status"] == "succeeded"
        assert _status(c, cancelled) == "cancelled"
        assert emu.held == []


def test_a_start_time_failure_is_held_too_and_reported_on_release() -> None:
    with running_emulator(EmulatorConfig(seed=4, duration_s=0, hold=True)) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json={**SORA, "seconds": "7"}).json()["generations"][0]["generation_id"]
        assert _held(1, emu) == [gid]
        assert _status(c, gid) == "processing"
        emu.release()
        row = wait_terminal(c, gid)
        assert row["status"] == "failed" and "422 - Value error" in row["error_message"]


def test_hold_again_after_a_release_all() -> None:
    with running_emulator(EmulatorConfig(seed=5, duration_s=0)) as emu, authed(emu) as c:
        first = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        assert wait_terminal(c, first)["status"] == "succeeded"
        assert emu.ledger.fired("hold") == []
        emu.hold()
        gid = c.post("/api/ai/queue", json={**FLUX, "prompt": "held"}).json()["generations"][0]["generation_id"]
        assert _held(1, emu) == [gid]
        emu.release()
        assert wait_terminal(c, gid)["status"] == "succeeded"


def test_a_sync_request_waits_for_its_release() -> None:
    with running_emulator(EmulatorConfig(seed=6, duration_s=0, hold=True)) as emu:
        replies: list[httpx.Response] = []

        def post() -> None:
            with authed(emu) as c:
                replies.append(c.post("/api/ai/images/generate", json=FLUX))

        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        try:
            _held(1, emu)
            assert replies == []  # the connection is still open
        finally:
            emu.release()
            thread.join(10.0)
        assert [r.status_code for r in replies] == [200]
        assert replies[0].json()["images"][0]["url"]


def test_release_refuses_a_negative_count() -> None:
    with running_emulator(EmulatorConfig(hold=True)) as emu, pytest.raises(ValueError):
        emu.release(-1)
