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

At dataset scale the rows are never all held: the columns come from a first pass over each row's axis names
(`export_columns_of`, fed by `row_axis_names`), then the rows stream through `write_csv(rows, out, columns)` one
at a time.
"""

from __future__ import annotations

import csv
import json
import math
import string
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from batchgen.core.jobs import JobRow

__all__ = [
    "HEAD_COLUMNS",
    "TAIL_COLUMNS",
    "MissingColumnError",
    "cell_text",
    "export_columns",
    "export_columns_of",
    "export_record",
    "export_records",
    "neutralise",
    "row_axis_names",
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
_RISKY_STARTS = _FORMULA_STARTS | _CONTROL_STARTS  # or any space, which lstrip() would skip
# First characters that make text safe as it is (letters, digits, most punctuation): one set look-up per cell
_SAFE_STARTS = frozenset(string.ascii_letters + string.digits + "!\"#$%&'()*,./:;<>?[\\]^_`{|}~")


class MissingColumnError(ValueError):
    """A row has a variable or parameter the columns given to a writer lack (they came from a guess)."""


def _axis_column(name: str) -> str:
    return AXIS_PREFIX + name if name in _FIXED else name


def _axis_items(row: JobRow) -> Iterable[tuple[str, Any]]:
    """A row's variables then parameters (minus prompt), a parameter overriding a same-named variable."""
    merged: dict[str, Any] = {k: v for k, v in row.variables.items() if k != "prompt"}
    for name, value in row.params.items():
        if name != "prompt":
            merged[name] = value
    return merged.items()


def row_axis_names(variables: Iterable[str], params: Iterable[str]) -> Iterator[str]:
    """The axis names of one row, given its variable and parameter names, in the order `export_columns` meets them
    (variables, then parameters not already named; prompt is a fixed column)."""
    seen: set[str] = set()
    for name in (*variables, *params):
        if name != "prompt" and name not in seen:
            seen.add(name)
            yield name


def export_columns_of(axis_names: Iterable[Iterable[str]]) -> list[str]:
    """The column names from each row's axis names (`row_axis_names`), rows in export order: fixed head, then every
    axis seen (first-seen), then fixed tail. The first pass of a streamed export."""
    axes: dict[str, None] = {}
    for names in axis_names:
        for name in names:
            if name not in axes:
                axes[name] = None
    return [*HEAD_COLUMNS, *dict.fromkeys(_axis_column(n) for n in axes), *TAIL_COLUMNS]


def export_columns(rows: Iterable[JobRow]) -> list[str]:
    """The column names, in order: fixed head, then every variable/parameter seen (first-seen), then fixed tail."""
    return export_columns_of(row_axis_names(row.variables, row.params) for row in rows)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is datetime and value.tzinfo is UTC:  # what the store hands out: the quick way, same text
        return value.isoformat()[:-6] + "Z"
    if not isinstance(value, datetime):
        return str(value)
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)  # naive = UTC
    return moment.isoformat().replace("+00:00", "Z")


def _seconds(start: Any, end: Any) -> float | None:
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)  # naive = UTC
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return round(float((end - start).total_seconds()), 3)


def _tail(row: JobRow) -> list[Any]:
    """The values of TAIL_COLUMNS, in their order."""
    enqueued, started, completed = row.enqueued_at, row.started_at, row.completed_at
    return [
        row.repeat, str(row.status), row.generation_id, row.result_url, row.output_path, row.sha256, row.bytes,
        row.estimated_cost, row.cost, row.error_class, row.error, row.attempts,
        _iso(enqueued), _iso(started), _iso(completed), _seconds(enqueued, started), _seconds(started, completed),
        row.downloaded_by,
    ]  # fmt: skip


def export_record(row: JobRow, columns: Sequence[str]) -> dict[str, Any]:
    """One row as a dict over `columns` (from `export_columns`) holding exact values: JSON types for axes, ISO
    `...Z` strings for times. MissingColumnError when the row has an axis `columns` lacks."""
    record: dict[str, Any] = dict.fromkeys(columns)
    record.update(job_key=row.job_key, run=row.run, model=row.model, prompt=row.prompt)
    for name, value in _axis_items(row):
        column = _axis_column(name)
        if column not in record:
            raise MissingColumnError(f"job {row.job_key} has {name!r}, which the columns lack")
        record[column] = value
    record.update(zip(TAIL_COLUMNS, _tail(row), strict=True))
    return record


def export_records(rows: Iterable[JobRow]) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and one dict per row (`export_record`), every row held: for a small run or a table in memory."""
    materialised = list(rows)
    columns = export_columns(materialised)
    return columns, [export_record(row, columns) for row in materialised]


class _Axes(tuple[str, ...]):
    """The axis columns, each named exactly as its variable or parameter, and the names a row may have."""

    known: frozenset[str]


def _plain_axes(columns: Sequence[str]) -> _Axes | None:
    """The axis columns, when each is named exactly as its variable or parameter; None when one is renamed
    (`param.status`), whose value then needs `export_record`'s careful merge."""
    axes = _Axes(columns[len(HEAD_COLUMNS) : len(columns) - len(TAIL_COLUMNS)])
    if any(c.startswith(AXIS_PREFIX) and c[len(AXIS_PREFIX) :] in _FIXED for c in axes):
        return None
    axes.known = frozenset((*axes, "prompt"))
    return axes


def _check(row: JobRow, axes: _Axes) -> None:
    if not (axes.known.issuperset(row.params) and axes.known.issuperset(row.variables)):
        missing = sorted((set(row.params) | set(row.variables)) - axes.known)
        raise MissingColumnError(f"job {row.job_key} has {', '.join(missing)}, which the columns lack")


def _values(row: JobRow, columns: Sequence[str], axes: _Axes | None) -> list[Any]:
    """`export_record(row, columns)`'s values, in column order, built without the dict when `axes` allows: the
    export's inner loop, run a million times."""
    if axes is None:
        return list(export_record(row, columns).values())
    _check(row, axes)
    params, variables = row.params, row.variables  # a parameter wins over a same-named variable
    cells = [params[name] if name in params else variables.get(name) for name in axes]
    return [row.job_key, row.run, row.model, row.prompt, *cells, *_tail(row)]


def neutralise(text: str) -> str:
    """Prefix a single quote to text a spreadsheet would run as a formula; other text is returned unchanged."""
    if text[:1] in _CONTROL_STARTS or text.lstrip()[:1] in _FORMULA_STARTS:
        return "'" + text
    return text


def _csv_cell(value: Any) -> str:
    kind = type(value)
    if kind is str:
        # text may come from a hostile prompt or server; numbers we wrote are safe. Most text starts safely: say
        # so without neutralise's strip (a million rows of twenty cells)
        first = value[:1]
        if not first or (first not in _RISKY_STARTS and not first.isspace()):
            return value  # type: ignore[no-any-return]
        return neutralise(value)
    if value is None:
        return ""
    if kind is int:
        return str(value)  # what json.dumps writes, without its machinery
    if kind is float and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _csv_row(row: JobRow, columns: Sequence[str], axes: _Axes | None) -> list[str]:
    """`[_csv_cell(v) for v in _values(row, columns, axes)]`: the CSV export's inner loop, run a million times, so
    text that starts safely, None and int become cells without a call."""
    values = _values(row, columns, axes)
    safe, cell = _SAFE_STARTS, _csv_cell
    return [
        v if (kind := type(v)) is str and v[:1] in safe else "" if v is None else str(v) if kind is int else cell(v)
        for v in values
    ]


def _columns(rows: Iterable[JobRow], columns: Sequence[str] | None) -> tuple[Iterable[JobRow], Sequence[str]]:
    if columns is not None:
        return rows, columns
    materialised = list(rows)
    return materialised, export_columns(materialised)


def write_csv(rows: Iterable[JobRow], out: TextIO, columns: Sequence[str] | None = None) -> int:
    """Write a header and one CSV row per job to `out` (open it with newline=""); return the number of rows.

    With `columns` (from `export_columns_of`), rows are written as they come, none held (MissingColumnError for a
    row with an axis they lack); without, they are all read first to find the columns. Text cells a spreadsheet would run as formulas get a leading `'`; non-string
    parameter values are compact JSON.
    """
    rows, columns = _columns(rows, columns)
    axes = _plain_axes(columns)
    writer = csv.writer(out)
    writer.writerow([neutralise(c) for c in columns])
    separators = len(columns) - 1
    count = 0
    for row in rows:
        cells = _csv_row(row, columns, axes)
        line = ",".join(cells)
        # a row with no comma, quote or line break inside a cell is what csv.writer would write, joined: checked on
        # the whole line in C, four scans instead of twenty-six calls into the writer's quoting
        if line.count(",") == separators and '"' not in line and "\n" not in line and "\r" not in line:
            out.write(line + "\r\n")
        else:
            writer.writerow(cells)
        count += 1
    return count


def write_jsonl(rows: Iterable[JobRow], out: TextIO, columns: Sequence[str] | None = None) -> int:
    """Write one JSON object per line (keys in column order, exact values, nothing neutralised); return the count.
    With `columns`, rows are written as they come, as `write_csv` does."""
    rows, columns = _columns(rows, columns)
    axes = _plain_axes(columns)
    encode = json.JSONEncoder(ensure_ascii=False, default=str).encode  # what json.dumps makes per call
    count = 0
    for row in rows:
        out.write(encode(dict(zip(columns, _values(row, columns, axes), strict=True))) + "\n")
        count += 1
    return count


def cell_text(value: Any) -> str:
    """How a parameter value reads in a cell or label: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
