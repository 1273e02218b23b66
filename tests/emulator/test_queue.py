"""The async queue over real loopback HTTP: enqueue, status, list, cancel, generations."""

from __future__ import annotations

import json

import httpx

from batchgen.emulator import Account, EmulatorConfig, Faults, RunningEmulator, running_emulator
from tests.kit import wait_for
from tests.kit_faults import fired

from .clients import FLUX, SORA, authed, wait_terminal


def test_enqueue_reply_is_exactly_generations_queued(client: httpx.Client) -> None:
    reply = client.post("/api/ai/queue", json={**SORA, "num_generations": 3})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    body = reply.json()
    assert list(body) == ["generations"]
    assert [g["status"] for g in body["generations"]] == ["queued"] * 3
    ids = [g["generation_id"] for g in body["generations"]]
    assert len(set(ids)) == 3
    assert all(len(i) == 36 and i == i.lower() and i[14] == "4" for i in ids)


def test_status_row_keys_in_documented_order_then_params(client: httpx.Client) -> None:
    gid = client.post("/api/ai/queue", json={**SORA, "seconds": "8", "seed": 7}).json()["generations"][0][
        "generation_id"
    ]
    row = client.get(f"/api/ai/queue/{gid}").json()
    assert list(row) == [
        "generation_id",
        "model_name",
        "prompt",
        "media_type",
        "status",
        "result_url",
        "error_message",
        "enqueued_at",
        "started_at",
        "completed_at",
        "target_namespace",
        "target_repo",
        "target_directory",
        "seconds",
        "seed",
    ]
    assert row["status"] in ("queued", "processing")
    assert isinstance(row["enqueued_at"], int)
    done = wait_terminal(client, gid)
    assert done["status"] == "succeeded"
    assert done["result_url"].startswith(
        client.base_url.join("/api/repos/emulator/ai-generations/file/main/").__str__()
    )
    assert done["completed_at"] >= done["started_at"] >= done["enqueued_at"]


def test_result_file_is_a_distinct_mp4_per_generation(client: httpx.Client, emu: RunningEmulator) -> None:
    ids = [
        g["generation_id"]
        for g in client.post("/api/ai/queue", json={**SORA, "num_generations": 2}).json()["generations"]
    ]
    files = []
    for gid in ids:
        url = wait_terminal(client, gid)["result_url"]
        reply = httpx.get(url)
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "video/mp4"
        assert reply.content[4:8] == b"ftyp"
        assert gid.encode() in reply.content
        files.append(reply.content)
    assert files[0] != files[1]
    assert set(emu.ledger.served_sha256) == set(ids)


def test_image_model_serves_png(client: httpx.Client) -> None:
    gid = client.post("/api/ai/queue", json=FLUX).json()["generations"][0]["generation_id"]
    row = wait_terminal(client, gid)
    assert row["media_type"] == "image"
    reply = httpx.get(row["result_url"])
    assert reply.headers["content-type"] == "image/png"
    assert reply.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_unknown_id_is_404_resource_not_found(client: httpx.Client) -> None:
    reply = client.get("/api/ai/queue/not-a-uuid")
    assert reply.status_code == 404
    assert reply.json() == {
        "error": {"type": "resource_not_found", "title": "The requested resource could not be found"},
        "status": "error",
        "status_message": "resource_not_found",
    }


def test_wrong_key_is_401(emu: RunningEmulator) -> None:
    for method, path in [("POST", "/api/ai/queue"), ("GET", "/api/ai/queue"), ("GET", "/api/events")]:
        reply = httpx.request(method, emu.url(path), headers={"Authorization": "Bearer nope"}, json={})
        assert reply.status_code == 401
        assert json.loads(reply.text)["status_message"] == "unauthenticated"


def _enqueue(client: httpx.Client, body: dict[str, object]) -> str:
    reply = client.post("/api/ai/queue", json=body)
    assert reply.status_code == 200, reply.text
    gid: str = reply.json()["generations"][0]["generation_id"]
    return gid


def test_enqueue_errors_in_documented_order(client: httpx.Client) -> None:
    bad_json = client.post("/api/ai/queue", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400
    assert bad_json.json()["status_message"] == "invalid_params"
    assert client.post("/api/ai/queue", json={"prompt": "x"}).json()["error"]["detail"] == "model is required"
    unknown = client.post("/api/ai/queue", json={"model": "nope", "prompt": "x"})
    assert (unknown.status_code, unknown.json()) == (404, {"error": {"message": "Model not found: nope"}})
    text_only = client.post("/api/ai/queue", json={"model": "llama-3-1-8b-instruct", "prompt": "x"})
    assert text_only.status_code == 400
    assert text_only.json() == {
        "error": {
            "type": "invalid_params",
            "title": "Invalid parameters supplied, please check your request and try again.",
            "detail": ":unsupported_media_type",
        },
        "status": "error",
        "status_message": "invalid_params",
    }
    for count in (0, 5, "2", True, 1.5):
        reply = client.post("/api/ai/queue", json={**SORA, "num_generations": count})
        assert reply.status_code == 400
        assert reply.json()["error"]["detail"] == "num_generations must be an integer between 1 and 4"


def test_bad_model_params_fail_at_processing_not_at_enqueue(client: httpx.Client) -> None:
    gid = _enqueue(client, {**SORA, "seconds": "5"})
    row = wait_terminal(client, gid)
    assert row["status"] == "failed"
    assert row["error_message"].startswith("Getting model response error: 422 - Value error, ")
    assert "'5' is not one of ['4', '8', '12']" in row["error_message"]
    assert row["result_url"] is None


def test_lenient_types_coerce_integer_seconds(client: httpx.Client) -> None:
    assert wait_terminal(client, _enqueue(client, {**SORA, "seconds": 8}))["status"] == "succeeded"


def test_missing_prompt_fails_at_run_time(client: httpx.Client) -> None:
    row = wait_terminal(client, _enqueue(client, {"model": "openai-sora-2-pro"}))
    assert row["status"] == "failed"
    assert "'prompt' is a required property" in row["error_message"]


def test_list_defaults_to_active_and_filters(client: httpx.Client) -> None:
    first = _enqueue(client, {**SORA, "prompt": "__slow__ one"})
    second = _enqueue(client, {**FLUX, "prompt": "__slow__ two"})
    active = client.get("/api/ai/queue").json()
    assert active["count"] == 2
    assert [g["generation_id"] for g in active["generations"]] == [second, first]  # newest first
    only_images = client.get("/api/ai/queue", params={"media_type": "image"}).json()
    assert [g["generation_id"] for g in only_images["generations"]] == [second]
    only_sora = client.get("/api/ai/queue", params={"model": "openai-sora-2-pro"}).json()
    assert [g["generation_id"] for g in only_sora["generations"]] == [first]
    wait_terminal(client, first)
    wait_terminal(client, second)
    assert client.get("/api/ai/queue").json() == {"count": 0, "generations": []}
    done = client.get("/api/ai/queue", params={"status": "succeeded"}).json()
    assert {g["generation_id"] for g in done["generations"]} == {first, second}
    assert client.get("/api/ai/queue", params={"status": "running"}).status_code == 400
    assert client.get("/api/ai/queue", params={"namespace": "someone-else"}).status_code == 403


def test_cancel_active_then_terminal(client: httpx.Client, emu: RunningEmulator) -> None:
    gid = _enqueue(client, {**SORA, "prompt": "__slow__"})
    reply = client.delete(f"/api/ai/queue/{gid}")
    assert reply.json() == {"status": "success", "generation_id": gid}
    row = client.get(f"/api/ai/queue/{gid}").json()
    assert row["status"] == "cancelled"
    assert row["completed_at"] is not None
    assert client.delete(f"/api/ai/queue/{gid}").json() == {"status": "success", "generation_id": gid}
    assert client.delete("/api/ai/queue/nope").status_code == 404
    assert gid in emu.ledger.terminal_times
    full = client.get(f"/api/ai/generations/{gid}").json()["generation"]
    assert full["status"] == "cancelled"
    assert full["cost"] is None


def test_generations_carry_cost_and_user(client: httpx.Client, emu: RunningEmulator) -> None:
    gid = _enqueue(client, {**SORA, "seconds": "8", "resolution": "high"})
    wait_terminal(client, gid)
    reply = client.get(f"/api/ai/generations/{gid}").json()
    assert reply["status"] == "success"
    assert reply["status_message"] == "resource_found"
    full = reply["generation"]
    assert full["cost"] == "4"  # 8 s x 0.50 $/s (high-res placeholder price)
    assert full["username"] == "emulator"
    assert list(full)[:10] == [
        "generation_id",
        "model_name",
        "media_type",
        "status",
        "enqueued_at",
        "started_at",
        "completed_at",
        "result_url",
        "error_message",
        "cost",
    ]
    page = client.get("/api/ai/generations", params={"page_size": 1}).json()
    assert (page["total_entries"], page["total_pages"], page["page_number"]) == (1, 1, 1)
    assert page["total_cost"] == "4"
    assert float(emu.state.balance("emulator")) == 1000.0 - 4.0
    assert client.get("/api/ai/generations/nope").status_code == 404


def test_other_users_rows_are_404() -> None:
    keys = {"key-a": Account("alice"), "key-b": Account("bob")}
    with running_emulator(EmulatorConfig(keys=keys, time_scale=0.0005)) as emu, authed(emu, "key-a") as alice:
        with authed(emu, "key-b") as bob:
            gid = _enqueue(alice, SORA)
            assert bob.get(f"/api/ai/queue/{gid}").status_code == 404
            assert bob.get("/api/ai/queue", params={"status": "queued"}).json()["count"] == 0
            assert alice.get(f"/api/ai/queue/{gid}").status_code == 200


def test_credits_checked_at_enqueue_and_at_run_time() -> None:
    keys = {"poor": Account("poor", credits_usd=1.0), "broke": Account("broke", credits_usd=0.0)}
    with running_emulator(EmulatorConfig(keys=keys, time_scale=0.0005, strict_credit_check=False)) as emu:
        with authed(emu, "broke") as broke:
            reply = broke.post("/api/ai/queue", json=SORA)
            assert reply.status_code == 402
            assert reply.json() == OUT_OF_CREDITS
        with authed(emu, "poor") as poor:
            gid = _enqueue(poor, {**SORA, "seconds": "12"})  # 12 s x 0.30 = 3.60 > 1.00
            row = wait_terminal(poor, gid)
            assert (row["status"], row["error_message"]) == ("failed", "Insufficient credits")
    with running_emulator(EmulatorConfig(keys=keys, strict_credit_check=True)) as emu, authed(emu, "poor") as poor:
        assert poor.post("/api/ai/queue", json={**SORA, "seconds": "12"}).status_code == 402


OUT_OF_CREDITS = {
    "error": {"type": "insufficient_credits", "title": "You have run out of credits."},
    "status": "error",
    "status_message": "insufficient_credits",
}


def test_queued_generations_count_against_the_credits_so_the_refusal_does_not_depend_on_timing() -> None:
    # $3 pays for two 4 s clips ($1.20 each); held at the gate, neither has started (nor reserved) when the
    # third enqueue comes, and that one is refused all the same, with the API's body
    keys = {"k": Account("u", credits_usd=3.0)}
    with running_emulator(EmulatorConfig(keys=keys, queue_delay_s=30.0)) as emu, authed(emu, "k") as client:
        first, second = _enqueue(client, SORA), _enqueue(client, {**SORA, "prompt": "another"})
        assert emu.state.get(first).status == emu.state.get(second).status == "queued"  # type: ignore[union-attr]
        reply = client.post("/api/ai/queue", json={**SORA, "prompt": "a third"})
        assert (reply.status_code, reply.json()) == (402, OUT_OF_CREDITS)
        assert client.delete(f"/api/ai/queue/{first}").status_code == 200  # a cancel gives the pledge back
        _enqueue(client, {**SORA, "prompt": "a third"})
        emu.state.top_up("u", 1.2)
        _enqueue(client, {**SORA, "prompt": "a fourth"})


def test_legacy_mode_404s_once_terminal_and_says_model() -> None:
    with running_emulator(EmulatorConfig(time_scale=0.0005, faults=Faults(legacy_mode=True))) as emu, authed(emu) as c:
        gid = _enqueue(c, SORA)
        row = c.get(f"/api/ai/queue/{gid}").json()
        assert "model" in row and "model_name" not in row
        wait_for(lambda: c.get(f"/api/ai/queue/{gid}").status_code == 404, what="the finished row to 404")
        wait_for(lambda: fired(emu, "legacy_mode") >= 1, what="the 404 in the request log")
        assert c.get(f"/api/ai/generations/{gid}").json()["generation"]["status"] == "succeeded"
