"""`batchgen status`: a run at a glance, at any size (engine/overview.py). A module of its own, so that the
command a user runs most imports only what it shows (not the report's or the HTTP client's code): it has a 1 s
budget at a million jobs, Python's start included. A SQLite file is read through the standard library's driver
(engine/glance.py), without SQLAlchemy; anything glance cannot read goes to the store, as every command does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from batchgen.cli.app import app, stderr, stdout, styled
from batchgen.cli.options import DbOption, RunArgument, existing_store, settings
from batchgen.core.locations import is_database_url
from batchgen.engine.glance import glance


@app.command()
def status(
    run_name: RunArgument = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    """Counts per state, cost and where the files are, for one run."""
    location = settings(db=db).db
    seen = None if isinstance(location, str) and is_database_url(location) else glance(Path(location), run_name)
    if seen is not None:
        info, overview, runners = seen.run, seen.overview, seen.runners
    else:  # PostgreSQL, an older schema, no such run, ...: the store migrates, or says what is wrong
        with existing_store(db) as store:
            info = store.get_run(run_name)
            overview = store.overview(info.id)
            runners = store.runners(info.id)
    counts, estimated, money, unused = overview.counts, overview.estimated_total, overview.money, overview.unused
    data = {
        "run": info.name,
        "jobs": sum(counts.values()),
        "counts": {s.value: n for s, n in counts.items()},
        "estimated_cost": round(estimated, 6),
        "cost_so_far": round(money.spent, 6),
        "spent": round(money.spent, 6),
        "reserved": round(money.reserved, 6),
        "budget": money.budget,
        "left": None if money.left is None else round(money.left, 6),
        "unused_generations": [
            {
                "generation_id": u.generation_id,
                "status": u.remote_status,
                "cost": u.cost,
                "estimated_cost": u.estimated_cost,
            }
            for u in unused
        ],
        "out_dir": info.out_dir,
        "base_url": info.base_url,
        "running": info.owner is not None,
        "stream": info.stream_mode if info.owner is not None else None,
        "stream_note": info.stream_note if info.owner is not None else None,
        "runners": [
            {
                "host": r.host,
                "pid": r.pid,
                "live": r.live,
                "last_heartbeat": r.heartbeat_at.isoformat(),
                "jobs_held": r.jobs_held,
                "ended": r.end_reason,
            }
            for r in runners
        ],
    }
    if as_json:
        stdout.print_json(json.dumps(data))
        return
    table = Table(title=f"run {info.name}", show_header=False)
    for status_value, n in counts.items():
        table.add_row(status_value.value, str(n))
    table.add_row("spent", f"${money.spent:.2f} (estimate for every job: ~${estimated:.2f})")
    table.add_row("reserved", f"${money.reserved:.2f} in flight")
    if money.budget is not None:
        spent_of = f"spent ${money.spent:.2f} of ${money.budget:.2f} budget"
        table.add_row("budget", f"{spent_of} (${money.reserved:.2f} reserved, ${money.left or 0.0:.2f} left)")
    table.add_row("files", info.out_dir)
    for r in [r for r in runners if r.live]:
        table.add_row(
            "runner", f"process {r.pid} on {r.host}: {r.jobs_held} job(s) held, heartbeat {r.heartbeat_at:%H:%M:%S} UTC"
        )
    if info.owner is not None and info.stream_mode:
        table.add_row("stream", STREAM_MODES.get(info.stream_mode, info.stream_mode) + _because(info.stream_note))
    stdout.print(table)
    if unused:
        lead = f"{len(unused)} generation(s) of this run are paid for (or running) but no job uses them"
        stderr.print(
            styled(
                f"{lead} (${money.unused_cost:.2f})",
                "yellow",
                f": `batchgen unused {info.name} --download` fetches them",
            )
        )


STREAM_MODES = {
    "live": "live: completions arrive as events",
    "unproven": "connected, nothing delivered yet: polling until it does",
    "buffered": "buffered (a proxy holds it back): polling, probing the stream again later",
    "connecting": "connecting: polling meanwhile",
    "polling": "off (--poll-only): polling",
}


def _because(note: str | None) -> str:
    return f" ({note})" if note else ""
