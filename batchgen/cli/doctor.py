"""`batchgen doctor`: one line per check of what a first real run needs (ok, warn, fail); exit 1 when one fails."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
import typer

from batchgen.cli.app import ExitCode, app, stderr, stdout, styled
from batchgen.cli.options import BaseUrlOption, DbOption, settings
from batchgen.engine.doctor import Check, Key, diagnose

MARK_STYLES = {"ok": "green", "warn": "yellow", "fail": "red"}


@app.command()
def doctor(
    manifest: Annotated[
        Path | None, typer.Argument(help="A manifest to check too: its models, its plan, the space its results need.")
    ] = None,
    db: DbOption = None,
    base_url: BaseUrlOption = None,
) -> None:
    """Check the key, the API, the manifest's models, the clock, the free space and the state database."""
    resolved = settings(db=db, base_url=base_url)
    key = Key(resolved.api_key, resolved.key_source, resolved.key_problem)
    checks: list[Check] = anyio.run(
        lambda: diagnose(
            base_url=resolved.base_url, key=key, db=resolved.db, state_dir=resolved.model_cache(emulated=False),
            manifest_path=manifest,
        )
    )  # fmt: skip
    for check in checks:
        stdout.print(styled(f"{check.mark:<4}", MARK_STYLES[check.mark], f" {check.name}: {check.message}"))
        for line in check.details:
            stdout.print(f"       {line}")
    failed = [c.name for c in checks if c.mark == "fail"]
    if failed:
        stderr.print(
            styled(f"{len(failed)} check(s) failed", "red", f" ({', '.join(failed)}): fix them, then run again")
        )
        raise SystemExit(ExitCode.FAILED_JOBS)
    warned = sum(c.mark == "warn" for c in checks)
    stderr.print("ready for a run" + (f" ({warned} warning(s))" if warned else ""))
