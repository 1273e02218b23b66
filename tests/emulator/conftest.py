"""Fixtures for emulator tests: a running emulator per test, and an authorised httpx client on it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from batchgen.emulator import EmulatorConfig, RunningEmulator, running_emulator

from .clients import authed

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
