"""Knobs about the server itself and its lists: its clock, its latency, what lists leave out, and namespaces."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from batchgen.emulator import Account, EmulatorConfig, Faults, RunningEmulator, running_emulator
from tests.kit import wait_for

from .clients import FLUX, authed, wait_terminal

SLACK_S = 60.0  # generous: these tests check a shift of hours, not the speed of the machine


def _date(reply: httpx.Response) -> float:
    """The reply's one Date header, as unix seconds."""
    (value,) = reply.headers.get_list("date")
    assert value.endswith(" GMT") and len(value) == len("Sun, 06 Nov 1994 08:49:37 GMT"), value
    return parsedate_to_datetime(value).timestamp()


def test_every_reply_carries_one_date_header_from_the_server_clock() -> None:
    with running_emulator(EmulatorConfig(seed=1, duration_s=0)) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        url = wait_terminal(c, gid)["result_url"]
        replies = [
            c.get(f"/api/ai/queue/{gid}"),
            c.get("/api/ai/queue/not-a-uuid"),  # errors too
            httpx.get(emu.url("/api/ai/models")),
            httpx.get(url),
        ]
        for reply in replies:
            assert abs(_date(reply) - time.time()) < SLACK_S
        assert emu.ledger.fired("clock_offset_s") == []  # no offset, nothing to record


def test_clock_offset_shifts_every_timestamp_and_the_date_header() -> None:
    offset = 3 * 3600.0
    config = EmulatorConfig(seed=2, duration_s=0, faults=Faults(clock_offset_s=offset))
    with running_emulator(config) as emu, authed(emu) as c:
        enqueued = c.post("/api/ai/queue", json=FLUX)
        gid = enqueued.json()["generations"][0]["generation_id"]
        row = wait_terminal(c, gid)
        full = c.get(f"/api/ai/generations/{gid}").json()["generation"]
        (listed,) = c.get("/api/ai/generations").json()["generations"]
        sync = c.post("/api/ai/images/generate", json={**FLUX, "prompt": "sync"}).json()
        skewed_now = time.time() + offset
        for shown in (row, full, listed):
            for key in ("enqueued_at", "started_at", "completed_at"):
                assert abs(shown[key] - skewed_now) < SLACK_S, (key, shown[key])
        assert abs(sync["created"] - skewed_now) < SLACK_S
        assert abs(_date(enqueued) - skewed_now) < SLACK_S
        # the ledger keeps the true time, and says which replies carried the shifted Date
        assert abs(emu.ledger.terminal_times[gid] - time.time()) < SLACK_S
        fired = emu.ledger.fired("clock_offset_s")
        assert {f.subject for f in fired} >= {"/api/ai/queue", f"/api/ai/queue/{gid}", "/api/ai/generations"}
        assert enqueued.headers["date"] in {f.detail for f in fired}


def test_latency_delays_every_api_ai_request_and_nothing_else() -> None:
    latency = 0.3
    config = EmulatorConfig(seed=3, duration_s=0, faults=Faults(latency_s=latency))
    with running_emulator(config) as emu, authed(emu) as c:
        begun = time.monotonic()
        gid = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        assert time.monotonic() - begun >= latency
        url = wait_terminal(c, gid)["result_url"]
        assert httpx.get(url).status_code == 200  # result files are not on /api/ai/
        begun = time.monotonic()
        assert httpx.get(emu.url("/api/ai/models")).status_code == 200
        assert time.monotonic() - begun >= latency
        fired = emu.ledger.fired("latency_s")

        def ai_requests() -> list[str]:
            return [r.path for r in emu.ledger.requests if r.path.startswith("/api/ai/")]

        # a request is logged just after its reply has gone: the last one may not be there yet
        wait_for(lambda: len(ai_requests()) == len(fired), what="the request log to catch up")
        assert [f.subject for f in fired] == ai_requests() and {f.detail for f in fired} == {"0.3"}
        assert not any(f.subject.startswith("/api/repos/") for f in fired)


def _ids(reply: httpx.Response) -> list[str]:
    return [g["generation_id"] for g in reply.json()["generations"]]


def _succeeded(emu: RunningEmulator, ids: list[str]) -> bool:
    """Whether every row succeeded (read from the state: in legacy mode the status endpoint 404s then)."""
    rows = [emu.state.get(gid) for gid in ids]
    return all(row is not None and row.status == "succeeded" for row in rows)


def test_finished_rows_missing_from_the_list_are_still_in_the_history() -> None:
    config = EmulatorConfig(seed=4, duration_s=0, hold=True, faults=Faults(finished_missing_from_list=True))
    with running_emulator(config) as emu, authed(emu) as c:
        ok = _ids(c.post("/api/ai/queue", json=FLUX))[0]
        bad = _ids(c.post("/api/ai/queue", json={**FLUX, "prompt": "__fail__"}))[0]
        gone = _ids(c.post("/api/ai/queue", json={**FLUX, "prompt": "cancel me"}))[0]
        wait_for(lambda: len(emu.held) == 3)
        # active rows are listed as usual
        assert sorted(_ids(c.get("/api/ai/queue"))) == sorted([ok, bad, gone])
        assert sorted(_ids(c.get("/api/ai/queue", params={"status": "processing"}))) == sorted([ok, bad, gone])
        c.delete(f"/api/ai/queue/{gone}")
        emu.release()
        outcomes = {gid: wait_terminal(c, gid)["status"] for gid in (ok, bad, gone)}
        assert outcomes == {ok: "succeeded", bad: "failed", gone: "cancelled"}
        for status in ("succeeded", "failed", "cancelled"):
            listed = c.get("/api/ai/queue", params={"status": status}).json()
            assert (listed["count"], listed["generations"]) == (0, [])
        history = {g["generation_id"]: g["status"] for g in c.get("/api/ai/generations").json()["generations"]}
        assert history == outcomes
        fired = emu.ledger.fired("finished_missing_from_list")
        assert [(f.subject, f.detail) for f in fired] == [
            ("status=succeeded", "1"),
            ("status=failed", "1"),
            ("status=cancelled", "1"),
        ]


def test_legacy_mode_leaves_finished_rows_out_of_the_list_too() -> None:
    for legacy, listed in ((False, 1), (True, 0)):
        config = EmulatorConfig(seed=5, duration_s=0, faults=Faults(legacy_mode=legacy))
        with running_emulator(config) as emu, authed(emu) as c:
            gid = _ids(c.post("/api/ai/queue", json=FLUX))[0]
            wait_for(lambda: _succeeded(emu, [gid]))  # noqa: B023
            assert c.get("/api/ai/queue", params={"status": "succeeded"}).json()["count"] == listed
            assert _ids(c.get("/api/ai/generations")) == [gid]
            assert len(emu.ledger.fired("finished_missing_from_list")) == 1 - listed


@pytest.mark.parametrize("legacy", [False, True])
def test_a_lost_reply_still_creates_every_row_in_legacy_mode_too(legacy: bool) -> None:
    faults = Faults(lost_reply_rate=1.0, legacy_mode=legacy)
    with running_emulator(EmulatorConfig(seed=6, duration_s=0, hold=True, faults=faults)) as emu, authed(emu) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.post("/api/ai/queue", json={**FLUX, "num_generations": 4})
        (record,) = emu.ledger.enqueues
        assert (record.replied, record.status, len(record.generation_ids)) == (False, 0, 4)
        assert emu.ledger.requests[-1].status == 0
        ids = record.generation_ids
        # while they run, the client finds them the E12 way: by listing the model's active rows
        wait_for(lambda: len(emu.held) == 4)
        assert sorted(_ids(c.get("/api/ai/queue", params={"model": FLUX["model"]}))) == sorted(ids)
        assert ("model" in c.get(f"/api/ai/queue/{ids[0]}").json()) is legacy
        emu.release()
        wait_for(lambda: _succeeded(emu, ids))
        # once done: legacy rows 404 and leave the list; the history has them either way
        assert [c.get(f"/api/ai/queue/{g}").status_code for g in ids] == [404 if legacy else 200] * 4
        assert len(_ids(c.get("/api/ai/queue", params={"status": "succeeded"}))) == (0 if legacy else 4)
        assert sorted(_ids(c.get("/api/ai/generations"))) == sorted(ids)


def test_org_namespace_rows_are_listed_under_the_org_only_and_are_in_the_users_history() -> None:
    keys = {"k": Account(username="ann", namespaces=("some-org",))}
    with running_emulator(EmulatorConfig(keys=keys, seed=7, duration_s=0, hold=True)) as emu, authed(emu) as c:
        own = _ids(c.post("/api/ai/queue", json=FLUX))[0]
        org = _ids(c.post("/api/ai/queue", json={**FLUX, "prompt": "for the org", "target_namespace": "some-org"}))[0]
        wait_for(lambda: len(emu.held) == 2)
        assert _ids(c.get("/api/ai/queue")) == [own]
        assert _ids(c.get("/api/ai/queue", params={"namespace": "some-org"})) == [org]
        assert _ids(c.get("/api/ai/queue", params={"namespace": "ann"})) == [own]
        assert c.get("/api/ai/queue", params={"namespace": "other-org"}).status_code == 403
        emu.release()
        assert wait_terminal(c, org)["result_url"].split("/api/repos/")[1].startswith("some-org/")
        assert wait_terminal(c, own)["status"] == "succeeded"
        done = {"status": "succeeded"}
        assert _ids(c.get("/api/ai/queue", params=done)) == [own]
        assert _ids(c.get("/api/ai/queue", params={**done, "namespace": "some-org"})) == [org]
        history = {g["generation_id"]: g for g in c.get("/api/ai/generations").json()["generations"]}
        assert sorted(history) == sorted([own, org])
        assert (history[org]["target_namespace"], history[org]["username"]) == ("some-org", "ann")
        assert c.get(f"/api/ai/generations/{org}").json()["generation"]["status"] == "succeeded"
        assert "namespace=some-org" in emu.ledger.list_calls
