"""Export: one flat row per job, as CSV (for spreadsheets and pandas) or JSONL (exact values).

The column order is stable and documented by `export_columns`:

    job_key, run, model, prompt,
    <one column per template variable and parameter, union across rows, first-seen order>,
    repeat, status, generation_id, result_url, output_path, sha256, bytes, estimated_cost, cost,
    error_class, error, attempts, enqueued_at, started_at, completed_at, queue_seconds, run_seconds

A variable and a parameter with the same name share one column, and the parameter (what was sent and billed)
wins. An axis whose name clashes with a fixed column is exported as `param.<name>`.

Usage (the runner writes the CSV at the end of every run; a partial run exports just as well):

    with open(path, "w", encoding="utf-8", newline="") as out:
        write_csv(rows, out)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from batchgen.core.jobs import JobRow

__all__ = [
    "HEAD_COLUMNS",
    "TAIL_COLUMNS",
    "cell_text",
    "export_columns",
    "export_records",
    "neutralise",
    "write_csv",
    "write_jsonl",
]

HEAD_COLUMNS = ("job_key", "run", "model", "prompt")
TAIL_COLUMNS = (
    "repeat",
    "status",
    "generation_id",
    "result_url",
    "output_path",
    "sha256",
    "bytes",
    "estimated_cost",  # next to cost, so the two compare at a glance
    "cost",
    "error_class",  # the short machine class first, then the free-text message
    "error",
    "attempts",
    "enqueued_at",
    "started_at",
    "completed_at",
    "queue_seconds",  # started_at - enqueued_at: waiting for a slot at the provider
    "run_seconds",  # completed_at - started_at: generating
    "downloaded_by",  # the host whose output directory holds the file (runners on several machines)
)
_FIXED = frozenset(HEAD_COLUMNS + TAIL_COLUMNS)
AXIS_PREFIX = "param."

# A spreadsheet runs a cell as a formula when it starts with one of these (after leading spaces), or with a
# tab or carriage return. OWASP "CSV injection".
_FORMULA_STARTS = frozenset("=+-@")
_CONTROL_STARTS = frozenset("\t\r")


def _axis_column(name: str) -> str:
    return AXIS_PREFIX + name if name in _FIXED else name


def _axis_items(row: JobRow) -> Iterable[tuple[str, Any]]:
    """A row's variables then parameters (minus prompt), a parameter overriding a same-named variable."""
    merged: dict[str, Any] = {k: v for k, v in row.variables.items() if k != "prompt"}
    for name, value in row.params.items():
        if name != "prompt":
            merged[name] = value
    return merged.items()


def export_columns(rows: Iterable[JobRow]) -> list[str]:
    """The column names, in order: fixed head, then every variable/parameter seen (first-seen), then fixed tail."""
    axes: dict[str, None] = {}
    for row in rows:
        for name, _ in _axis_items(row):
            axes.setdefault(_axis_column(name), None)
    return [*HEAD_COLUMNS, *axes, *TAIL_COLUMNS]


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        return str(value)
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)  # naive = UTC
    return moment.isoformat().replace("+00:00", "Z")


def _seconds(start: Any, end: Any) -> float | None:
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        return None
    aware = [t.replace(tzinfo=UTC) if t.tzinfo is None else t for t in (start, end)]
    return round((aware[1] - aware[0]).total_seconds(), 3)


def export_records(rows: Iterable[JobRow]) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and one dict per row holding exact values: JSON types for axes, ISO `...Z` strings for times."""
    materialised = list(rows)
    columns = export_columns(materialised)
    records: list[dict[str, Any]] = []
    for row in materialised:
        record: dict[str, Any] = dict.fromkeys(columns)
        record.update(job_key=row.job_key, run=row.run, model=row.model, prompt=row.prompt)
        for name, value in _axis_items(row):
            record[_axis_column(name)] = value
        record.update(
            repeat=row.repeat,
            status=str(row.status),
            generation_id=row.generation_id,
            result_url=row.result_url,
            output_path=row.output_path,
            sha256=row.sha256,
            bytes=row.bytes,
            estimated_cost=row.estimated_cost,
            cost=row.cost,
            error_class=row.error_class,
            error=row.error,
            attempts=row.attempts,
            enqueued_at=_iso(row.enqueued_at),
            started_at=_iso(row.started_at),
            completed_at=_iso(row.completed_at),
            queue_seconds=_seconds(row.enqueued_at, row.started_at),
            run_seconds=_seconds(row.started_at, row.completed_at),
            downloaded_by=row.downloaded_by,
        )
        records.append(record)
    return columns, records


def neutralise(text: str) -> str:
    """Prefix a single quote to text a spreadsheet would run as a formula; other text is returned unchanged."""
    if text[:1] in _CONTROL_STARTS or text.lstrip()[:1] in _FORMULA_STARTS:
        return "'" + text
    return text


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise(value)  # text may come from a hostile prompt or server; numbers we wrote are safe
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def write_csv(rows: Iterable[JobRow], out: TextIO) -> int:
    """Write a header and one CSV row per job to `out` (open it with newline=""); return the number of rows.

    Text cells a spreadsheet would run as formulas get a leading `'`; non-string parameter values are compact JSON.
    """
    columns, records = export_records(rows)
    writer = csv.writer(out)
    writer.writerow([neutralise(c) for c in columns])
    for record in records:
        writer.writerow([_csv_cell(record[c]) for c in columns])
    return len(records)


def write_jsonl(rows: Iterable[JobRow], out: TextIO) -> int:
    """Write one JSON object per line (keys in column order, exact values, nothing neutralised); return the count."""
    _, records = export_records(rows)
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return len(records)


def cell_text(value: Any) -> str:
    """How a parameter value reads in a cell or label: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
