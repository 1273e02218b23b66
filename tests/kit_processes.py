"""batchgen as a user runs it: a separate process, against an emulator in the test process, read back from the
database as another process would. Every process started here is reaped, whatever the test does."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def env_with(key: str | None, **extra: str) -> dict[str, str]:
    """This process's environment with OXEN_API_KEY set to `key` (or removed), a wide terminal, and `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "OXEN_API_KEY"}
    if key is not None:
        env["OXEN_API_KEY"] = key
    return {**env, "COLUMNS": "200", **extra}


def batchgen_cmd(*args: str | Path) -> list[str]:
    """`batchgen ARGS` exactly as the console script runs it."""
    return [sys.executable, "-m", "batchgen.cli", *map(str, args)]


def entry_cmd(*args: str | Path) -> list[str]:
    """tests/reliability/runner_entry.py: `batchgen run`/`resume` with the runner tests' fast timings."""
    return [sys.executable, "-m", "tests.reliability.runner_entry", *map(str, args)]


def batchgen(*args: str | Path, key: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `batchgen ARGS` to its end (bounded by `timeout`) and return what it printed and its exit code."""
    return subprocess.run(
        batchgen_cmd(*args), capture_output=True, text=True, env=env_with(key), timeout=timeout, cwd=REPO
    )


@contextlib.contextmanager
def started(command: list[str], *, key: str | None) -> Iterator[subprocess.Popen[str]]:
    """`command` as a running process (cwd: the repository); on leaving, it is continued if stopped, killed if still
    running, and reaped with its pipes closed. An unreaped Popen is a ResourceWarning, which (filterwarnings=error)
    fails whichever test runs next."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with(key), cwd=REPO
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        process.communicate(timeout=30)


def job_statuses(db: Path) -> dict[str, int]:
    """Counts per job status, read straight from the database (as another process would)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as raw:
        return dict(raw.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


def run_row(db: Path) -> Mapping[str, Any]:
    """The run's row of the database (one run per database in these tests)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as raw:
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
