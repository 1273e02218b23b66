"""`batchgen plan` as a user runs it: exit codes, located messages on stderr, JSON on stdout, no tracebacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .fakes import seed_cache, write

DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo.yaml"


def plan(*args: str, state: Path, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BATCHGEN_STATE_DIR": str(state), "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "batchgen.cli", "plan", *args], capture_output=True, text=True, env=env, timeout=60
    )


MALFORMED = {
    "syntax": ("model: m\nparams: {prompt: [ox}\n", ":2: YAML syntax error"),
    "unknown key": ("model: openai-sora-2-pro\nparams: {prompt: ox}\nconcurency: 2\n", ":3: unknown key `concurency`"),
    "seconds as a number": ("model: openai-sora-2-pro\nparams:\n  prompt: ox\n  seconds: 4\n", ":4: `seconds` must be"),
    "unknown variable": ("model: openai-sora-2-pro\nparams: {prompt: 'A {animal}'}\n", ":2: `prompt` uses `{animal}`"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_manifests_exit_2_with_a_located_message(name: str, tmp_path: Path, isolated_state: Path) -> None:
    text, expected = MALFORMED[name]
    seed_cache(isolated_state)
    result = plan(str(write(tmp_path, text)), "--offline", state=isolated_state)
    assert result.returncode == 2, result.stderr
    assert f"{tmp_path}/m.yaml{expected}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_manifest_exits_2(tmp_path: Path, isolated_state: Path) -> None:
    result = plan(str(tmp_path / "nope.yaml"), "--offline", state=isolated_state)
    assert result.returncode == 2 and "no such manifest file" in result.stderr


def test_demo_plan_from_the_cache_as_a_table_and_as_json(isolated_state: Path) -> None:
    seed_cache(isolated_state)
    table = plan(str(DEMO), "--offline", state=isolated_state)
    assert table.returncode == 0, table.stderr
    assert "9 job(s)" in table.stdout and "estimated total: $9.625 of a $15.00 budget" in table.stdout
    result = plan(str(DEMO), "--offline", "--json", state=isolated_state)
    data = json.loads(result.stdout)
    assert data["job_count"] == 9 and data["valid"] and data["priced"] and data["total_cost"] == 9.625
    assert len({job["key"] for job in data["jobs"]}) == 9


def test_the_plan_table_keeps_one_line_per_job_on_a_narrow_terminal(isolated_state: Path) -> None:
    seed_cache(isolated_state)
    table = plan(str(DEMO), "--offline", state=isolated_state, columns=100)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if re.match(r"^[0-9a-f]{16} ", line)]
    assert len(rows) == 9, table.stdout  # one line each: the parameters are cut with an ellipsis, not folded
    assert all(len(line) <= 100 for line in table.stdout.splitlines())
    assert any("…" in line for line in rows)


def test_max_cost_refuses_with_exit_2(isolated_state: Path) -> None:
    seed_cache(isolated_state)
    result = plan(str(DEMO), "--offline", "--max-cost", "5", state=isolated_state)
    assert result.returncode == 2 and "exceeds the budget of $5.00" in result.stderr


def test_no_registry_and_no_cache_still_expands_and_says_so(isolated_state: Path) -> None:
    result = plan(str(DEMO), "--offline", state=isolated_state)
    assert result.returncode == 0, result.stderr
    assert "9 job(s)" in result.stdout and "not validated and not priced" in result.stderr


def test_emulate_plans_against_the_built_in_emulator(isolated_state: Path) -> None:
    result = plan(str(DEMO), "--emulate", "--json", state=isolated_state)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["validated"] is True
    assert not (isolated_state / "models").exists()  # placeholder prices stay out of the real cache
