"""Cost estimates from the registry's pricing object (oxen-api.md §12); never from numbers written here.

Decimal throughout, so a 100,000-job total does not drift. An estimate that cannot be made is `None` with a
reason, never 0: "unknown" and "free" are different answers to a budget.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from batchgen.core.jobs import exact_key
from batchgen.core.models import ModelInfo

_SECONDS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*s?\s*\Z", re.IGNORECASE)  # 4, "4", "5s", "5 s"
# Parameters an image model may use to pick a tier of `cost_per_image_grid`, most specific first.
_TIER_PARAMS = ("resolution", "size", "image_size", "output_size", "megapixels")
# Parameters that can change a price; all others (the prompt above all) are ignored by the cache key.
_PRICE_PARAMS = ("seconds", "duration", "resolution", "generate_audio", "quality", "n", *_TIER_PARAMS[1:])
PRICE_NAMES = frozenset(_PRICE_PARAMS)  # every parameter that can change a price
CACHE_LIMIT = 65_536  # estimates kept per model


@dataclass(frozen=True, slots=True)
class Estimate:
    """The estimated cost of one job in USD, or None with the reason it is unknown."""

    cost: Decimal | None
    reason: str = ""
    # the cost as a plan's jobs carry it: one float for every job that shares this estimate, not one each
    usd: float | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "usd", float(self.cost) if self.cost is not None else None)


class PriceList:
    """Estimates for one model, cached per distinct set of price-relevant parameters."""

    def __init__(self, model: ModelInfo) -> None:
        self.model = model
        self._cache: dict[tuple[Hashable, ...], Estimate] = {}

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        """The cost of one generation with these parameters."""
        parts: list[Hashable] = []
        for name, value in params.items():
            if name in PRICE_NAMES:
                parts.append(name)
                parts.append(value if value.__class__ is str else exact_key(value))
        key = tuple(parts)
        cached = self._cache.get(key)
        if cached is None:
            relevant = {name: params[name] for name in _PRICE_PARAMS if name in params}
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            cached = self._cache[key] = estimate_cost(self.model, relevant)
        return cached


def estimate_cost(model: ModelInfo, params: Mapping[str, Any]) -> Estimate:
    """The cost of one generation of `model` with `params` (schema defaults fill in what is not given)."""
    pricing = model.pricing
    if not pricing:
        return Estimate(None, f"the registry gives no price for {model.id}")
    method = pricing.get("method")
    if method == "per_video_output_second":
        return _per_second(model, pricing, params)
    if method == "per_image":
        return _per_image(model, pricing, params)
    return Estimate(None, f"{model.id} is priced by `{method}`, which batchgen does not estimate")


def _value(model: ModelInfo, params: Mapping[str, Any], name: str) -> Any:
    return params[name] if name in params else model.default_of(name)


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None


def output_seconds(model: ModelInfo, params: Mapping[str, Any]) -> Decimal | None:
    """Length of the video asked for, from `seconds` or `duration` (4, "4" or "5s"); None when not fixed."""
    for name in ("seconds", "duration"):
        value = _value(model, params, name)
        if value is None or isinstance(value, bool):
            continue
        match = _SECONDS.match(str(value))
        # "-1" and "auto" let the model choose the length: no honest estimate is possible.
        return Decimal(match.group(1)) if match else None
    return None


def _lookup(table: Any, key: Any) -> Any:
    """A case-insensitive lookup (the hub writes both 720p and 720P)."""
    if not isinstance(table, Mapping) or key is None:
        return None
    wanted = str(key).lower()
    for name, value in table.items():
        if str(name).lower() == wanted:
            return value
    return None


def _per_second(model: ModelInfo, pricing: Mapping[str, Any], params: Mapping[str, Any]) -> Estimate:
    seconds = output_seconds(model, params)
    if seconds is None:
        return Estimate(None, f"{model.id}: the output length is not fixed by `seconds`/`duration`")
    resolution = _value(model, params, "resolution")
    rate: Decimal | None = None
    if _value(model, params, "generate_audio") is True and "cost_per_second_with_audio" in pricing:
        rate = _decimal(pricing["cost_per_second_with_audio"])
    elif _lookup(pricing.get("cost_per_second_by_resolution"), resolution) is not None:
        rate = _decimal(_lookup(pricing["cost_per_second_by_resolution"], resolution))
    elif str(resolution).lower() == "high" and "cost_per_second_high_res" in pricing:
        rate = _decimal(pricing["cost_per_second_high_res"])
    elif "cost_per_second" in pricing:
        rate = _decimal(pricing["cost_per_second"])
    if rate is None:
        return Estimate(None, f"{model.id}: no per-second price for resolution {resolution!r}")
    return Estimate(rate * seconds)


def _per_image(model: ModelInfo, pricing: Mapping[str, Any], params: Mapping[str, Any]) -> Estimate:
    count = _value(model, params, "n")
    images = Decimal(count) if isinstance(count, int) and not isinstance(count, bool) and count > 0 else Decimal(1)
    if "cost_per_image" in pricing:
        price = _decimal(pricing["cost_per_image"])
        return Estimate(price * images) if price is not None else Estimate(None, f"{model.id}: unreadable price")
    grid = pricing.get("cost_per_image_grid")
    if not isinstance(grid, Mapping) or not grid:
        return Estimate(None, f"{model.id}: no per-image price")
    quality = _value(model, params, "quality")
    tiers = _lookup(grid, quality) if quality is not None else None
    if tiers is None and len(grid) == 1:
        tiers = next(iter(grid.values()))
    if not isinstance(tiers, Mapping):
        return Estimate(None, f"{model.id}: no price for quality {quality!r}")
    for name in _TIER_PARAMS:
        price = _lookup(tiers, _value(model, params, name))
        if price is not None:
            break
    else:
        price = next(iter(tiers.values())) if len(tiers) == 1 else None
    number = _decimal(price)
    if number is None:
        return Estimate(None, f"{model.id}: cannot tell which price tier these parameters fall in")
    return Estimate(number * images)
