"""A whole batch through the CLI with a distinctive API key and hostile prompts: the key appears in no output and
no file, travels to no host but the API's, and no prompt escapes the output directory or runs in a spreadsheet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.emulator import Account, EmulatorConfig, Faults, running_emulator
from tests.kit import IMAGE_MODEL, assert_exactly_once, keys_sent_elsewhere, write_manifest
from tests.kit_faults import assert_fired
from tests.kit_processes import batchgen, parse_csv

pytestmark = pytest.mark.timeout(90)
KEY = "sk-oxen-DISTINCTIVE-8f3a1c97e5b24d06"
HOSTILE = [
    "../../etc/passwd",
    "/etc/shadow",
    "..",
    '=HYPERLINK("http://x","y")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,2)",
    "\tTAB=1+1",
    "a/b\\c:d*e?f<g>h|i",
    "ox",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def test_the_key_never_leaks_and_hostile_prompts_stay_inert(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, model=IMAGE_MODEL, prompts=HOSTILE, concurrency=4)
    state, out = tmp_path / "state", tmp_path / "out"
    db = state / "batchgen.db"
    config = EmulatorConfig(
        keys={KEY: Account(username="u")}, seed=2, duration_s=0.05, faults=Faults(result_host="localhost")
    )
    with running_emulator(config) as emu:
        results = [batchgen("-v", "run", manifest, "--db", db, "--base-url", emu.base_url, "--out", out, key=KEY)]
        assert results[0].returncode == 0, results[0].stderr
        for args in (
            ("export", "--db", db, "-o", tmp_path / "export.csv"),
            ("export", "--db", db, "-o", tmp_path / "export.jsonl"),
            ("export", "--db", db),
            ("report", "--db", db),
            ("status", "--db", db, "--json"),
            ("runs", "--db", db),
        ):
            results.append(batchgen("-v", *args, key=KEY))
            assert results[-1].returncode == 0, results[-1].stderr
        rows = assert_exactly_once(emu, db)

        # the Bearer header went to the API only; result files on another host were fetched without it
        assert_fired(emu, "result_host")  # downloads went to the other host, else the test proves nothing
        assert not keys_sent_elsewhere(emu)

    # the key is in no output and in no file the run left anywhere under this test's directory
    for result in results:
        assert KEY not in result.stdout + result.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert db in files and (out / "report.html") in files and (out / "results.csv") in files
    assert [p for p in files if KEY.encode() in p.read_bytes()] == []

    # every file is inside --out (or the state dir), whatever the prompt said
    expected_homes = (out.resolve(), state.resolve())
    strays = [
        p
        for p in files
        if not p.resolve().is_relative_to(expected_homes[0]) and not p.resolve().is_relative_to(expected_homes[1])
    ]
    assert sorted(p.name for p in strays) == ["batch.yaml", "export.csv", "export.jsonl"]
    for row in rows:
        assert Path(row.output_path or "").resolve().parent == out.resolve()

    # in the CSV a prompt a spreadsheet would run starts with a quote; in the JSONL it is exact
    by_prompt = {}
    for record in parse_csv((tmp_path / "export.csv").read_text(encoding="utf-8")):
        assert not [v for v in record.values() if v.startswith(FORMULA_STARTS) and not _is_number(v)], record
        by_prompt[record["prompt"]] = record
    for prompt in HOSTILE:
        shown = (
            "'" + prompt if prompt.lstrip().startswith(FORMULA_STARTS) or prompt.startswith(FORMULA_STARTS) else prompt
        )
        assert shown in by_prompt, (prompt, list(by_prompt))
    exact = [
        json.loads(line)["prompt"] for line in (tmp_path / "export.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(exact) == sorted(HOSTILE)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
