"""`batchgen doctor` over real loopback HTTP against the emulator: one line per check, exit 1 when one fails."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from click.testing import Result
from typer.testing import CliRunner

from batchgen.cli import app
from batchgen.emulator import EmulatorConfig, Faults, RunningEmulator, running_emulator
from tests.kit import run_against, write_manifest
from tests.test_credentials import auth_file


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(seed=1, time_scale=0.0005)) as running:
        yield running


def doctor(tmp_path: Path, emu: RunningEmulator, *args: str, key: str | None = None, db: Path | None = None) -> Result:
    """`batchgen doctor ARGS --base-url EMU --db DB`; the key from OXEN_API_KEY when given, else from an auth file
    holding the emulator's key for its host[:port]."""
    host = emu.base_url.split("://", 1)[1].rstrip("/")
    auth_file(tmp_path / "oxen", (host, emu.api_key))
    env = {"OXEN_CONFIG_DIR": str(tmp_path / "oxen"), "OXEN_API_KEY": key, "COLUMNS": "300"}
    database = db or tmp_path / "state" / "fresh.db"
    result = CliRunner().invoke(app, ["doctor", *args, "--base-url", emu.base_url, "--db", str(database)], env=env)
    assert emu.api_key not in result.output  # the key itself is never shown
    return result


def line(result: Result, name: str) -> str:
    """The line of the check called `name`."""
    found = [row for row in result.stdout.splitlines() if f" {name}: " in row]
    assert len(found) == 1, result.output
    return found[0]


def manifest_in(tmp_path: Path) -> Path:
    return write_manifest(tmp_path, 2, extra=f"output: {tmp_path / 'out'}\n")


def test_all_is_well_against_a_healthy_api_with_the_key_from_the_auth_file(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    result = doctor(tmp_path, emu, str(manifest_in(tmp_path)))
    assert result.exit_code == 0, result.output
    assert line(result, "API key").startswith("ok") and "the auth file" in line(result, "API key")
    assert line(result, "API").startswith("ok")
    assert line(result, "models").startswith("ok") and "openai-sora-2-pro" in line(result, "models")
    assert line(result, "manifest").startswith("ok") and "2 job(s)" in line(result, "manifest")
    assert line(result, "clock").startswith("ok")
    assert line(result, "free space").startswith("ok") and "20 MB" in line(result, "free space")
    assert "will be created at" in line(result, "state database")
    assert " fail " not in result.stdout


def test_a_refused_key_fails_and_says_so(tmp_path: Path, emu: RunningEmulator) -> None:
    result = doctor(tmp_path, emu, key="not-the-key")
    assert result.exit_code == 1, result.output
    assert line(result, "API key") == "ok   API key: from OXEN_API_KEY"
    assert line(result, "API").startswith("fail") and "refused the key from OXEN_API_KEY" in line(result, "API")
    assert "not-the-key" not in result.output


def test_no_key_at_all_says_how_to_add_one(tmp_path: Path, emu: RunningEmulator) -> None:
    result = CliRunner().invoke(
        app,
        ["doctor", "--base-url", emu.base_url, "--db", str(tmp_path / "x.db")],
        env={"OXEN_CONFIG_DIR": str(tmp_path / "nothing"), "OXEN_API_KEY": None},
    )
    assert result.exit_code == 1
    assert "no API key: set OXEN_API_KEY or run `oxen config --auth" in line(result, "API key")


def test_an_unknown_model_fails_naming_it(tmp_path: Path, emu: RunningEmulator) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("model: no-such-model\nparams: {prompt: ox}\n", encoding="utf-8")
    result = doctor(tmp_path, emu, str(manifest))
    assert result.exit_code == 1, result.output
    assert line(result, "models").startswith("fail") and "no-such-model" in line(result, "models")


def test_a_manifest_error_is_listed_as_plan_lists_it(tmp_path: Path, emu: RunningEmulator) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("model: openai-sora-2-pro\nparams: {prompt: ox}\nbogus: 1\n", encoding="utf-8")
    result = doctor(tmp_path, emu, str(manifest))
    assert result.exit_code == 1, result.output
    assert line(result, "manifest").startswith("fail")
    assert f"{manifest}:3" in result.stdout


def test_a_server_clock_two_minutes_ahead_is_a_warning(tmp_path: Path) -> None:
    with running_emulator(EmulatorConfig(seed=1, faults=Faults(clock_offset_s=120))) as skewed:
        result = doctor(tmp_path, skewed)
    assert result.exit_code == 0, result.output
    clock = line(result, "clock")
    assert clock.startswith("warn") and re.search(r"clock is 1(19|20|21) s ahead of this machine's", clock), clock


def test_an_existing_database_with_an_unknown_job_is_mentioned(tmp_path: Path, emu: RunningEmulator) -> None:
    db = tmp_path / "state" / "batchgen.db"
    anyio.run(lambda: run_against(emu, manifest_in(tmp_path), tmp_path, db=db))
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        raw.execute("UPDATE jobs SET status = 'unknown' WHERE id = (SELECT min(id) FROM jobs)")
    result = doctor(tmp_path, emu, db=db)
    assert result.exit_code == 0, result.output
    assert line(result, "state database").startswith("warn") and "1 run(s)" in line(result, "state database")
    assert "run batch: 1 job(s) unknown" in result.stdout and "--resubmit-unknown" in result.stdout


def test_an_unreachable_api_fails_with_its_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["doctor", "--base-url", "http://127.0.0.1:9", "--db", str(tmp_path / "x.db")],
        env={"OXEN_API_KEY": "k", "OXEN_CONFIG_DIR": str(tmp_path)},
    )
    assert result.exit_code == 1
    assert line(result, "API").startswith("fail") and "http://127.0.0.1:9 does not answer" in line(result, "API")
