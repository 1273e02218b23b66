"""Reliability test kit: batchgen as a user runs it (a subprocess), against an emulator in the test process."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from batchgen.emulator import RunningEmulator

ENTRY = Path(__file__).with_name("runner_entry.py")
REPO = Path(__file__).resolve().parents[2]


def image_manifest(directory: Path, prompts: Sequence[str], *, repeat: int = 1, concurrency: int = 8) -> Path:
    """A flux-1-dev manifest (small PNGs, quick on the emulator); prompts are written as JSON strings."""
    path = directory / "batch.yaml"
    path.write_text(
        f"""name: batch
model: flux-1-dev
params:
  aspect_ratio: "1:1"
matrix:
  prompt: {json.dumps(list(prompts))}
repeat: {repeat}
concurrency: {concurrency}
""",
        encoding="utf-8",
    )
    return path


def env_with(key: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OXEN_API_KEY"}
    if key is not None:
        env["OXEN_API_KEY"] = key
    return {**env, "COLUMNS": "200", **extra}


def batchgen_cmd(*args: str | Path) -> list[str]:
    """`batchgen ARGS` exactly as the console script runs it."""
    return [sys.executable, "-m", "batchgen.cli", *map(str, args)]


def batchgen(*args: str | Path, key: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        batchgen_cmd(*args), capture_output=True, text=True, env=env_with(key), timeout=timeout, cwd=REPO
    )


def start_entry(*args: str | Path, key: str) -> subprocess.Popen[str]:
    """Start tests/reliability/runner_entry.py (fast timings) as its own process."""
    return subprocess.Popen(
        [sys.executable, str(ENTRY), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with(key),
        cwd=REPO,
    )


def wait_for(
    condition: Callable[[], bool], *, timeout: float, what: str, process: subprocess.Popen[str] | None = None
) -> None:
    """Poll `condition` every 5 ms until it holds; fail after `timeout` s or when `process` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the process exited ({process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def job_statuses(db: Path) -> dict[str, int]:
    """Counts per job status, read straight from the database (as another process would)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as raw:
        return dict(raw.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


def run_row(db: Path) -> Mapping[str, Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as raw:
        raw.row_factory = sqlite3.Row
        return dict(raw.execute("SELECT * FROM runs").fetchone())


def exported_csv(db: Path, destination: Path) -> list[dict[str, str]]:
    """`batchgen export --db DB -o DESTINATION`, read back with the csv module."""
    result = batchgen("export", "--db", db, "-o", destination)
    assert result.returncode == 0, result.stderr
    with destination.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def assert_clean_user_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """A user-facing failure: the documented exit code, the words that say what to do, and no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output and "internal error" not in output, output
    for needle in needles:
        assert needle in output, f"{needle!r} not in:\n{output}"


def downloads_with_key_elsewhere(emu: RunningEmulator) -> list[Any]:
    """Downloads that carried the Authorization header to a host other than the API's (127.0.0.1)."""
    return [d for d in emu.ledger.downloads if d.authorized and d.host.split(":")[0] != "127.0.0.1"]
