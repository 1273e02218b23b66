"""Registry entries for the manifest tests, shaped like oxen-api.md §12 (placeholder prices, not Oxen's)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchgen.core.expansion import expand
from batchgen.core.models import ModelInfo
from batchgen.core.plan import Plan, RegistryView, build_plan
from batchgen.core.validation import ImageProbe
from batchgen.engine.manifests import load_manifest

SORA: dict[str, Any] = {
    "id": "openai-sora-2-pro",
    "capabilities": {"input": ["text", "image"], "output": ["video"]},
    "pricing": {"method": "per_video_output_second", "cost_per_second": 0.30, "cost_per_second_high_res": 0.50},
    "request_schema": {
        "type": "object",
        "required": ["prompt"],
        "basic": ["input_image"],
        "properties": {
            "prompt": {"type": "string", "x-order": 0},
            "input_image": {"type": "string", "format": "uri", "x-order": 1},
            "aspect_ratio": {"type": "string", "enum": ["landscape", "portrait"], "default": "landscape"},
            "resolution": {"type": "string", "enum": ["standard", "high"], "default": "standard"},
            "seconds": {"type": "string", "enum": ["4", "8", "12"], "default": "4"},
        },
    },
}
FLUX: dict[str, Any] = {
    "id": "flux-1-dev",
    "capabilities": {"input": ["text"], "output": ["image"]},
    "pricing": {"method": "per_image", "cost_per_image": 0.025},
    "request_schema": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "aspect_ratio": {"type": "string", "enum": ["1:1", "16:9", "9:16"], "default": "1:1"},
            "seed": {"type": "integer"},
        },
    },
}
KLING: dict[str, Any] = {
    "id": "kling-video-v2-6-pro-text-to-video",
    "capabilities": {"input": ["text"], "output": ["video"]},
    "pricing": {"method": "per_video_output_second", "cost_per_second": 0.07, "cost_per_second_with_audio": 0.14},
    "request_schema": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string"},
            "duration": {"type": "integer", "enum": [5, 10], "default": 5},
            "generate_audio": {"type": "boolean", "default": False},
        },
    },
}
LUMA: dict[str, Any] = {
    "id": "luma-ray-v3-2-text-to-video",
    "capabilities": {"input": ["text"], "output": ["video"]},
    "pricing": {"method": "per_video_output_second", "cost_per_second_by_resolution": {"540p": 0.1, "1080P": 0.4}},
    "request_schema": {
        "type": "object",
        "properties": {
            "prompt": {"type": "string"},
            "duration": {"type": "string", "enum": ["5s", "10s"], "default": "5s"},
            "resolution": {"type": "string", "enum": ["540p", "720p", "1080p"], "default": "540p"},
        },
    },
}
GRID: dict[str, Any] = {
    "id": "flux-3-image",
    "capabilities": {"input": ["text"], "output": ["image"]},
    "pricing": {"method": "per_image", "cost_per_image_grid": {"high": {"1k": 0.0624, "4k": 0.7891}}},
    "request_schema": {
        "type": "object",
        "properties": {
            "prompt": {"type": "string"},
            "quality": {"type": "string", "enum": ["high"], "default": "high"},
            "resolution": {"type": "string", "enum": ["1k", "4k"], "default": "1k"},
        },
    },
}
ALL = (SORA, FLUX, KLING, LUMA, GRID)


def infos(*entries: Mapping[str, Any]) -> dict[str, ModelInfo]:
    """ModelInfo by id for the given registry entries (all of them by default)."""
    return {entry["id"]: ModelInfo.from_api(entry) for entry in (entries or ALL)}


def write(directory: Path, text: str, name: str = "m.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def plan_of(
    path: Path,
    models: Mapping[str, ModelInfo] | None = None,
    probes: Mapping[str, ImageProbe] | None = None,
    max_cost: float | None = None,
    registry_down: bool = False,
) -> Plan:
    """The pure planning pipeline, as make_plan runs it once the registry has answered (or failed to)."""
    manifest = load_manifest(path)
    known = infos() if models is None else models
    wanted = manifest.model_names()
    view = RegistryView(
        models={name: info for name, info in known.items() if name in wanted},
        unknown={} if registry_down else {name: tuple(known) for name in wanted if name not in known},
        unavailable={name: "no registry and no cache" for name in wanted if name not in known} if registry_down else {},
    )
    return build_plan(manifest, expand(manifest, view.models), view, probes or {}, max_cost=max_cost)


def seed_cache(state_dir: Path, *entries: Mapping[str, Any]) -> None:
    """Put registry entries in the model cache, as a previous online plan would have."""
    (state_dir / "models").mkdir(parents=True, exist_ok=True)
    for entry in entries or ALL:
        (state_dir / "models" / f"{entry['id']}.json").write_text(json.dumps(entry), encoding="utf-8")
