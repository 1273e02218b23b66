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
at a time. A store hands them over as `ExportRecords` (plain tuples: JSON text, times as text or datetimes), which
the writers take as they take JobRows, to the byte, without a JobRow made per row; JobRows go the same way.
"""

from __future__ import annotations

import csv
import json
import math
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from json.scanner import make_scanner
from typing import Any, TextIO

from batchgen.core.jobs import JobRow, canonical_json

__all__ = [
    "HEAD_COLUMNS",
    "RECORD_FIELDS",
    "TAIL_COLUMNS",
    "ExportRecords",
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


def _axis_values(params: Mapping[str, Any], variables: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """A job's variables then parameters (minus prompt), a parameter overriding a same-named variable."""
    merged: dict[str, Any] = {k: v for k, v in variables.items() if k != "prompt"}
    for name, value in params.items():
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
    for name, value in _axis_values(row.params, row.variables):
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


# ---- the writers: one row at a time, from JobRows or from a store's plain records ---------------------------------

RECORD_FIELDS = (
    "job_key", "run", "model", "params", "variables", "repeat", "status", "generation_id", "result_url",
    "output_path", "sha256", "bytes", "estimated_cost", "cost", "error", "error_class", "attempts", "enqueued_at",
    "started_at", "completed_at", "downloaded_by",
)  # fmt: skip
_MIDDLES_HELD = 4_096  # the prompt and axis cells of jobs that share parameters and variables; a bound on memory
_LINES_HELD = 2_000  # lines gathered before one write: one encode and one copy per 2,000 rows, not per row


class ExportRecords:
    """A run's jobs as plain tuples, fields in RECORD_FIELDS order, for the writers: what a store reads, with no
    JobRow made. Parameters and variables are mappings or their JSON text; times are datetimes or ISO 8601 text
    (naive means UTC); the status a JobStatus or its value. A million rows write in half the time JobRows take."""

    def __init__(self, records: Iterable[Sequence[Any]]) -> None:
        self._records = records

    def __iter__(self) -> Iterator[Sequence[Any]]:
        return iter(self._records)


def _record_of(row: JobRow) -> tuple[Any, ...]:
    return (
        row.job_key, row.run, row.model, row.params, row.variables, row.repeat, row.status, row.generation_id,
        row.result_url, row.output_path, row.sha256, row.bytes, row.estimated_cost, row.cost, row.error,
        row.error_class, row.attempts, row.enqueued_at, row.started_at, row.completed_at, row.downloaded_by,
    )  # fmt: skip


_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # (typeshed asks for a scanner: it means a decoder)


def _decoded(value: Any) -> Any:
    """Parameters or variables from their JSON text (by the C scanner, without json.loads' two Python layers around
    it; json.loads for text it cannot take whole), or as they are."""
    if type(value) is not str:
        return value
    try:
        parsed, end = _scan(value, 0)
    except StopIteration:
        return json.loads(value)  # leading space, or not JSON: json.loads says so as it always did
    return parsed if end == len(value) else json.loads(value)


def _utc(value: Any) -> Any:
    """A time as a naive UTC datetime, from a datetime (naive is UTC) or ISO 8601 text; anything else as it is."""
    if type(value) is str:
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _utc_text(moment: Any) -> str | None:
    """`_iso` of a time `_utc` gave: `...Z`."""
    if isinstance(moment, datetime):
        return moment.isoformat() + "Z"
    return None if moment is None else str(moment)


def _span(start: Any, end: Any) -> float | None:
    """`_seconds` of two times `_utc` gave."""
    if isinstance(start, datetime) and isinstance(end, datetime):
        return round((end - start).total_seconds(), 3)
    return None


_parse_time = datetime.fromisoformat


def _moments(enqueued: Any, started: Any, completed: Any) -> tuple[Any, Any, Any, float | None, float | None]:
    """A job's times as the export writes them: `...Z` text (`_iso`) each, then queue_seconds and run_seconds
    (`_seconds`). One call a row, and the quick way for three ISO texts of naive UTC, as SQLite holds them."""
    if type(enqueued) is str and type(started) is str and type(completed) is str:
        e, s, c = _parse_time(enqueued), _parse_time(started), _parse_time(completed)
        if e.tzinfo is None and s.tzinfo is None and c.tzinfo is None:
            return (
                _stored_iso(enqueued, e), _stored_iso(started, s), _stored_iso(completed, c),
                round((s - e).total_seconds(), 3), round((c - s).total_seconds(), 3),
            )  # fmt: skip
    e, s, c = _utc(enqueued), _utc(started), _utc(completed)
    return _utc_text(e), _utc_text(s), _utc_text(c), _span(e, s), _span(s, c)


def _stored_iso(text: str, moment: datetime) -> str:
    """`moment.isoformat() + "Z"` for the naive datetime parsed from `text`, without isoformat (a third of an
    export's time on times): text `YYYY-MM-DD HH:MM:SS.ffffff` is that already, its space a T (isoformat leaves out
    a fraction of zero, so that is left to it)."""
    if moment.microsecond and len(text) == 26 and text[19] == "." and text[7] == "-":
        return text.replace(" ", "T") + "Z"
    return moment.isoformat() + "Z"


class _Layout:
    """The columns given to a writer, as a row's prompt and axis values are laid into them."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.axes = tuple(columns[len(HEAD_COLUMNS) : len(columns) - len(TAIL_COLUMNS)])
        # each axis column named exactly as its variable or parameter (else `param.status`: the careful merge)
        self.plain = not any(c.startswith(AXIS_PREFIX) and c[len(AXIS_PREFIX) :] in _FIXED for c in self.axes)
        self.known = frozenset((*self.axes, "prompt"))

    def middle(self, key: str, params: Mapping[str, Any], variables: Mapping[str, Any]) -> list[Any]:
        """The prompt and the axis values of one job, in column order (a parameter wins over a same-named
        variable); MissingColumnError when the job has an axis the columns lack."""
        if self.plain:
            merged = {**variables, **params}
            if not self.known.issuperset(merged):
                missing = sorted(set(merged) - self.known)
                raise MissingColumnError(f"job {key} has {', '.join(missing)}, which the columns lack")
            values = list(map(merged.get, self.axes))
        else:
            placed: dict[str, Any] = dict.fromkeys(self.axes)
            for name, value in _axis_values(params, variables):
                column = _axis_column(name)
                if column not in placed:
                    raise MissingColumnError(f"job {key} has {name!r}, which the columns lack")
                placed[column] = value
            values = list(placed.values())
        prompt = params.get("prompt", "")
        return [prompt if isinstance(prompt, str) else canonical_json(prompt), *values]


def _middles(layout: _Layout, encode: Callable[[list[Any]], list[str]]) -> Callable[[str, Any, Any], list[str]]:
    """A job's prompt and axis cells, encoded; remembered for jobs with the same parameter and variable text, until
    the cache has filled with jobs each of their own (fewer than one in eight a repeat), and from then not at all."""
    held: dict[tuple[str, str], list[str]] = {}
    hits, caching = 0, True

    def cells(key: str, params: Any, variables: Any) -> list[str]:
        nonlocal hits, caching
        if not caching or type(params) is not str or type(variables) is not str:
            return encode(layout.middle(key, _decoded(params), _decoded(variables)))
        found = held.get((params, variables))
        if found is None:
            if len(held) >= _MIDDLES_HELD:
                held.clear()
                # jobs of their own (each with its own prompt): remembering them costs and never pays
                caching, hits = hits >= _MIDDLES_HELD // 8, 0
            found = encode(layout.middle(key, _decoded(params), _decoded(variables)))
            if caching:
                held[params, variables] = found
        else:
            hits += 1
        return found

    return cells


def _columns(rows: Iterable[JobRow] | ExportRecords, columns: Sequence[str] | None) -> tuple[Any, Sequence[str]]:
    records = rows if isinstance(rows, ExportRecords) else map(_record_of, rows)
    if columns is not None:
        return records, columns
    held = list(records)
    return held, export_columns_of(row_axis_names(_decoded(r[4]), _decoded(r[3])) for r in held)


class _Lines(list[str]):
    """Lines gathered for one write; a csv.writer writes into it as into a file."""

    write = list.append


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


def _csv_cells(values: list[Any]) -> list[str]:
    """`[_csv_cell(v) for v in values]`, with text that starts safely, None and int made cells without a call."""
    safe, cell = _SAFE_STARTS, _csv_cell
    return [
        v if (kind := type(v)) is str and v[:1] in safe else "" if v is None else str(v) if kind is int else cell(v)
        for v in values
    ]


def write_csv(
    rows: Iterable[JobRow] | ExportRecords, out: TextIO, columns: Sequence[str] | None = None, *, header: bool = True
) -> int:
    """Write a header and one CSV row per job to `out` (open it with newline=""); return the number of rows.
    Without `header`, the rows alone: the rest of a file another call began with the same columns.

    With `columns` (from `export_columns_of`), rows are written as they come, none held (MissingColumnError for a
    row with an axis they lack); without, they are all read first to find the columns. Text cells a spreadsheet
    would run as formulas get a leading `'`; non-string parameter values are compact JSON.
    """
    records, columns = _columns(rows, columns)
    middle = _middles(_Layout(columns), _csv_cells)
    lines = _Lines()
    writer = csv.writer(lines)
    if header:
        writer.writerow([neutralise(c) for c in columns])
    separators, head = len(columns) - 1, len(HEAD_COLUMNS) - 1
    count = 0
    safe, cell = _SAFE_STARTS, _csv_cell
    for key, run, model, params, variables, repeat, status, gid, url, path, sha, size, estimate, cost, error, \
            error_class, attempts, enqueued, started, completed, host in records:  # fmt: skip
        enqueued, started, completed, queued_s, ran_s = _moments(enqueued, started, completed)
        # _csv_cells' expression written out per column, for the kinds of value each holds: text, int, float, a time
        cells = [
            key if type(key) is str and key[:1] in safe else cell(key),
            run if type(run) is str and run[:1] in safe else cell(run),
            model if type(model) is str and model[:1] in safe else cell(model),
            str(repeat) if type(repeat) is int else cell(repeat),
            status if type(status) is str and status[:1] in safe else cell(str(status)),
            "" if gid is None else gid if type(gid) is str and gid[:1] in safe else cell(gid),
            "" if url is None else url if type(url) is str and url[:1] in safe else cell(url),
            "" if path is None else path if type(path) is str and path[:1] in safe else cell(path),
            "" if sha is None else sha if type(sha) is str and sha[:1] in safe else cell(sha),
            "" if size is None else str(size) if type(size) is int else cell(size),
            "" if estimate is None else repr(estimate) if type(estimate) is float and estimate - estimate == 0.0
            else cell(estimate),
            "" if cost is None else repr(cost) if type(cost) is float and cost - cost == 0.0 else cell(cost),
            "" if error_class is None else error_class if type(error_class) is str and error_class[:1] in safe
            else cell(error_class),
            "" if error is None else error if type(error) is str and error[:1] in safe else cell(error),
            str(attempts) if type(attempts) is int else cell(attempts),
            "" if enqueued is None else enqueued if enqueued[:1] in safe else cell(enqueued),
            "" if started is None else started if started[:1] in safe else cell(started),
            "" if completed is None else completed if completed[:1] in safe else cell(completed),
            "" if queued_s is None else repr(queued_s),
            "" if ran_s is None else repr(ran_s),
            "" if host is None else host if type(host) is str and host[:1] in safe else cell(host),
        ]  # fmt: skip
        cells[head:head] = middle(key, params, variables)
        line = ",".join(cells)
        # a row with no comma, quote or line break inside a cell is what csv.writer would write, joined: checked on
        # the whole line in C, four scans instead of twenty-six calls into the writer's quoting
        if line.count(",") == separators and '"' not in line and "\n" not in line and "\r" not in line:
            lines.append(line + "\r\n")
        else:
            writer.writerow(cells)
        count += 1
        if len(lines) >= _LINES_HELD:
            out.write("".join(lines))
            lines.clear()
    out.write("".join(lines))
    return count


def _json_text(value: Any, encode: Callable[[Any], str]) -> str:
    """`encode(value)`, the quick way for what most cells hold: what json.dumps writes for each."""
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return encode(value)


def write_jsonl(
    rows: Iterable[JobRow] | ExportRecords, out: TextIO, columns: Sequence[str] | None = None, *, header: bool = True
) -> int:
    """Write one JSON object per line (keys in column order, exact values, nothing neutralised); return the count.
    With `columns`, rows are written as they come, as `write_csv` does. JSONL has no header: `header` is taken, so
    that the two writers are called alike, and changes nothing."""
    records, columns = _columns(rows, columns)
    encode = json.JSONEncoder(ensure_ascii=False, default=str).encode  # what json.dumps makes per call
    # the object with its keys written once: each line is this template filled with the values' JSON texts
    line = "{{" + ", ".join(encode(c).replace("{", "{{").replace("}", "}}") + ": {}" for c in columns) + "}}\n"
    fill = line.format

    def texts(values: list[Any]) -> list[str]:  # _json_text's first case written out: most axis values are text
        return [encode_basestring(v) if type(v) is str else _json_text(v, encode) for v in values]

    middle = _middles(_Layout(columns), texts)
    lines: list[str] = []
    head = len(HEAD_COLUMNS) - 1
    count = 0
    quoted, j = encode_basestring, encode
    for key, run, model, params, variables, repeat, status, gid, url, path, sha, size, estimate, cost, error, \
            error_class, attempts, enqueued, started, completed, host in records:  # fmt: skip
        enqueued, started, completed, queued_s, ran_s = _moments(enqueued, started, completed)
        # _json_text written out per column, for the kinds of value each holds: text, int, float, a time
        values = [
            quoted(key) if type(key) is str else j(key),
            quoted(run) if type(run) is str else j(run),
            quoted(model) if type(model) is str else j(model),
            str(repeat) if type(repeat) is int else j(repeat),
            quoted(str(status)),
            "null" if gid is None else quoted(gid) if type(gid) is str else j(gid),
            "null" if url is None else quoted(url) if type(url) is str else j(url),
            "null" if path is None else quoted(path) if type(path) is str else j(path),
            "null" if sha is None else quoted(sha) if type(sha) is str else j(sha),
            "null" if size is None else str(size) if type(size) is int else j(size),
            "null" if estimate is None else repr(estimate) if type(estimate) is float and estimate - estimate == 0.0
            else j(estimate),
            "null" if cost is None else repr(cost) if type(cost) is float and cost - cost == 0.0 else j(cost),
            "null" if error_class is None else quoted(error_class) if type(error_class) is str else j(error_class),
            "null" if error is None else quoted(error) if type(error) is str else j(error),
            str(attempts) if type(attempts) is int else j(attempts),
            "null" if enqueued is None else quoted(enqueued),
            "null" if started is None else quoted(started),
            "null" if completed is None else quoted(completed),
            "null" if queued_s is None else repr(queued_s),
            "null" if ran_s is None else repr(ran_s),
            "null" if host is None else quoted(host) if type(host) is str else j(host),
        ]  # fmt: skip
        values[head:head] = middle(key, params, variables)
        lines.append(fill(*values))
        count += 1
        if len(lines) >= _LINES_HELD:
            out.write("".join(lines))
            lines.clear()
    out.write("".join(lines))
    return count


def cell_text(value: Any) -> str:
    """How a parameter value reads in a cell or label: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
