"""Shared fixtures. Every test gets its own state directory, so nothing leaks between tests or into ./state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


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
