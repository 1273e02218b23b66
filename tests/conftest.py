"""Fixtures for every test: its own state directory (nothing leaks between tests or into ./state), and the run's
rules: Hypothesis replays the same examples every run, and under CI no test may skip.

Hypothesis profiles (HYPOTHESIS_PROFILE): `ci`, the default, is derandomised (the examples are fixed by each test's
source, so a run that passed once passes again) and keeps no example database; `long` draws fresh examples, 2,000
a test, and keeps the failures it finds in .hypothesis/ so the next long run replays them first.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.kit import in_ci

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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """Under CI a skipped test is a failed one: it did not run where it must (kit.require says why it skipped)."""
    report = yield
    assert isinstance(report, pytest.TestReport)
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test must run: {reason}"
    return report


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("BATCHGEN_STATE_DIR", str(state))
    monkeypatch.setenv("BATCHGEN_DB", str(state / "batchgen.db"))
    monkeypatch.delenv("OXEN_API_KEY", raising=False)
    monkeypatch.delenv("BATCHGEN_BASE_URL", raising=False)
    # Oxen's own auth file: an empty config dir, never the developer's ~/.config/oxen (its keys stay out of tests)
    oxen_config = tmp_path / "oxen-config"
    oxen_config.mkdir()
    monkeypatch.setenv("OXEN_CONFIG_DIR", str(oxen_config))
    yield state


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test (tests/kit_postgres.py)."""
    from tests.kit_postgres import fresh_database

    with fresh_database() as url:
        yield url
