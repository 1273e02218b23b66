"""Jobs listed in a CSV or JSONL file (`rows:` in a manifest): one job per row, columns are fields.

CSV cells are text; `types:` says which columns are numbers, booleans or JSON, because guessing would
turn Sora's `seconds: "4"` into the number 4. An empty CSV cell leaves the field unset (the default applies).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.core.layers import Layer
from batchgen.errors import Problem

ROW_TYPES = ("str", "int", "float", "bool", "json")


@dataclass(frozen=True, slots=True)
class RowsSource:
    """Where the rows are and how to read them; `where` is the manifest line naming the file."""

    path: Path
    format: str  # "csv" or "jsonl"
    types: Mapping[str, str] = field(default_factory=dict)
    where: str = ""


ReadText = Callable[[Path], str]  # the edge's file reader: text of a path, or FileNotFoundError / OSError


def read_rows(source: RowsSource, read_text: ReadText) -> tuple[tuple[Layer, ...], list[Problem]]:
    """Every row of the source as a layer located at `file:line`; problems name the row's line. The file is read
    by `read_text`, which the edge provides (the core does no I/O)."""
    try:
        text = read_text(source.path)
    except FileNotFoundError:
        return (), [
            Problem(source.where, f"rows file not found: {source.path}", "the path is relative to the manifest")
        ]
    except (OSError, UnicodeDecodeError) as error:
        return (), [Problem(source.where, f"cannot read rows file {source.path}: {error}")]
    return parse_rows(text, source)


def parse_rows(text: str, source: RowsSource) -> tuple[tuple[Layer, ...], list[Problem]]:
    """Rows from the text of a CSV or JSONL file."""
    # a file saved by Excel starts with a byte-order mark, which would stick to the first column's name
    handle = io.StringIO(text.removeprefix("\ufeff"), newline="")
    try:
        if source.format == "csv":
            return _read_csv(handle, source)
        return _read_jsonl(handle, source)
    except csv.Error as error:
        return (), [Problem(source.where, f"cannot read rows file {source.path}: {error}")]


def _read_csv(handle: Any, source: RowsSource) -> tuple[tuple[Layer, ...], list[Problem]]:
    reader = csv.reader(handle)
    problems: list[Problem] = []
    header = next(reader, None)
    name = str(source.path)
    if not header:
        return (), [Problem(f"{name}:1", "the CSV file has no header row", "the first row names the fields")]
    header = [column.strip() for column in header]
    for missing in sorted(set(source.types) - set(header)):
        problems.append(Problem(source.where, f"`rows.types` names column `{missing}`, which the CSV does not have"))
    converters = {column: _CONVERTERS[kind] for column, kind in source.types.items()}
    layers: list[Layer] = []
    start = reader.line_num + 1
    width = len(header)
    for cells in reader:
        where = f"{name}:{start}"
        start = reader.line_num + 1
        first = cells[0] if cells else ""
        if not first or first.isspace():  # only then can the row be blank
            joined = "".join(cells)
            if not joined or joined.isspace():
                continue  # blank lines are not jobs
        if len(cells) != width:
            problems.append(Problem(where, f"this row has {len(cells)} cells but the header has {len(header)}"))
            continue
        if not converters and "" not in cells:
            layers.append(Layer(dict(zip(header, cells, strict=False)), where))  # the usual row (widths checked above)
            continue
        values: dict[str, Any] = {}
        for column, cell in zip(header, cells, strict=True):
            if cell == "":
                continue
            convert = converters.get(column)
            if convert is None:
                values[column] = cell
                continue
            try:
                values[column] = convert(cell)
            except ValueError:
                problems.append(Problem(where, f"column `{column}` should be {source.types[column]}, got {cell!r}"))
        layers.append(Layer(values, where))
    return tuple(layers), problems


def _read_jsonl(handle: Any, source: RowsSource) -> tuple[tuple[Layer, ...], list[Problem]]:
    problems: list[Problem] = []
    layers: list[Layer] = []
    name = str(source.path)
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(Problem(where, f"not valid JSON: {error.msg} (column {error.colno})"))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(where, "each JSONL line must be one JSON object of field: value"))
            continue
        layers.append(Layer(value, where))
    return tuple(layers), problems


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ValueError(text)


def _to_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(text) from error


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": lambda text: int(text.strip()),
    "float": lambda text: float(text.strip()),
    "bool": _to_bool,
    "json": _to_json,
}
