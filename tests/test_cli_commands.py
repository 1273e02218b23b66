"""The CLI imports a command's module only when the command is asked for (cli/app.py, COMMAND_MODULES): the table
must name every command, each with the module that registers it, or a command would be missing from `batchgen`."""

from __future__ import annotations

import importlib

import typer
from typer.testing import CliRunner

from batchgen.cli import app
from batchgen.cli.app import COMMAND_MODULES


def test_every_registered_command_is_in_the_table_with_its_own_module() -> None:
    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(module)
    registered = {
        (info.name or typer.main.get_command_name(info.callback.__name__)): info.callback.__module__
        for info in app.registered_commands
        if info.callback is not None
    }
    assert registered == COMMAND_MODULES


def test_help_lists_every_command_and_each_one_answers() -> None:
    runner = CliRunner()
    listing = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0, listing.output
    for name in COMMAND_MODULES:
        assert f" {name} " in listing.output
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (name, result.output)
    unknown = runner.invoke(app, ["stauts"])
    assert unknown.exit_code == 2 and "status" in unknown.output  # click's suggestion still sees every name
