"""Help texts read as written: a `[default: ...]` in a help string was taken for rich markup and vanished, leaving
"Run name ." behind."""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

import batchgen.cli as cli_app


def test_no_help_text_has_a_stray_space_before_a_full_stop() -> None:
    command = typer.main.get_command(cli_app.app)
    names = sorted(getattr(command, "commands", {}))
    assert "resume" in names and "plan" in names
    runner = CliRunner()
    for args in [["--help"], *([name, "--help"] for name in names)]:
        result = runner.invoke(cli_app.app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, (args, result.output)
        assert not re.search(r"\w \.(\s|$)", result.output), (args, result.output)
    resume = runner.invoke(cli_app.app, ["resume", "--help"], env={"COLUMNS": "200"}).output
    assert "Run name (default: the latest)." in resume
