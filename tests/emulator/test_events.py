"""GET /api/events: the documented wire format, scoping, keep-alives, shutdown, and every SSE fault knob."""

from __future__ import annotations

import json
import threading
import time

import httpx

from batchgen.emulator import EmulatorConfig, Faults, RunningEmulator, running_emulator
from tests.kit import wait_for
from tests.kit_faults import fired

from .clients import FLUX, SORA, StreamTap, authed, wait_terminal


def _config(**faults: object) -> EmulatorConfig:
    return EmulatorConfig(seed=3, time_scale=0.0005, keepalive_s=0.05, faults=Faults(**faults))  # type: ignore[arg-type]


def _enqueue(c: httpx.Client, body: dict[str, object]) -> str:
    gid: str = c.post("/api/ai/queue", json=body).json()["generations"][0]["generation_id"]
    return gid


def test_documented_wire_format_compact_json_and_headers() -> None:
    with running_emulator(_config()) as emu, authed(emu) as c, StreamTap(emu) as tap:
        ok = _enqueue(c, SORA)
        bad = _enqueue(c, {**SORA, "seconds": "5"})
        wait_for(lambda: len(tap.completed()) == 2)
        assert tap.status == 200
        assert tap.headers["content-type"].startswith("text/event-stream")
        assert tap.headers["cache-control"] == "no-cache"
        by_id = {e["generation_id"]: e for e in tap.completed()}
        assert list(by_id[ok]) == ["generation_id", "status", "media_type", "model", "url"]
        assert list(by_id[bad]) == ["generation_id", "status", "media_type", "error"]
        assert by_id[bad]["error"].startswith("Getting model response error: 422 - Value error, ")
        data_lines = [line for line in tap.lines if line.startswith("data: ")]
        for line in data_lines:  # compact JSON, key order kept
            assert line == "data: " + json.dumps(json.loads(line[6:]), separators=(",", ":"))
        assert f'data: {{"generation_id":"{ok}","status":"succeeded","media_type":"video"' in "\n".join(data_lines)
        event_line = tap.lines.index(next(line for line in data_lines if ok in line)) - 1
        assert tap.lines[event_line] == "event: media_generation_completed"
        assert not any(line.startswith(("id:", "retry:")) for line in tap.lines)
        assert "/presigned/" in by_id[ok]["url"] and "?expires=" in by_id[ok]["url"]
        assert httpx.get(by_id[ok]["url"]).status_code == 200


def test_keep_alive_comments_while_idle() -> None:
    with running_emulator(_config()) as emu, StreamTap(emu) as tap:
        wait_for(lambda: tap.lines.count(": keep-alive") >= 2)
        assert tap.frames() == []


def test_user_scoped_and_no_replay_and_no_event_for_cancel() -> None:
    from batchgen.emulator import Account

    keys = {"key-a": Account("alice"), "key-b": Account("bob")}
    config = EmulatorConfig(keys=keys, time_scale=0.0005, keepalive_s=0.05)
    with running_emulator(config) as emu, authed(emu, "key-a") as alice:
        with StreamTap(emu, "key-b") as bob_tap, StreamTap(emu, "key-a") as alice_tap:
            gid = _enqueue(alice, FLUX)
            cancelled = _enqueue(alice, {**SORA, "prompt": "__slow__"})
            alice.delete(f"/api/ai/queue/{cancelled}")
            wait_for(lambda: alice_tap.completed())
            time.sleep(0.3)
            assert [e["generation_id"] for e in alice_tap.completed()] == [gid]
            assert bob_tap.completed() == []
        with StreamTap(emu, "key-a") as late_tap:  # connected after the fact: nothing is replayed
            time.sleep(0.2)
            assert late_tap.completed() == []


def test_wrong_key_on_stream_is_401(emu: RunningEmulator) -> None:
    reply = httpx.get(emu.url("/api/events"), headers={"Authorization": "Bearer wrong"})
    assert reply.status_code == 401
    assert httpx.get(emu.url("/api/events")).status_code == 401


def test_shutdown_ends_open_streams_cleanly() -> None:
    # Shutdown ends each stream as a finished response. Left open, uvicorn would cut it after its grace time (2 s),
    # which the client sees as a broken chunked body: an error, not a clean end.
    ended = threading.Event()
    errors: list[httpx.HTTPError] = []
    with running_emulator(EmulatorConfig()) as emu:  # 15 s keep-alive: only shutdown can end the stream

        def listen() -> None:
            try:
                with authed(emu) as c, c.stream("GET", "/api/events") as reply:
                    for _ in reply.iter_lines():
                        pass
            except httpx.HTTPError as error:
                errors.append(error)
            ended.set()

        threading.Thread(target=listen, daemon=True).start()
        wait_for(lambda: emu.ledger.stream_connections == 1)
    assert ended.wait(10.0), "the stream outlived the emulator"
    assert errors == []


def test_drop_rate_one_sends_nothing_and_ledger_says_so() -> None:
    with running_emulator(_config(sse_drop_rate=1.0)) as emu, authed(emu) as c, StreamTap(emu) as tap:
        gid = _enqueue(c, FLUX)
        wait_terminal(c, gid)
        wait_for(lambda: gid in emu.ledger.dropped_events)
        time.sleep(0.1)
        assert tap.completed() == []
        assert fired(emu, "sse_drop_rate") == 1


def test_duplicate_rate_one_sends_each_event_twice() -> None:
    with running_emulator(_config(sse_duplicate_rate=1.0)) as emu, authed(emu) as c, StreamTap(emu) as tap:
        gid = _enqueue(c, FLUX)
        wait_for(lambda: len(tap.completed()) == 2)
        first, second = tap.completed()
        assert first == second and first["generation_id"] == gid
        assert fired(emu, "sse_duplicate_rate") == 1


def test_late_events_arrive_after_the_rest_row_is_terminal() -> None:
    with running_emulator(_config(sse_late_s=0.4)) as emu, authed(emu) as c, StreamTap(emu) as tap:
        gid = _enqueue(c, FLUX)
        wait_terminal(c, gid)
        assert tap.completed() == []  # REST already says done, the stream not yet
        wait_for(lambda: tap.completed())
        sent = next(e for e in emu.ledger.events if e.generation_id == gid)
        assert sent.time - emu.ledger.terminal_times[gid] >= 0.4
        assert fired(emu, "sse_late_s") == 1


def test_early_event_is_broadcast_before_the_enqueue_reply() -> None:
    with running_emulator(_config(sse_early_rate=1.0)) as emu, authed(emu) as c, StreamTap(emu) as tap:
        reply = c.post("/api/ai/queue", json={**SORA, "num_generations": 2})
        replied_at = time.time()
        ids = [g["generation_id"] for g in reply.json()["generations"]]
        events = [e for e in emu.ledger.events if e.generation_id in ids]
        assert len(events) == 2 and all(e.time < replied_at for e in events)
        assert {e["generation_id"] for e in tap.completed()} == set(ids)  # already read by the client
        assert c.get(f"/api/ai/queue/{ids[0]}").json()["status"] == "succeeded"
        assert fired(emu, "sse_early_rate") == 1  # one enqueue, both of its generations


def test_disconnect_after_events() -> None:
    with running_emulator(_config(sse_disconnect_after_events=2)) as emu, authed(emu) as c, StreamTap(emu) as tap:
        c.post("/api/ai/queue", json={**FLUX, "num_generations": 3})
        assert tap.ended.wait(10.0)
        assert tap.error is None  # a clean end of stream, not an error
        assert len(tap.completed()) == 2
        time.sleep(0.3)
        assert all(e.stream == 1 for e in emu.ledger.events)
        assert fired(emu, "sse_disconnect_after_events") == 1


def test_disconnect_after_seconds() -> None:
    with running_emulator(_config(sse_disconnect_after_s=0.3)) as emu:
        started = time.monotonic()  # before the stream opens, so the span below is never shorter than its life
        with StreamTap(emu) as tap:
            assert tap.ended.wait(10.0), "the stream was not closed"  # keep-alives alone would keep it open
            assert time.monotonic() - started >= 0.3
            assert tap.error is None
        with StreamTap(emu) as again:  # a client reconnects, as the runner does: the ledger's only trace of the cut
            assert again.ended.wait(10.0)
        assert fired(emu, "sse_disconnect_after_s") == 1


def test_foreign_generation_is_real_but_not_the_clients() -> None:
    with running_emulator(_config(sse_foreign_rate=1.0)) as emu, authed(emu) as c, StreamTap(emu) as tap:
        gid = _enqueue(c, FLUX)
        wait_for(lambda: len(tap.completed()) == 2)
        foreign = [e["generation_id"] for e in tap.completed() if e["generation_id"] != gid]
        assert len(foreign) == 1
        assert c.get(f"/api/ai/queue/{foreign[0]}").json()["status"] == "succeeded"
        assert emu.ledger.created_ids == [gid]
        assert fired(emu, "sse_foreign_rate") == 1


def test_noise_events_are_deployment_status_changed() -> None:
    with running_emulator(_config(sse_noise_rate=1.0)) as emu, authed(emu) as c, StreamTap(emu) as tap:
        _enqueue(c, FLUX)
        wait_for(lambda: tap.completed())
        assert ("deployment_status_changed", "{}") in tap.frames()
        assert "event: deployment_status_changed" in tap.lines
        assert fired(emu, "sse_noise_rate") == 1


def test_garbage_lines_of_every_kind_then_the_real_event() -> None:
    with running_emulator(_config(sse_garbage_rate=1.0)) as emu, authed(emu) as c, StreamTap(emu) as tap:
        ids = [
            g["generation_id"]
            for g in c.post("/api/ai/queue", json={**FLUX, "prompt": "g", "num_generations": 4}).json()["generations"]
        ]
        ids += [_enqueue(c, {**FLUX, "prompt": f"g{i}"}) for i in range(4)]
        wait_for(lambda: {e["generation_id"] for e in tap.completed()} == set(ids))
        garbage = [e.data for e in emu.ledger.events if e.event == "garbage"]
        assert len(garbage) == len(ids)
        kinds = {("truncated" if '","sta' in g else "oversized" if len(g) > 100_000 else "junk") for g in garbage}
        assert kinds == {"truncated", "oversized", "junk"}
        bad = [d for ev, d in tap.frames() if ev == "media_generation_completed" and not d.endswith("}")]
        assert bad and all(not _is_json(d) for d in bad)
        assert fired(emu, "sse_garbage_rate") == len(ids)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
