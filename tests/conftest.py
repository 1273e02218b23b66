"""Fixtures for every test: its own state directory (nothing leaks between tests or into ./state); and Hypothesis
replays the same examples every run.

Hypothesis profiles (HYPOTHESIS_PROFILE): `ci`, the default, is derandomised (the examples are fixed by each test's
source, so a run that passed once passes again) and keeps no example database; `long` draws fresh examples, 2,000
a test, and keeps the failures it finds in .hypothesis/ so the next long run replays them first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# too_slow judges generation speed by the wall clock: a busy machine is not a failing test
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=100,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("BATCHGEN_STATE_DIR", str(state))
    monkeypatch.setenv("BATCHGEN_DB", str(state / "batchgen.db"))
    monkeypatch.delenv("OXEN_API_KEY", raising=False)
    monkeypatch.delenv("BATCHGEN_BASE_URL", raising=False)
    yield state


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
