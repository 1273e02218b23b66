"""`batchgen plan`: expand, validate and price a manifest, and show its jobs; nothing is ever enqueued."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TextIO

import anyio
import typer
from rich.table import Table

from batchgen import errors
from batchgen.cli.app import app, stderr, stdout, styled, write_stdout
from batchgen.cli.options import BaseUrlOption, DbOption, settings
from batchgen.core.plan import Plan, job_json
from batchgen.engine.planning import make_plan

PLAN_ROWS_SHOWN = 40  # a 100,000-job table helps nobody; --json has every job


@app.command("plan")
def plan_command(
    manifest: Annotated[Path, typer.Argument(help="The manifest (YAML) to expand, validate and price.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole plan as JSON on stdout.")] = False,
    base_url: BaseUrlOption = None,
    emulate: Annotated[bool, typer.Option("--emulate", help="Plan against the built-in emulator.")] = False,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="Refuse (exit 2) when the estimate exceeds this many USD.")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Use only cached model entries; fetch nothing.")] = False,
    rows: Annotated[int, typer.Option("--rows", help="How many jobs the table shows.")] = PLAN_ROWS_SHOWN,
    db: DbOption = None,
) -> None:
    """Expand, validate and price a manifest, and show the jobs. Never enqueues anything."""
    resolved = settings(db=db, base_url=base_url)

    async def plan_at(where: str) -> Plan:
        return await make_plan(
            manifest,
            base_url=where,
            api_key=resolved.api_key,
            state_dir=resolved.model_cache(emulated=emulate),
            max_cost=max_cost,
            offline=offline,
        )

    try:
        if emulate:
            from batchgen.emulator import EmulatorConfig, running_emulator

            with running_emulator(EmulatorConfig()) as emulator:
                plan = anyio.run(plan_at, emulator.base_url)
        else:
            plan = anyio.run(plan_at, resolved.base_url)
    except errors.ManifestError as error:
        if as_json:
            problems = [{"where": p.where, "message": p.message, "hint": p.hint} for p in error.problems]
            _print_json({"valid": False, "problems": problems, "jobs": []})
        raise
    for warning in plan.warnings:
        stderr.print(styled("warning:", "yellow", f" {warning}"))
    if as_json:
        write_stdout(lambda out: write_plan_json(plan, out))
    else:
        _print_plan(plan, rows)
    plan.check()


def _print_json(data: Any) -> None:
    """Indented JSON on stdout, non-ASCII kept, dates as strings."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    write_stdout(lambda out: out.write(text + "\n"))


_ONE_LINE = json.JSONEncoder(ensure_ascii=False, default=str).encode  # C speed
_INDENTED = json.JSONEncoder(indent=2, ensure_ascii=False, default=str).encode  # pure Python: only when nested


def write_plan_json(plan: Plan, out: TextIO) -> None:
    """`json.dumps(plan.to_json(), indent=2, ensure_ascii=False, default=str)` and a newline, byte for byte, but
    written a job at a time: for a million jobs the whole text (340 MB) and its dicts took 3.8 GB and 33 s."""
    head = json.dumps({**plan.summary_json(), "jobs": []}, indent=2, ensure_ascii=False, default=str)
    if not plan.jobs:
        out.write(head + "\n")
        return
    out.write(head.removesuffix("[]\n}") + "[")
    separator = "\n"
    for job in plan.jobs:
        fields = ",\n".join(f"      {_ONE_LINE(name)}: {_nested(value, 3)}" for name, value in job_json(job).items())
        out.write(f"{separator}    {{\n{fields}\n    }}")
        separator = ",\n"
    out.write("\n  ]\n}\n")


def _nested(value: Any, depth: int) -> str:
    """`value` as json.dumps(indent=2) writes it `depth` levels deep."""
    if not isinstance(value, dict | list | tuple) or not value:
        return _ONE_LINE(value)
    pad = "  " * (depth + 1)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        fields = ",\n".join(f"{pad}{_ONE_LINE(key)}: {_nested(item, depth + 1)}" for key, item in value.items())
        return f"{{\n{fields}\n{'  ' * depth}}}"
    return _INDENTED(value).replace("\n", "\n" + "  " * depth)


def _print_plan(plan: Plan, shown: int) -> None:
    settings = plan.manifest.settings
    stdout.print(
        styled(
            plan.manifest.name,
            "bold",
            f": {len(plan.jobs)} job(s), concurrency {settings.concurrency}, output {settings.out_dir}",
        )
    )
    table = Table(show_edge=False, pad_edge=False)
    listed = plan.jobs[: max(shown, 0)]
    model_width = max((len(j.spec.model) for j in listed), default=5)
    table.add_column("key", no_wrap=True, min_width=16)
    table.add_column("model", no_wrap=True, min_width=model_width)
    # one line a job: the parameters give way (with an ellipsis) to the rest; --json has them whole
    room = stdout.width - 16 - model_width - 9 - 3 * 3  # the other columns and the separators between them
    table.add_column("parameters", no_wrap=True, overflow="ellipsis", max_width=max(20, room))
    table.add_column("est. cost", justify="right", no_wrap=True, min_width=9)
    for job in listed:
        cost = "unknown" if job.estimated_cost is None else _usd(Decimal(str(job.estimated_cost)))
        table.add_row(job.spec.key, job.spec.model, _describe_params(job.spec.params, job.spec.repeat), cost)
    if plan.jobs and shown > 0:
        stdout.print(table)
    hidden = len(plan.jobs) - max(shown, 0)
    if hidden > 0:
        stdout.print(f"... and {hidden} more job(s) not shown (use --rows N, or --json for all)")
    total = _usd(plan.total_cost_exact)
    if not plan.priced:
        total = f"at least {total} ({plan.unpriced_jobs} job(s) have no price)"
    budget = f" of a ${plan.budget:,.2f} budget" if plan.budget is not None else ""
    stdout.print(f"estimated total: {total}{budget}")
    if not plan.validated:
        stdout.print("validation against the model schemas was skipped for some jobs (see warnings)")


def _usd(amount: Decimal) -> str:
    """Dollars to the cent, or to a hundredth of a cent when cents would round a real price away ($0.025)."""
    if amount == amount.quantize(Decimal("0.01")):
        return f"${amount:,.2f}"
    return f"${amount.quantize(Decimal('0.0001')).normalize():,f}"


def _describe_params(params: Any, repeat: int) -> str:
    parts = [f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in params.items()]
    if repeat:
        parts.append(f"sample #{repeat + 1}")
    text = " ".join(parts)
    return text if len(text) <= 160 else text[:157] + "..."
