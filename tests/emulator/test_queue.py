"""The async queue over real loopback HTTP: enqueue, status, list, cancel, generations."""

from __future__ import annotations

import json

import httpx

from batchgen.emulator import RunningEmulator
from tests.emulator.conftest import FLUX, SORA, wait_terminal


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
