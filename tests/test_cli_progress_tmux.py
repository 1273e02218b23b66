"""The progress bar as a user sees it: `batchgen run` in a real terminal (tmux), read back from the screen while
the emulator holds generations, so the picture changes only when the test releases them."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batchgen.emulator import EmulatorConfig, running_emulator
from tests.kit import IMAGE_MODEL, require, wait_for, write_manifest
from tests.kit_processes import REPO


@contextmanager
def terminal(tmp_path: Path, command: list[str], env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """`command` in a detached tmux session of its own (a private server socket), 120x24; yields (socket, session)
    and kills the server on leaving."""
    socket, session = f"batchgen-test-{tmp_path.name}", "run"
    line = " ".join(
        ["cd", shlex.quote(str(REPO)), "&&", "env", *(f"{k}={shlex.quote(v)}" for k, v in env.items())]
        + [shlex.quote(c) for c in command]
        + ["; echo EXITED $?; sleep 600"]
    )
    subprocess.run(
        ["tmux", "-L", socket, "new-session", "-d", "-s", session, "-x", "120", "-y", "24", line],
        check=True,
        timeout=30,
    )
    try:
        yield socket, session
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], timeout=30, check=False)


def screen(socket: str, session: str) -> str:
    return subprocess.run(
        ["tmux", "-L", socket, "capture-pane", "-p", "-t", session],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_the_progress_bar_follows_the_run_in_a_real_terminal(tmp_path: Path) -> None:
    require(shutil.which("tmux"), "tmux is not installed (apt-get install tmux; .ci/run installs it)")
    manifest = write_manifest(tmp_path, 6, model=IMAGE_MODEL, concurrency=3, extra="budget: 5.00\n")
    with running_emulator(EmulatorConfig(seed=3, duration_s=0.05, hold=True, keepalive_s=0.2)) as emu:
        command = [sys.executable, "-m", "batchgen.cli", "run", str(manifest), "--db", str(tmp_path / "db.sqlite")]
        command += ["--base-url", emu.base_url, "--out", str(tmp_path / "out")]
        env = {"OXEN_API_KEY": emu.api_key, "TERM": "xterm-256color", "PATH": "/usr/bin:/bin"}
        with terminal(tmp_path, command, env) as (socket, session):

            def shows(*needles: str) -> bool:
                text = screen(socket, session)
                return all(n in text for n in needles)

            wait_for(lambda: len(emu.held) == 3, timeout=60, what="three generations running")
            # the three sent show as queued (the stream announces completions only), the rest as pending
            wait_for(lambda: shows("0/6", "0%", "queued 3", "pending 3", "budget $5.00"), timeout=30, what="0/6")
            wait_for(lambda: shows("stream live"), timeout=30, what="the stream shown live")
            emu.release(3)
            wait_for(lambda: shows("3/6", "50%", "succeeded 3"), timeout=30, what="the bar at 3/6")
            before = screen(socket, session)
            emu.release()
            wait_for(lambda: shows("EXITED 0"), timeout=60, what="the run to end")
            final = screen(socket, session)
    assert "━" in before  # a bar, drawn on the terminal, not a log line
    assert "6/6" in final and "100%" in final and "succeeded 6" in final
    assert "run 'batch': 6 succeeded" in final
    assert "Traceback" not in final
