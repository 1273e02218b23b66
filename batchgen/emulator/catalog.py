"""The model catalogue (models.json, shipped as package data): lookup, validation, run time and price.

Prices in models.json are placeholders (oxen-api.md E11), not Oxen's: clients must read them from
/api/ai/models, never hard-code them. `x-emulator` holds what only the emulator needs (documented run times)
and is stripped before a model object is served.
"""

from __future__ import annotations

import copy
import functools
import json
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from typing import Any

import jsonschema

PRIVATE_KEY = "x-emulator"
QUEUE_LAYER_PARAMS = ("model", "num_generations", "target_namespace", "target_repo", "target_directory")
VALUE_ERROR = "Getting model response error: 422 - Value error, "


@functools.cache
def _load() -> dict[str, dict[str, Any]]:
    text = resources.files("batchgen.emulator").joinpath("models.json").read_text("utf-8")
    return {m["id"]: m for m in json.loads(text)["data"]}


class Catalog:
    """Read-only view of models.json."""

    def __init__(self) -> None:
        self._models = _load()
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}

    def _validator(self, model_id: str) -> jsonschema.Draft202012Validator:
        """The model's request_schema made a validator once (made per request, it was a fifth of an enqueue)."""
        validator = self._validators.get(model_id)
        if validator is None:
            validator = self._validators[model_id] = jsonschema.Draft202012Validator(
                self._models[model_id]["request_schema"]
            )
        return validator

    def get(self, model_id: str) -> dict[str, Any] | None:
        """The model object as served (without emulator-private keys), or None."""
        model = self._models.get(model_id)
        return None if model is None else _public(model)

    def knows(self, model_id: str) -> bool:
        """Whether the catalog has the model: what an enqueue asks, without copying the model as `get` serves it."""
        return model_id in self._models

    def all(self) -> list[dict[str, Any]]:
        """Every model as served, in file order."""
        return [_public(m) for m in self._models.values()]

    def search(self, text: str) -> list[dict[str, Any]]:
        """Models whose id, display name or description contain `text` (case-insensitive)."""
        needle = text.lower()
        return [
            _public(m)
            for m in self._models.values()
            if needle in m["id"].lower() or needle in m["display_name"].lower() or needle in m["description"].lower()
        ]

    def media_type(self, model_id: str) -> str | None:
        """ "video" or "image" for a media model, None for text-only models (and unknown ones)."""
        model = self._models.get(model_id)
        if model is None:
            return None
        outputs = model["capabilities"]["output"]
        if "video" in outputs:
            return "video"
        if "image" in outputs:
            return "image"
        return None

    def runtime_range(self, model_id: str) -> tuple[float, float]:
        """Documented run time of the model in model seconds (low, high)."""
        low, high = self._models[model_id][PRIVATE_KEY]["runtime_s"]
        return float(low), float(high)

    def validate(self, model_id: str, params: dict[str, Any], *, lenient_types: bool) -> tuple[dict[str, Any], str]:
        """Check params against the model's request_schema, as the model runner would at processing start.

        Returns (params, error): params possibly coerced (lenient_types), error "" when valid, else the full
        `Getting model response error: 422 - Value error, ...` text.
        """
        schema = self._models[model_id]["request_schema"]
        checked = {k: v for k, v in params.items() if k not in QUEUE_LAYER_PARAMS}
        if lenient_types:
            checked = _coerce(schema, checked)
        if "prompt" in checked and "multi_prompt" in checked:
            return checked, VALUE_ERROR + "Cannot provide both 'prompt' and 'multi_prompt'."
        if "multi_prompt" in checked and "prompt" in schema.get("required", []):
            schema = {**schema, "required": [r for r in schema["required"] if r != "prompt"]}
        validator = (
            self._validator(model_id) if schema is self._models[model_id]["request_schema"] else
            jsonschema.Draft202012Validator(schema)
        )  # fmt: skip
        error = jsonschema.exceptions.best_match(validator.iter_errors(checked))
        if error is None:
            return checked, ""
        where = ".".join(str(p) for p in error.absolute_path)
        return checked, VALUE_ERROR + (f"{where}: {error.message}" if where else error.message)

    def cost(self, model_id: str, params: dict[str, Any]) -> Decimal:
        """USD charged for one generation with these params (placeholder prices, E11)."""
        model = self._models[model_id]
        pricing = model["pricing"]
        method = pricing.get("method")
        if method == "per_image":
            amount = Decimal(str(pricing["cost_per_image"]))
        elif method == "per_video_output_second":
            rate = pricing["cost_per_second"]
            if params.get("resolution") == "high" and "cost_per_second_high_res" in pricing:
                rate = pricing["cost_per_second_high_res"]
            amount = Decimal(str(rate)) * Decimal(str(self.output_seconds(model_id, params)))
        else:
            amount = Decimal(0)
        return amount.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)

    def output_seconds(self, model_id: str, params: dict[str, Any]) -> float:
        """Length of the video these params ask for (schema default when absent); 0 for images."""
        properties = self._models[model_id]["request_schema"].get("properties", {})
        for name in ("seconds", "duration"):
            if name in properties:
                value = params.get(name, properties[name].get("default", 0))
                try:
                    return float(str(value).rstrip("s"))
                except ValueError:
                    return 0.0
        return 0.0


def format_cost(amount: Decimal | None) -> str | None:
    """A decimal string with at most 6 decimals and no trailing zeros ("1.2"), as the API's `cost`."""
    if amount is None:
        return None
    return format(amount.normalize(), "f")


def _public(model: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in model.items() if k != PRIVATE_KEY}


def _coerce(schema: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """E3 lenient_types: `seconds: 8` -> "8" where the schema wants a string, "5" -> 5 where it wants an int."""
    properties = schema.get("properties", {})
    out = dict(params)
    for name, value in params.items():
        wanted = properties.get(name, {}).get("type")
        if wanted == "string" and isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = str(int(value)) if float(value).is_integer() else str(value)
        elif wanted == "integer" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out
