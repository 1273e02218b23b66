"""HTTP fault knobs, rate limits, files and determinism, over real loopback HTTP."""

from __future__ import annotations

import dataclasses
import time

import httpx
import pytest

from batchgen.emulator import EmulatorConfig, Faults, RateLimit, running_emulator
from batchgen.emulator.faults import decide, parse_assignment
from tests.kit import wait_for
from tests.kit_faults import EVIDENCE, NOT_FAULTS, fired, knobs_on

from .clients import FLUX, SORA, StreamTap, authed, wait_terminal


def _config(**faults: object) -> EmulatorConfig:
    return EmulatorConfig(seed=5, time_scale=0.0005, faults=Faults(**faults))  # type: ignore[arg-type]


def test_enqueue_429_with_and_without_retry_after_creates_nothing() -> None:
    for retry_after, header in ((2.5, "2.5"), (None, None)):
        with running_emulator(_config(enqueue_429_rate=1.0, retry_after=retry_after)) as emu, authed(emu) as c:
            reply = c.post("/api/ai/queue", json=SORA)
            assert reply.status_code == 429
            assert reply.json()["error"]["message"] == "Rate limit exceeded"
            assert reply.headers.get("retry-after") == header
            assert emu.ledger.generations_created == 0
            assert fired(emu, "enqueue_429_rate") == 1


def test_enqueue_5xx_creates_nothing() -> None:
    with running_emulator(_config(enqueue_5xx_rate=1.0)) as emu, authed(emu) as c:
        reply = c.post("/api/ai/queue", json=SORA)
        assert reply.status_code in (500, 502, 503, 504)
        assert reply.json()["status_message"] == "unknown_error"
        assert emu.ledger.generations_created == 0
        assert emu.ledger.enqueues[0].status == reply.status_code
        assert (fired(emu, "enqueue_5xx_rate"), fired(emu, "html_error_rate")) == (1, 0)


def test_lost_reply_creates_rows_then_cuts_the_connection() -> None:
    with running_emulator(_config(lost_reply_rate=1.0)) as emu, authed(emu) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.post("/api/ai/queue", json={**FLUX, "num_generations": 2})
        record = emu.ledger.enqueues[0]
        assert (record.replied, record.status, len(record.generation_ids)) == (False, 0, 2)
        assert emu.ledger.requests[-1].status == 0
        assert fired(emu, "lost_reply_rate") == 1
        for gid in record.generation_ids:  # the rows exist and run: the client must reconcile, not resubmit
            assert wait_terminal(c, gid)["status"] == "succeeded"


def test_status_faults_keyed_by_poll_attempt() -> None:
    with running_emulator(_config(status_429_rate=1.0, retry_after=0.1)) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        assert c.get(f"/api/ai/queue/{gid}").status_code == 429
        assert c.get(f"/api/ai/queue/{gid}").headers["retry-after"] == "0.1"
        assert emu.ledger.polls[gid] == 2
        assert fired(emu, "status_429_rate") == 2
    with running_emulator(_config(status_5xx_rate=0.5)) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        codes = [c.get(f"/api/ai/queue/{gid}").status_code for _ in range(40)]
        assert 200 in codes and any(code >= 500 for code in codes)
        assert fired(emu, "status_5xx_rate") == sum(1 for code in codes if code >= 500)


def test_bad_answers_on_status() -> None:
    with running_emulator(_config(malformed_json_rate=1.0)) as emu, authed(emu) as c:
        reply = c.post("/api/ai/queue", json=FLUX)  # the enqueue reply is cut too, yet the row exists
        assert reply.headers["content-type"].startswith("application/json")
        with pytest.raises(ValueError):
            reply.json()
        gid = emu.ledger.created_ids[0]
        status = c.get(f"/api/ai/queue/{gid}")
        with pytest.raises(ValueError):
            status.json()
        listed = c.get("/api/ai/queue")
        with pytest.raises(ValueError):
            listed.json()
        assert fired(emu, "malformed_json_rate") == 3  # the enqueue, the poll, the list
    with running_emulator(_config(html_error_rate=1.0)) as emu, authed(emu) as c:
        reply = c.post("/api/ai/queue", json=FLUX)
        assert (reply.status_code, reply.headers["content-type"]) == (502, "text/html; charset=utf-8")
        assert "<h1>502 Bad Gateway</h1>" in reply.text
        assert emu.ledger.generations_created == 0
        assert c.get("/api/ai/queue").status_code == 502
        assert (fired(emu, "html_error_rate"), fired(emu, "enqueue_5xx_rate")) == (2, 0)
    with running_emulator(_config(unknown_status_rate=1.0)) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        assert c.get(f"/api/ai/queue/{gid}").json()["status"] == "running"
        assert fired(emu, "unknown_status_rate") == 1
    with running_emulator(_config(wrong_content_type_rate=1.0)) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        reply = c.get(f"/api/ai/queue/{gid}")
        assert reply.headers["content-type"].startswith("text/html")
        assert reply.json()["generation_id"] == gid
        wait_for(lambda: emu.state.get(gid) and emu.state.get(gid).status == "succeeded")  # type: ignore[union-attr]
        download = httpx.get(emu.state.get(gid).result_url)  # type: ignore[union-attr, arg-type]
        assert download.headers["content-type"].startswith("text/plain")
        assert download.content.startswith(b"\x89PNG")
        assert fired(emu, "wrong_content_type_rate") == 2  # the poll, the download


def test_stuck_generations_stay_processing() -> None:
    config = EmulatorConfig(duration_s=0.05, faults=Faults(stuck_rate=1.0))
    with running_emulator(config) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        wait_for(lambda: c.get(f"/api/ai/queue/{gid}").json()["status"] == "processing")
        time.sleep(0.3)
        assert c.get(f"/api/ai/queue/{gid}").json()["status"] == "processing"
        assert gid not in emu.ledger.terminal_times
        assert fired(emu, "stuck_rate") == 1


def test_fail_rate_uses_the_given_messages() -> None:
    messages = ("Content moderation flagged the prompt", "Upstream provider timeout")
    with running_emulator(_config(fail_rate=1.0, fail_messages=messages)) as emu, authed(emu) as c:
        body = {**FLUX, "num_generations": 4}
        ids = [g["generation_id"] for g in c.post("/api/ai/queue", json=body).json()["generations"]]
        rows = [wait_terminal(c, gid) for gid in ids]
        assert {r["status"] for r in rows} == {"failed"}
        assert {r["error_message"] for r in rows} <= set(messages)
        assert c.get(f"/api/ai/generations/{ids[0]}").json()["generation"]["cost"] is None
        assert float(emu.state.balance("emulator")) == 1000.0  # nothing charged for failures
        assert fired(emu, "fail_rate") == 4


def test_download_faults_and_truncation() -> None:
    with running_emulator(_config(download_429_rate=1.0)) as emu, authed(emu) as c:
        url = wait_terminal(c, c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"])[
            "result_url"
        ]
        assert httpx.get(url).status_code == 429
        assert fired(emu, "download_429_rate") == 1
    with running_emulator(_config(download_5xx_rate=1.0)) as emu, authed(emu) as c:
        url = wait_terminal(c, c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"])[
            "result_url"
        ]
        assert httpx.get(url).status_code == 503
        assert fired(emu, "download_5xx_rate") == 1
    with running_emulator(_config(truncated_download_rate=1.0)) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json=SORA).json()["generations"][0]["generation_id"]
        url = wait_terminal(c, gid)["result_url"]
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(url)
        assert emu.ledger.downloads_of(gid)[0].status == 0
        assert gid not in emu.ledger.served_sha256
        assert fired(emu, "truncated_download_rate") == 1


def test_result_host_and_authorization_are_recorded() -> None:
    with running_emulator(_config(result_host="localhost")) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        url = wait_terminal(c, gid)["result_url"]
        assert url.startswith(f"http://localhost:{emu.port}/api/repos/")
        assert httpx.get(url).status_code == 200
        assert httpx.get(url, headers={"Authorization": f"Bearer {emu.api_key}"}).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        first, second = emu.ledger.downloads_of(gid)[:2]
        assert (first.authorized, second.authorized) == (False, True)
        assert first.host == f"localhost:{emu.port}"
        assert fired(emu, "result_host") == 2  # the refused third download never reached the file


def test_presigned_urls_expire_and_redirects() -> None:
    config = EmulatorConfig(time_scale=0.0005, presign_ttl_s=0.0, redirect_presigned=True)
    with running_emulator(config) as emu, authed(emu) as c:
        gid = c.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
        url = wait_terminal(c, gid)["result_url"]
        redirect = httpx.get(url)
        assert redirect.status_code == 302
        assert "/presigned/" in redirect.headers["location"]
        wait_for(lambda: httpx.get(redirect.headers["location"]).status_code == 403, timeout=3.0)
        assert httpx.get(emu.url("/presigned/forged?expires=9999999999")).status_code == 403


def test_token_bucket_and_active_cap() -> None:
    config = EmulatorConfig(time_scale=0.0005, rate_limit=RateLimit(requests_per_s=0.5, burst=2))
    with running_emulator(config) as emu, authed(emu) as c:
        codes = [c.get("/api/ai/queue").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert float(c.get("/api/ai/queue").headers["retry-after"]) > 0
    capped = EmulatorConfig(duration_s=5.0, rate_limit=RateLimit(burst=100, max_active_per_user=1))
    with running_emulator(capped) as emu, authed(emu) as c:
        assert c.post("/api/ai/queue", json=FLUX).status_code == 200
        assert c.post("/api/ai/queue", json=FLUX).status_code == 429


def test_same_seed_same_faults_whatever_the_order() -> None:
    bodies = [{**FLUX, "prompt": f"p{i}"} for i in range(12)]
    outcomes = []
    for order in (bodies, list(reversed(bodies))):
        with running_emulator(_config(enqueue_5xx_rate=0.5)) as emu, authed(emu) as c:
            seen = {b["prompt"]: c.post("/api/ai/queue", json=b).status_code for b in order}
            again = {b["prompt"]: c.post("/api/ai/queue", json=b).status_code for b in order}
            outcomes.append((seen, again, sorted(emu.ledger.created_ids)))
            failed = [code for code in (*seen.values(), *again.values()) if code >= 500]
            assert fired(emu, "enqueue_5xx_rate") == len(failed)
    assert outcomes[0] == outcomes[1]
    assert len(set(outcomes[0][0].values())) > 1  # some failed, some did not
    assert outcomes[0][0] != outcomes[0][1]  # a retry is a new attempt with its own roll


def test_decide_is_a_pure_function() -> None:
    assert decide(1, "k", "id", 0.0) is False and decide(1, "k", "id", 1.0) is True
    rolls = [decide(1, "k", f"id{i}", 0.3) for i in range(2000)]
    assert rolls == [decide(1, "k", f"id{i}", 0.3) for i in range(2000)]
    assert 0.25 < sum(rolls) / len(rolls) < 0.35


def test_chaos_preset_and_text_overrides() -> None:
    chaos = Faults.chaos(7)
    assert chaos.seed == 7 and chaos.stuck_rate == 0.0 and not chaos.legacy_mode
    # every rate but a stuck generation's and a cancel that never lands: either keeps a chaos run from ending
    rates = [
        name for name in vars(Faults()) if name.endswith("_rate") and name not in ("stuck_rate", "cancel_5xx_rate")
    ]
    assert rates and all(getattr(chaos, name) > 0 for name in rates)
    changed = chaos.with_overrides(
        dict(
            parse_assignment(t)
            for t in ["sse_drop_rate=0.5", "retry_after=none", "fail_messages=a|b", "legacy_mode=true"]
        )
    )
    assert (changed.sse_drop_rate, changed.retry_after, changed.fail_messages, changed.legacy_mode) == (
        0.5,
        None,
        ("a", "b"),
        True,
    )
    with pytest.raises(ValueError, match="unknown fault knob"):
        Faults().with_overrides({"nope": "1"})
    with pytest.raises(ValueError, match="wants a float"):
        Faults().with_overrides({"sse_drop_rate": "lots"})
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_assignment("sse_drop_rate")


def test_every_knob_has_evidence_and_nothing_fires_when_off() -> None:
    # a new knob must say what proves it fired (tests/kit_faults.py), or no test can prove its fault happened
    knobs = {f.name for f in dataclasses.fields(Faults)} - NOT_FAULTS
    assert set(EVIDENCE) == knobs
    assert knobs_on(Faults()) == [] and set(knobs_on(Faults.chaos(3))) <= knobs
    config = EmulatorConfig(seed=1, duration_s=0, keepalive_s=0.05)
    with running_emulator(config) as emu, authed(emu) as c, StreamTap(emu) as tap:
        reply = c.post("/api/ai/queue", json={**FLUX, "num_generations": 3})
        for row in reply.json()["generations"]:
            assert httpx.get(wait_terminal(c, row["generation_id"])["result_url"]).status_code == 200
        assert c.get("/api/ai/queue", params={"status": "succeeded"}).json()["count"] == 3
        wait_for(lambda: len(tap.completed()) == 3, what="the three completion events")
        assert {knob: fired(emu, knob) for knob in sorted(knobs) if fired(emu, knob)} == {}
