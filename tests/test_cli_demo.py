"""README command (1), end to end through the real console entry: the demo on the emulator, then the
commands a user runs next. One subprocess per command, exit codes and outputs checked."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.api import run_async
from batchgen.cli import exit_code_for
from batchgen.emulator import EmulatorConfig, running_emulator
from batchgen.engine.client import RetryPolicy
from batchgen.errors import ApiUnreachableError
from tests.kit_processes import assert_clean_user_error
from tests.kit_processes import batchgen as batchgen_process

ROOT = Path(__file__).resolve().parents[1]


def batchgen(*args: str, cwd: Path, env_db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchgen.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "BATCHGEN_DB": str(env_db), "HOME": str(cwd)},
    )


@pytest.mark.timeout(180)
def test_demo_runs_end_to_end_and_every_command_reads_it(tmp_path: Path) -> None:
    db = tmp_path / "state" / "batchgen.db"
    out = tmp_path / "out"
    # the README's demo, with the emulated API five times faster than the README's (a test needs no watching)
    ran = batchgen(
        "run", str(ROOT / "manifests" / "demo.yaml"), "--emulate", "--time-scale", "0.002", "--out", str(out),
        cwd=tmp_path, env_db=db,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    csv_path = Path(ran.stdout.strip().splitlines()[-1])
    assert csv_path == out / "results.csv"
    rows = list(csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 9 and {r["status"] for r in rows} == {"succeeded"}
    assert all((tmp_path / r["output_path"]).is_file() or Path(r["output_path"]).is_file() for r in rows)
    assert "Traceback" not in ran.stderr

    status = batchgen("status", "--json", cwd=tmp_path, env_db=db)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["run"] == "demo" and data["counts"] == {"succeeded": 9} and data["running"] is False

    again = batchgen(
        "run", str(ROOT / "manifests" / "demo.yaml"), "--emulate", "--out", str(out), cwd=tmp_path, env_db=db
    )
    assert again.returncode == 0 and "9 succeeded" in again.stderr  # nothing redone: the run was already complete

    listed = batchgen("runs", cwd=tmp_path, env_db=db)
    assert listed.returncode == 0 and "demo" in listed.stdout

    report = tmp_path / "report.html"
    made = batchgen("report", "-o", str(report), cwd=tmp_path, env_db=db)
    assert made.returncode == 0, made.stderr
    assert report.read_text(encoding="utf-8").count("<video") == 8


def test_missing_database_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    result = batchgen("status", cwd=tmp_path, env_db=tmp_path / "nowhere" / "x.db")
    assert result.returncode == 2
    assert "no state database" in result.stderr and "Traceback" not in result.stderr


async def test_an_unreachable_api_is_a_clear_error_with_exit_code_3_having_sent_nothing(tmp_path: Path) -> None:
    # through the Python API with retries that do not wait: the CLI's own would spend ~10 s retrying a refused port
    with socket.socket() as sock:  # a port nobody listens on: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = tmp_path / "state" / "batchgen.db"
    with pytest.raises(ApiUnreachableError, match=re.escape(f"cannot reach http://127.0.0.1:{port}")) as caught:
        await run_async(
            ROOT / "manifests" / "demo.yaml", db=db, base_url=f"http://127.0.0.1:{port}", api_key="k", out=tmp_path / "out",
            retry=RetryPolicy(attempts=2, initial=0, maximum=0),
        )  # fmt: skip
    assert exit_code_for(caught.value) == 3
    with contextlib.closing(sqlite3.connect(db)) as conn:  # the jobs were recorded, none was sent
        assert conn.execute("SELECT DISTINCT status FROM jobs").fetchall() == [("pending",)]


def test_an_api_error_exits_3_with_its_message_and_no_traceback(tmp_path: Path) -> None:
    # the CLI's path for every API error (unreachable, or a refused key as here): its message, exit code 3
    with running_emulator(EmulatorConfig(seed=1, duration_s=0)) as emu:
        result = batchgen_process(
            "run", ROOT / "manifests" / "demo.yaml", "--db", tmp_path / "state" / "batchgen.db",
            "--base-url", emu.base_url, "--out", tmp_path / "out", key="not-the-key",
        )  # fmt: skip
        assert emu.ledger.enqueues == []
    assert_clean_user_error(result, 3, "OXEN_API_KEY")
