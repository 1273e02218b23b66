"""What a user or the API chose (names, prompts, keys, paths) is printed as text: never read as rich markup or emoji
codes, so `[/x]` neither crashes a command nor vanishes, and `:smile:` stays `:smile:`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HOSTILE = "[/x] [bold]ox[/bold] :smile:"


def batchgen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchgen.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},  # a table row on one line
    )


def test_a_prompt_that_looks_like_markup_is_shown_as_it_is(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"model: openai-sora-2-pro\nparams: {{prompt: '{HOSTILE}', seconds: '4'}}\n", encoding="utf-8")
    result = batchgen("plan", str(manifest), "--emulate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert HOSTILE in result.stdout


def test_an_error_quoting_markup_is_one_clear_message(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("model: openai-sora-2-pro\nparams: {prompt: ox}\n'[/y] :smile:': 1\n", encoding="utf-8")
    result = batchgen("plan", str(manifest), "--offline", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "`[/y] :smile:`" in result.stderr and "Traceback" not in result.stderr
