"""The registry over real loopback HTTP (the emulator), its cache, and make_plan end to end."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batchgen.core.validation import ImageProbe
from batchgen.emulator import EmulatorConfig, RunningEmulator, running_emulator
from batchgen.engine.planning import make_plan, probe_images
from batchgen.engine.registry import ModelRegistry, cache_path

from .fakes import write

DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo.yaml"


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(seed=1)) as emu:
        yield emu


async def test_fetches_caches_and_then_works_offline(emulator: RunningEmulator, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        online = ModelRegistry(http, base_url=emulator.base_url, api_key=None, state_dir=tmp_path)
        view = await online.lookup(["openai-sora-2-pro"])
        assert view.models["openai-sora-2-pro"].pricing == {
            "method": "per_video_output_second",
            "cost_per_second": 0.3,
            "cost_per_second_high_res": 0.5,
        }
        assert json.loads(cache_path(tmp_path, "openai-sora-2-pro").read_text())["id"] == "openai-sora-2-pro"
        offline = ModelRegistry(http, base_url="http://127.0.0.1:9", api_key=None, state_dir=tmp_path, offline=True)
        assert (await offline.lookup(["openai-sora-2-pro"])).models["openai-sora-2-pro"].media_type == "video"


async def test_unreachable_registry_falls_back_to_the_cache_or_says_why(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    async with httpx.AsyncClient() as http:
        await ModelRegistry(http, base_url=emulator.base_url, api_key=None, state_dir=tmp_path).lookup(["flux-1-dev"])
        closed = ModelRegistry(http, base_url="http://127.0.0.1:9", api_key=None, state_dir=tmp_path)
        view = await closed.lookup(["flux-1-dev", "google-veo-3-1-fast"])
    assert set(view.models) == {"flux-1-dev"}
    assert "unreachable" in view.unavailable["google-veo-3-1-fast"]


async def test_unknown_model_comes_with_the_registry_ids(emulator: RunningEmulator, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        view = await ModelRegistry(http, base_url=emulator.base_url, api_key=None, state_dir=tmp_path).lookup(
            ["openai-sora-2-pr"]
        )
    assert "openai-sora-2-pro" in view.unknown["openai-sora-2-pr"]


async def test_make_plan_of_the_demo_against_the_emulator(emulator: RunningEmulator, tmp_path: Path) -> None:
    plan = await make_plan(DEMO, base_url=emulator.base_url, api_key=None, state_dir=tmp_path)
    assert not plan.problems and plan.validated and plan.priced
    assert len(plan.jobs) == 9
    assert {job.media_type for job in plan.jobs} == {"video", "image"}
    assert plan.total_cost == pytest.approx(8 * 4 * 0.30 + 0.025)
    plan.check()


def _png(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\0" * 70000


async def test_key_goes_only_to_the_api_host_and_images_are_read_from_their_first_bytes() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("authorization")
        assert request.headers["range"] == "bytes=0-65535"
        if request.url.path == "/missing.png":
            return httpx.Response(404)
        return httpx.Response(200, content=_png(720, 1280))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        probes = await probe_images(
            http,
            ["https://hub.test/a.png", "https://elsewhere.test/b.png", "https://elsewhere.test/missing.png"],
            base_url="https://hub.test",
            api_key="secret",
        )
    assert probes["https://hub.test/a.png"] == ImageProbe((720, 1280))
    assert probes["https://elsewhere.test/missing.png"] == ImageProbe(None, "HTTP 404")
    assert seen == {"hub.test": "Bearer secret", "elsewhere.test": None}


async def test_plan_with_an_unreadable_first_frame_warns(emulator: RunningEmulator, tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\nparams: {prompt: ox, input_image: 'http://127.0.0.1:9/ox.png'}\n")
    plan = await make_plan(path, base_url=emulator.base_url, api_key=None, state_dir=tmp_path)
    assert not plan.problems
    assert any("could not be read (ConnectError" in warning for warning in plan.warnings)


@pytest.mark.parametrize("manifest", sorted(DEMO.parent.glob("*.yaml")), ids=lambda path: path.name)
async def test_every_example_manifest_plans_cleanly(manifest: Path, emulator: RunningEmulator, tmp_path: Path) -> None:
    plan = await make_plan(manifest, base_url=emulator.base_url, api_key=None, state_dir=tmp_path)
    assert plan.problems == () and plan.validated and plan.priced
    plan.check()
