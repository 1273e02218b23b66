"""The command line: the only code that reads argv and the environment, prints, and exits.

    app.py          the typer app, the consoles, the exit codes (documented there), errors to messages, `main`
    options.py      the options every command spells the same way, the settings, the state database
    running.py      run, resume: progress, a clean stop on SIGINT/SIGTERM, the closing words and exit code
    progress_view.py  how progress looks: a live bar on a terminal, a plain line every 10 s elsewhere
    status.py       status: a run at a glance
    inspection.py   runs, cancel, unused, export, report
    export_part.py  the helper process of a split export (not a command: `export` starts it)
    serve.py        serve: the live gallery
    plan.py         plan
    emulator.py     emulator
    doctor.py       doctor

Each command module registers its commands on `app` when imported, and is imported only when one of its commands
is asked for (`app.COMMAND_MODULES`): a command pays for its own imports alone.
"""

from __future__ import annotations

from batchgen.cli.app import app, exit_code_for, main

__all__ = ["app", "exit_code_for", "main"]
