"""The test kit's own promises: a test that cannot run skips only outside CI, waits are bounded, and a process
that dies first ends the wait at once with what it printed."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.kit import require, wait_for, wait_for_async


def test_require_skips_outside_ci_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    require(True, "present")  # nothing happens
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        require(None, "no chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must provide this, and does not: no chromium"):
        require(None, "no chromium")


def test_wait_for_returns_the_value_and_fails_when_time_is_up() -> None:
    assert wait_for(lambda: [1], what="a list") == [1]
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for nothing"):
        wait_for(lambda: None, timeout=0.05, what="nothing")


def test_wait_for_stops_as_soon_as_the_process_exits() -> None:
    command = [sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        begun = time.monotonic()
        with pytest.raises(AssertionError, match=r"(?s)exited \(3\) before the moon:.*bye"):
            wait_for(lambda: False, timeout=60, what="the moon", process=process)
    assert time.monotonic() - begun < 30  # not the 60 s it was given: the process ended the wait


async def test_wait_for_async_is_bounded() -> None:
    assert await wait_for_async(lambda: "ok") == "ok"
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s"):
        await wait_for_async(lambda: 0, within=0.05)
