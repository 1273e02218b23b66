"""Fixtures for emulator tests: a running emulator per test, and an authorised httpx client on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from batchgen.emulator import EmulatorConfig, RunningEmulator, running_emulator

FAST = 0.0005  # time_scale: sora-2-pro's 5-15 min become 0.15-0.45 s


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    """A default emulator, fast."""
    with running_emulator(EmulatorConfig(seed=1, time_scale=FAST)) as running:
        yield running


@pytest.fixture
def client(emu: RunningEmulator) -> Iterator[httpx.Client]:
    """An httpx client on `emu` with its key."""
    with authed(emu) as c:
        yield c


def authed(emu: RunningEmulator, key: str | None = None) -> httpx.Client:
    """A client with a Bearer key (the emulator's by default)."""
    headers = {"Authorization": f"Bearer {key or emu.api_key}"}
    return httpx.Client(base_url=emu.base_url, headers=headers, timeout=10.0)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll `predicate` until it is truthy (returns its value) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def wait_terminal(client: httpx.Client, generation_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll the status endpoint until the row is terminal; returns the row."""

    def done() -> dict[str, Any] | None:
        row: dict[str, Any] = client.get(f"/api/ai/queue/{generation_id}").json()
        return row if row["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_until(done, timeout)
    return result


SORA = {"model": "openai-sora-2-pro", "prompt": "An ox in a Porsche"}
FLUX = {"model": "flux-1-dev", "prompt": "A red ox"}
