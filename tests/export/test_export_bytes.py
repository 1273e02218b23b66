"""`batchgen export` writes exactly the bytes it always wrote, whatever the jobs hold.

The export's inner loop is tuned for a million rows (engine/job_stream.py, core/export.py); these tests pin its
output for every shape a job can take (failed, pending, in flight; with and without variables; unicode, commas,
quotes and line breaks in prompts and errors; formula-like text; non-string parameters; an axis named like a fixed
column; times with and without microseconds) twice over: against files written by the export before it was tuned
(tests/export/golden/, from commit 5226ecf), and against the plain whole read (`Store.job_rows` and the writers
given no columns), on SQLite and on PostgreSQL, to a file and to stdout.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text, update
from typer.testing import CliRunner

from batchgen.cli import app
from batchgen.core.export import write_csv, write_jsonl
from batchgen.engine.store import JOBS, Store

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2026, 11, 1, 12, 0, 0, 250000, tzinfo=UTC)
ROUND = datetime(2026, 11, 1, 13, 0, 0, tzinfo=UTC)  # no microseconds: ISO text without a fraction


def _job(run_id: int, n: int, **fields: Any) -> dict[str, Any]:
    at = T0 + timedelta(seconds=7 * n, microseconds=1013 * n)
    row: dict[str, Any] = {
        "run_id": run_id, "key": f"{n:016x}", "model": "openai-sora-2-pro", "repeat": n % 3, "origin": "matrix",
        "media_type": "video", "status": "succeeded", "attempts": 1, "estimated_cost": 1.2, "cost": 1.2,
        "updated_at": at, "generation_id": f"gen-{n:04d}", "result_url": f"https://cdn.example/{n}.mp4",
        "output_path": f"out/{n:016x}.mp4", "sha256": f"{n:064x}", "bytes": 4096 + n, "downloaded_by": "host-a",
        "error": None, "error_class": None,
        "params_json": json.dumps({"prompt": f"an ox, take {n % 4}", "seconds": "8", "size": "1280x720"}),
        "variables_json": json.dumps({"subject": "an ox", "take": n % 4}),
        "intent_at": at - timedelta(seconds=1), "enqueued_at": at, "started_at": at + timedelta(seconds=2.5),
        "completed_at": at + timedelta(seconds=61, microseconds=333),
    }  # fmt: skip
    return {**row, **fields}


def _unfinished(status: str, **fields: Any) -> dict[str, Any]:
    unfinished = {
        "status": status, "cost": None, "result_url": None, "output_path": None, "sha256": None, "bytes": None,
        "downloaded_by": None, "completed_at": None,
    }  # fmt: skip
    return {**unfinished, **fields}


def _varied(run_id: int) -> list[dict[str, Any]]:
    """Jobs of every shape, and a stretch of jobs that share their parameters and variables (a matrix's)."""
    p = json.dumps
    jobs = [
        _job(run_id, 1),
        _job(run_id, 2, status="failed", cost=None, result_url=None, output_path=None, sha256=None, bytes=None,
             downloaded_by=None, error_class="content_policy",
             error='The prompt was "rejected", see:\nhttps://x.example/a,b\r\nend'),
        _job(run_id, 3, **_unfinished("pending", generation_id=None, attempts=0, intent_at=None, enqueued_at=None,
                                     started_at=None, estimated_cost=None)),
        _job(run_id, 4, **_unfinished("queued", started_at=None)),
        _job(run_id, 5, **_unfinished("processing")),
        _job(run_id, 6, **_unfinished("downloading", completed_at=ROUND, started_at=ROUND - timedelta(seconds=30))),
        _job(run_id, 7, **_unfinished("submitting", generation_id=None, enqueued_at=None, started_at=None)),
        _job(run_id, 8, **_unfinished("cancelled", error_class="cancelled", error="cancelled by the user")),
        _job(run_id, 9, **_unfinished("unknown")),
        _job(run_id, 10, params_json=p({"prompt": "café — 東京 🐂, \"quoted\", 'single'", "seconds": "4"}),
             variables_json=p({"subject": "café 🐂", "place": "東京"})),
        _job(run_id, 11, params_json=p({"prompt": "line one\nline two\r\nline three", "seconds": "4"})),
        _job(run_id, 12, params_json=p({"prompt": "=HYPERLINK(\"http://evil\")", "seconds": "+4"}),
             variables_json=p({"subject": "@sum", "mood": "-1"})),
        _job(run_id, 13, params_json=p({"prompt": " =1+1", "seconds": "\tx", "size": "\rcr"}),
             error="-oops", error_class="@weird"),
        _job(run_id, 14, params_json=p({"prompt": "numbers", "seconds": 8, "guidance": 2.5, "hd": True,
                                        "seed": None, "tags": [1, "a", {"b": "é"}], "opts": {"x": {"y": [True]}},
                                        "empty": "", "big": 10**20, "tiny": 1e-7, "round": 3.0})),
        _job(run_id, 15, params_json=p({"prompt": ["a", "list", "prompt"], "seconds": "4"}), variables_json="{}"),
        _job(run_id, 16, params_json=p({"seconds": "4"}), variables_json=p({"prompt": "a variable prompt"})),
        _job(run_id, 17, variables_json=p({"seconds": "a variable that a parameter overrides", "extra": 1})),
        _job(run_id, 18, variables_json="{}", model="model, with a comma", key="key\"quoted",
             downloaded_by="=host", output_path="out/a,b.mp4"),
        _job(run_id, 19, cost=0.1 + 0.2, estimated_cost=float("inf"), bytes=0, attempts=0, repeat=0),
        _job(run_id, 20, enqueued_at=ROUND, started_at=ROUND, completed_at=ROUND + timedelta(microseconds=1)),
        _job(run_id, 21, enqueued_at=ROUND, started_at=ROUND - timedelta(seconds=1.0005), completed_at=ROUND),
        _job(run_id, 22, estimated_cost=0.0, cost=0.0, result_url="", error="", error_class=""),
    ]  # fmt: skip
    jobs += [_job(run_id, n) for n in range(23, 53)]  # same parameters and variables, four ways round
    return jobs


def _fill(store: Store, name: str, jobs: Any) -> None:
    run_id = store.ensure_run(
        name, manifest_path="m.yaml", manifest_sha256="x", base_url="http://h", out_dir="out", settings={}
    ).id
    with store.engine.begin() as db:
        db.execute(insert(JOBS), jobs(run_id))
        # times as text written by something other than SQLAlchemy (on SQLite): no fraction, or a short one
        started, enqueued = ROUND - timedelta(seconds=1), ROUND - timedelta(seconds=119.5)
        times: dict[str, Any] = {"started_at": started, "enqueued_at": enqueued}
        if db.dialect.name == "sqlite":
            times = {"started_at": text("'2026-11-01 12:59:59'"), "enqueued_at": text("'2026-11-01 12:58:00.5'")}
        db.execute(update(JOBS).where(JOBS.c.run_id == run_id, JOBS.c.key == f"{21:016x}").values(**times))


def _renamed(run_id: int) -> list[dict[str, Any]]:
    """A run with an axis named like a fixed column (`status`), exported as `param.status`."""
    return [
        _job(run_id, 1, params_json=json.dumps({"prompt": "p", "status": "draft", "seconds": "4"})),
        _job(run_id, 2, params_json=json.dumps({"prompt": 'q,"r"', "seconds": 4}), variables_json='{"cost": 9}'),
        _job(run_id, 3, **_unfinished("pending", params_json=json.dumps({"prompt": "=s", "status": None}))),
    ]


def _export(*args: str) -> bytes:
    result = CliRunner().invoke(app, ["export", *args], catch_exceptions=True)
    if result.exception is not None:
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.mark.parametrize("name", ["varied", "renamed"])
def test_export_bytes_are_those_written_before_the_export_was_tuned(store: Store, tmp_path: Path, name: str) -> None:
    _fill(store, name, _varied if name == "varied" else _renamed)
    db = str(store.engine.url) if store.engine.dialect.name == "postgresql" else store.engine.url.database
    assert db is not None
    url = store.engine.url.render_as_string(hide_password=False) if store.engine.dialect.name != "sqlite" else db
    golden_csv = (GOLDEN / f"{name}.csv").read_bytes()
    golden_jsonl = (GOLDEN / f"{name}.jsonl").read_bytes()
    _export("--db", url, name, "-o", str(tmp_path / "out.csv"))
    _export("--db", url, name, "-o", str(tmp_path / "out.jsonl"))
    assert (tmp_path / "out.csv").read_bytes() == golden_csv
    assert (tmp_path / "out.jsonl").read_bytes() == golden_jsonl
    assert _export("--db", url, name) == golden_csv
    assert _export("--db", url, name, "--format", "jsonl") == golden_jsonl
    # and the plain whole read says the same (so the golden files are the export's, not an accident of theirs)
    run_id = store.get_run(name).id
    whole_csv, whole_jsonl = io.StringIO(newline=""), io.StringIO()
    write_csv(store.job_rows(run_id), whole_csv)
    write_jsonl(store.job_rows(run_id), whole_jsonl)
    assert whole_csv.getvalue().encode() == golden_csv
    assert whole_jsonl.getvalue().encode() == golden_jsonl
    assert golden_csv.count(b"\r\n") > (53 if name == "varied" else 3)  # header and every row, line breaks inside


def write_golden(target: Path) -> None:  # pragma: no cover - how tests/export/golden/ was made (see the docstring)
    """`python -c 'from tests.export.test_export_bytes import write_golden as w; from pathlib import Path;
    w(Path("tests/export/golden"))'`: the files from the export as it stands."""
    import tempfile

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "golden.db")
        try:
            for name, jobs in (("varied", _varied), ("renamed", _renamed)):
                _fill(store, name, jobs)
                db = str(Path(tmp) / "golden.db")
                (target / f"{name}.csv").write_bytes(_export("--db", db, name))
                (target / f"{name}.jsonl").write_bytes(_export("--db", db, name, "--format", "jsonl"))
        finally:
            store.close()
