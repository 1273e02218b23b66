"""Prices come from the registry's pricing object, in Decimal, and unknown stays unknown."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from batchgen.core.models import ModelInfo
from batchgen.core.pricing import PriceList, estimate_cost

from .fakes import FLUX, GRID, KLING, LUMA, SORA


def cost(entry: dict[str, Any], **params: Any) -> Decimal | None:
    return estimate_cost(ModelInfo.from_api(entry), params).cost


def test_sora_per_second_standard_and_high_res() -> None:
    assert cost(SORA, seconds="8") == Decimal("2.40")
    assert cost(SORA, seconds="12", resolution="high") == Decimal("6.00")


def test_schema_default_fills_in_the_length() -> None:
    assert cost(SORA) == Decimal("1.20")  # seconds defaults to "4"
    assert cost(KLING) == Decimal("0.35")  # duration defaults to 5


def test_audio_rate_applies_when_audio_is_asked_for() -> None:
    assert cost(KLING, duration=10, generate_audio=True) == Decimal("1.40")


def test_rate_by_resolution_is_case_insensitive_and_reads_luma_seconds() -> None:
    assert cost(LUMA, duration="10s", resolution="1080p") == Decimal("4.0")
    assert cost(LUMA) == Decimal("0.5")


def test_per_image_and_grid() -> None:
    assert cost(FLUX) == Decimal("0.025")
    assert cost(GRID, resolution="4k") == Decimal("0.7891")
    assert cost(GRID) == Decimal("0.0624")


def test_unknown_is_none_with_a_reason() -> None:
    assert cost(LUMA, resolution="720p") is None
    estimate = estimate_cost(ModelInfo.from_api({**SORA, "pricing": {"method": "token"}}), {})
    assert estimate.cost is None and "token" in estimate.reason
    assert cost({**KLING, "request_schema": {}}, duration="auto") is None
    assert cost({**FLUX, "pricing": None}) is None


def test_price_list_caches_by_price_relevant_parameters() -> None:
    prices = PriceList(ModelInfo.from_api(SORA))
    for index in range(100):
        assert prices.estimate({"prompt": f"ox {index}", "seconds": "4"}).cost == Decimal("1.20")
    assert len(prices._cache) == 1


@pytest.mark.parametrize("seconds", [4, "4", "4s", 4.0])
def test_length_spellings(seconds: Any) -> None:
    assert cost(KLING, duration=seconds) == Decimal("0.28")
