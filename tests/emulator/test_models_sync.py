"""The model catalogue (no key needed) and the synchronous generate endpoints."""

from __future__ import annotations

import base64

import httpx

from batchgen.emulator import EmulatorConfig, RunningEmulator, running_emulator

from .clients import FLUX, SORA, authed

REQUIRED_MODELS = (
    "openai-sora-2-pro",
    "openai-sora-2",
    "google-veo-3-1-fast",
    "kling-video-v2-6-pro-text-to-video",
    "flux-1-dev",
)


def test_models_list_needs_no_key_and_has_pricing(emu: RunningEmulator) -> None:
    reply = httpx.get(emu.url("/api/ai/models"))
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "list"
    models = {m["id"]: m for m in body["data"]}
    assert set(REQUIRED_MODELS) <= set(models)
    for model in models.values():
        assert "x-emulator" not in model
        assert model["object"] == "model"
    assert models["openai-sora-2-pro"]["pricing"] == {
        "method": "per_video_output_second",
        "cost_per_second": 0.30,
        "cost_per_second_high_res": 0.50,
    }
    assert models["openai-sora-2"]["pricing"]["cost_per_second"] == 0.10
    assert models["flux-1-dev"]["pricing"] == {"method": "per_image", "cost_per_image": 0.025}
    assert "resolution" not in models["openai-sora-2"]["request_schema"]["properties"]


def test_model_by_id_search_and_errors(emu: RunningEmulator) -> None:
    sora = httpx.get(emu.url("/api/ai/models/openai-sora-2-pro")).json()
    schema = sora["request_schema"]
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["seconds"] == {"type": "string", "enum": ["4", "8", "12"], "default": "4", "x-order": 4}
    assert sora["endpoint"] == "/videos/generate"
    assert httpx.get(emu.url("/api/ai/models/nope")).json() == {"error": {"message": "Model not found: nope"}}
    found = httpx.get(emu.url("/api/ai/models/search"), params={"search": "sora"}).json()["data"]
    assert {m["id"] for m in found} == {"openai-sora-2-pro", "openai-sora-2"}
    assert httpx.get(emu.url("/api/ai/models"), headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_sync_video_holds_then_answers_with_a_presigned_url(client: httpx.Client, emu: RunningEmulator) -> None:
    reply = client.post("/api/ai/videos/generate", json=SORA)
    assert reply.status_code == 200
    body = reply.json()
    assert list(body) == ["model", "created", "videos"]
    assert body["model"] == "openai-sora-2-pro"
    url = body["videos"][0]["url"]
    assert "/presigned/" in url
    video = httpx.get(url)
    assert video.headers["content-type"] == "video/mp4"
    history = client.get("/api/ai/generations").json()["generations"]
    assert [g["status"] for g in history] == ["succeeded"]
    assert emu.ledger.events == []  # sync generations emit no SSE


def test_sync_image_b64_and_validation(client: httpx.Client) -> None:
    reply = client.post("/api/ai/images/generate", json={**FLUX, "response_format": "b64_json"})
    image = base64.b64decode(reply.json()["images"][0]["b64_json"])
    assert image.startswith(b"\x89PNG")
    bad = client.post("/api/ai/videos/generate", json={**SORA, "seconds": "5"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith("Getting model response error: 422 - Value error, ")
    empty = client.post("/api/ai/images/generate", json={"model": "flux-1-dev", "prompt": ""})
    assert empty.json() == {"error": {"message": "Prompt cannot be empty"}}
    neither = client.post("/api/ai/videos/generate", json={"model": "openai-sora-2-pro"})
    assert "Either 'prompt' or 'multi_prompt' must be provided." in neither.json()["error"]["message"]
    wrong_kind = client.post("/api/ai/images/generate", json=SORA)
    assert wrong_kind.json()["error"]["detail"] == ":unsupported_media_type"


def test_sync_duration_override_is_exact() -> None:
    import time

    with running_emulator(EmulatorConfig(duration_s=0.3)) as emu, authed(emu) as c:
        started = time.monotonic()
        assert c.post("/api/ai/images/generate", json=FLUX).status_code == 200
        assert time.monotonic() - started >= 0.3  # the catalogue's own run time here would be 0.05-0.3 s
