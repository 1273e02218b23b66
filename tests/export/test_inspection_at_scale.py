"""`status` and `export` at dataset scale read differently (engine/overview.py, engine/job_stream.py): they must
say exactly what the plain reads say, on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import json
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, inspect

from batchgen.core.export import MissingColumnError, export_columns, export_columns_of, write_csv, write_jsonl
from batchgen.engine.exports import write_export
from batchgen.engine.store import GENERATIONS, JOBS, Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _run(store: Store, name: str) -> int:
    return store.ensure_run(
        name, manifest_path="m.yaml", manifest_sha256="x", base_url="http://h", out_dir="out", settings={}
    ).id


def _job(run_id: int, n: int, status: str, **fields: Any) -> dict[str, Any]:
    at = T0 + timedelta(seconds=n)
    row: dict[str, Any] = {
        "run_id": run_id, "key": f"k{n:03d}", "model": "m", "repeat": 0, "origin": "matrix", "media_type": "image",
        "status": status, "attempts": 1, "estimated_cost": 0.5, "updated_at": at,
        "params_json": json.dumps({"prompt": f"p{n}", "seconds": str(n % 3)}),
        "variables_json": json.dumps({"subject": f"s{n % 2}"}),
        "enqueued_at": at, "started_at": at + timedelta(seconds=2), "completed_at": at + timedelta(seconds=9.5),
    }  # fmt: skip
    return {**row, **fields}


def _generation(run_id: int, gid: str, job_id: int | None, status: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "generation_id": gid, "run_id": run_id, "job_id": job_id, "model": "m", "request_json": "{}",
        "how": "enqueued", "seen_at": T0 + timedelta(seconds=len(gid)), "remote_status": status,
        "estimated_cost": 0.5, "cost": None, "updated_at": T0,
    }  # fmt: skip
    return {**row, **fields}


def _fill(store: Store) -> int:
    """A run where every figure of status has something to count: removed jobs, reservations, a retried job whose
    first generation is paid and unused, an orphan still running, a lost one; and another run beside it."""
    other, run_id = _run(store, "other"), _run(store, "big")
    with store.engine.begin() as db:
        ids = [
            db.execute(insert(JOBS).values(**row)).inserted_primary_key[0]
            for row in [
                _job(run_id, 1, "succeeded", generation_id="g1", cost=0.3),
                _job(run_id, 2, "failed", generation_id="g2", error_class="content_policy", error="no"),
                _job(run_id, 3, "submitting", estimated_cost=0.75),
                _job(run_id, 4, "unknown", estimated_cost=1.25),
                _job(run_id, 5, "pending", error_class="removed", estimated_cost=9.0),
                _job(run_id, 6, "queued", generation_id="g4"),
                _job(run_id, 7, "succeeded", generation_id="g7", estimated_cost=None,
                     params_json=json.dumps({"prompt": "late", "style": "noir"}), variables_json="{}"),
                _job(other, 8, "succeeded", generation_id="o1", cost=4.0),
            ]
        ]  # fmt: skip
        db.execute(
            insert(GENERATIONS),
            [
                _generation(run_id, "g1", ids[0], "succeeded", cost=0.3),
                _generation(run_id, "g2", ids[1], "failed"),
                _generation(run_id, "g3", ids[5], "succeeded", cost=0.45),  # the queued job's first try: unused
                _generation(run_id, "g4", ids[5], "queued"),
                _generation(run_id, "g5", None, "processing", how="orphan"),  # unused, in flight
                _generation(run_id, "g6", None, "lost"),
                _generation(run_id, "g7", ids[6], "succeeded", estimated_cost=None),
                _generation(other, "o1", ids[7], "succeeded", cost=4.0),
            ],
        )
    return run_id


def test_overview_says_what_the_plain_reads_say(store: Store) -> None:
    run_id = _fill(store)
    seen = store.overview(run_id)
    assert seen.counts == store.status_counts(run_id)
    assert list(seen.counts) == sorted(seen.counts, key=lambda s: s.value)
    assert seen.estimated_total == pytest.approx(store.estimated_total(run_id))
    assert seen.money == store.money(run_id)
    assert seen.unused == store.unused_generations(run_id)
    # and the figures themselves, so the equalities above cannot hold by both being wrong alike
    assert sum(seen.counts.values()) == 6
    assert [u.generation_id for u in seen.unused] == ["g3", "g5"]
    assert seen.money.spent == pytest.approx(0.3 + 0.45)  # g7 succeeded with no cost nor estimate: 0
    assert seen.money.reserved == pytest.approx(0.5 * 3 + 0.75 + 1.25)  # g4, g5, g6 (lost) in flight; 2 intents
    assert seen.money.unused_cost == pytest.approx(0.45 + 0.5)


def test_status_reads_only_indexes_that_exist_on_both_databases(store: Store) -> None:
    names = {ix["name"] for t in ("jobs", "generations") for ix in inspect(store.engine).get_indexes(t)}
    assert {"ix_jobs_run_status", "ix_generations_run_money"} <= names


def test_streamed_export_writes_what_the_whole_read_writes(store: Store) -> None:
    run_id = _fill(store)
    whole = store.job_rows(run_id)
    with store.job_row_stream(run_id) as jobs:
        columns = export_columns_of(jobs.axis_names())
        streamed = list(jobs.rows())
        csv_out, jsonl_out = io.StringIO(newline=""), io.StringIO()
        assert write_csv(jobs.rows(), csv_out, columns) == len(whole)
        assert write_jsonl(jobs.rows(), jsonl_out, columns) == len(whole)
    assert streamed == whole
    assert "style" in columns  # seen on the last job only: the first pass found it
    expected_csv, expected_jsonl = io.StringIO(newline=""), io.StringIO()
    write_csv(whole, expected_csv)
    write_jsonl(whole, expected_jsonl)
    assert csv_out.getvalue() == expected_csv.getvalue()
    assert jsonl_out.getvalue() == expected_jsonl.getvalue()


def test_a_job_added_between_the_two_passes_is_not_in_the_export(store: Store) -> None:
    # the header comes from the first pass: a job (with an axis of its own) committed by a runner after it must not
    # appear in the second pass, or its row would have a cell the header lacks
    run_id = _fill(store)
    with store.job_row_stream(run_id) as jobs:
        columns = export_columns_of(jobs.axis_names())
        with store.engine.begin() as db:
            db.execute(insert(JOBS).values(**_job(run_id, 99, "pending", variables_json='{"mood": "calm"}')))
        keys = [row.job_key for row in jobs.rows()]
    assert "mood" not in columns and "k099" not in keys
    assert len(keys) == 7
    with store.job_row_stream(run_id) as jobs:
        assert "mood" in export_columns_of(jobs.axis_names())
        assert "k099" in [row.job_key for row in jobs.rows()]


@pytest.mark.parametrize("guess_from", [1, 7, 100])
def test_a_guess_of_the_columns_is_checked_on_every_row_and_redone_when_short(store: Store, guess_from: int) -> None:
    # the first job has no `style` (the last one has): from 1 job the guess is short and the file starts over
    run_id = _fill(store)
    whole = store.job_rows(run_id)
    expected = io.StringIO(newline="")
    write_csv(whole, expected)
    for writer in (write_csv, write_jsonl):
        with store.job_row_stream(run_id) as jobs:
            out = io.StringIO(newline="")  # a short guess fails at the last job: the start over must drop the rest
            assert write_export(jobs, writer, out, rewindable=True, guess_from=guess_from) == len(whole)
        plain = io.StringIO(newline="")
        writer(whole, plain)
        assert out.getvalue() == plain.getvalue()
    assert '"style"' not in json.dumps(export_columns_of([("subject",), ("seconds",)]))


def test_a_row_with_an_axis_the_columns_lack_is_refused_not_cut(store: Store) -> None:
    run_id = _fill(store)
    with store.job_row_stream(run_id) as jobs:
        short = export_columns_of(jobs.axis_names(limit=1))
        with pytest.raises(MissingColumnError, match="style"), closing(jobs.rows()) as rows:
            write_csv(rows, io.StringIO(newline=""), short)


def test_a_generation_is_used_only_by_the_job_the_ledger_names(store: Store) -> None:
    # status finds the unused by pairs (generation, job) in one merge: a job holding a generation the ledger gives
    # to another job, or to none, does not make it used; the plain read says the same
    run_id = _run(store, "pairs")
    with store.engine.begin() as db:
        a, b, c = (
            db.execute(insert(JOBS).values(**_job(run_id, n, "succeeded", generation_id=gid))).inserted_primary_key[0]
            for n, gid in ((1, "ga"), (2, "gx"), (3, "gy"))
        )
        db.execute(
            insert(GENERATIONS),
            [
                _generation(run_id, "ga", a, "succeeded", cost=0.1),  # used: a holds it, the ledger says a
                _generation(run_id, "gx", None, "succeeded", cost=0.2, how="orphan", seen_at=T0),  # b holds it
                _generation(run_id, "gy", a, "processing", seen_at=T0 + timedelta(seconds=1)),  # c holds it
                _generation(run_id, "gz", b, "cancelled"),  # nobody holds it, but cancelled: not counted
            ],
        )
    seen = store.overview(run_id)
    assert [u.generation_id for u in seen.unused] == ["gx", "gy"]  # oldest first
    assert seen.unused == store.unused_generations(run_id)
    assert seen.money == store.money(run_id)
    assert seen.money.unused_cost == pytest.approx(0.2 + 0.5)
    assert c != b


def test_the_first_pass_names_the_axes_as_decoding_every_job_would(store: Store) -> None:
    # on SQLite the first pass reads each job's keys as SQLite lists them (json_each): escaped, unicode, repeated
    # and clashing keys, an empty object and a later job's new axis must give the columns of the JobRows themselves
    run_id = _run(store, "odd keys")
    texts = [
        ('{"caf\\u00e9": "x", "a\\"b": 1}', '{"prompt": "p", "\\ud83d\\udc02": 2, "seconds": "4"}'),
        ("{}", '{"prompt": "q", "seconds": "8", "seconds": "9", "status": "draft"}'),
        ('{"tab\\there": true, "prompt": "a variable prompt"}', '{"x\\\\y": null, "café": 3}'),
        ('{"seconds": "a variable"}', '{"prompt": "r", "late": [1, {"k": "v"}]}'),
    ]
    with store.engine.begin() as db:
        for n, (variables, params) in enumerate(texts):
            db.execute(insert(JOBS).values(**_job(run_id, n, "pending", variables_json=variables, params_json=params)))
    expected = export_columns(store.job_rows(run_id))
    with store.job_row_stream(run_id) as jobs:
        assert export_columns_of(jobs.axis_names()) == expected
        assert export_columns_of(jobs.axis_names(limit=2)) == export_columns(store.job_rows(run_id)[:2])
    assert {"café", 'a"b', "🐂", "tab\there", "x\\y", "param.status", "late"} <= set(expected)
