"""`batchgen export` and `batchgen report` against a real state store in a temp directory."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchgen.cli import app
from batchgen.core.jobs import JobSpec
from batchgen.core.remote import RemoteGeneration
from batchgen.emulator.media import mp4_bytes
from batchgen.engine.store import NewJob, Store
from batchgen.errors import OutputError, StateError

from .rows import T0


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run of 4 jobs in $BATCHGEN_DB: two downloaded, one failed, one pending; outputs under ./out/clip."""
    monkeypatch.chdir(tmp_path)
    store = Store.open(Path(os.environ["BATCHGEN_DB"]))
    try:
        run = store.ensure_run(
            "clip", manifest_path="clip.yaml", manifest_sha256="0" * 64, base_url="http://emulator",
            out_dir="out/clip", settings={},
        )  # fmt: skip
        specs = [
            JobSpec("openai-sora-2-pro", {"prompt": p, "seconds": s}, variables={"subject": p})
            for p in ("=cmd|' /C calc'!A0", "an ox")
            for s in ("4", "8")
        ]
        lease = store.acquire_run(run.id)
        store.add_jobs(lease, [NewJob(spec, estimated_cost=1.2) for spec in specs])
        jobs = store.claim_jobs(lease, len(specs))  # a runner's writes need the jobs held
        Path("out/clip").mkdir(parents=True)
        # the jobs' lives through the store's named transitions, as a runner would live them
        store.record_intents(lease, jobs[:3])
        store.record_enqueued(lease, [(job, f"g{job.id}") for job in jobs[:2]])
        for job in jobs[:2]:
            path = f"out/clip/{job.key}.mp4"
            Path(path).write_bytes(mp4_bytes(job.key))
            remote = RemoteGeneration(
                f"g{job.id}", "succeeded", started_at=T0 + timedelta(seconds=2), completed_at=T0 + timedelta(seconds=9)
            )
            store.mark_succeeded_remotely(lease, job, remote, download=True)
            store.mark_downloaded(lease, job, path=path, sha256="0" * 64, size=len(mp4_bytes(job.key)))
            store.record_remote_rows(
                lease,
                [(RemoteGeneration(f"g{job.id}", "succeeded", enqueued_at=T0, started_at=remote.started_at), 1.2)],
            )
        store.mark_rejected(lease, [jobs[2].id], error="<b>refused</b>")
        store.release_run(lease)
    finally:
        store.close()
    return tmp_path


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=True)
    if result.exception is not None:
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def test_export_to_a_file_is_complete_and_leaves_no_temp_file(workdir: Path) -> None:
    invoke("export", "clip", "-o", "results.csv")
    with (workdir / "results.csv").open(encoding="utf-8", newline="") as f:
        records = list(csv.DictReader(f))
    assert [r["status"] for r in records] == ["succeeded", "succeeded", "failed", "pending"]
    assert records[0]["prompt"] == "'=cmd|' /C calc'!A0"
    assert records[0]["run_seconds"] == "7.0" and records[0]["completed_at"] == "2026-08-01T12:00:09Z"
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".results")] == []
    mode = stat.S_IMODE((workdir / "results.csv").stat().st_mode)
    assert mode & stat.S_IRGRP  # not the 0600 of a temp file


def test_export_defaults_to_the_latest_run_on_stdout(workdir: Path) -> None:
    out = invoke("export")
    records = list(csv.DictReader(io.StringIO(out)))
    assert len(records) == 4 and records[3]["status"] == "pending"


def test_export_format_follows_the_suffix_or_the_flag(workdir: Path) -> None:
    invoke("export", "-o", "results.jsonl")
    lines = (workdir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["prompt"] == "=cmd|' /C calc'!A0"  # exact in JSONL
    out = invoke("export", "--format", "jsonl", "-o", "-")
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["succeeded", "succeeded", "failed", "pending"]


def test_report_is_written_next_to_the_outputs_with_relative_media(workdir: Path) -> None:
    invoke("report", "clip")
    html = (workdir / "out" / "clip" / "report.html").read_text(encoding="utf-8")
    sources = [part.split('"')[0] for part in html.split('<video controls muted preload="none" src="')[1:]]
    assert len(sources) == 2
    assert all((workdir / "out" / "clip" / src).is_file() for src in sources)
    assert "&lt;b&gt;refused&lt;/b&gt;" in html and "<b>refused</b>" not in html


def test_report_elsewhere_links_back_to_the_outputs(workdir: Path) -> None:
    invoke("report", "-o", "reports/today.html", "--rows", "seconds", "--cols", "subject")
    html = (workdir / "reports" / "today.html").read_text(encoding="utf-8")
    assert html.count('src="../out/clip/') == 2


def test_unknown_axis_missing_run_and_missing_db_are_user_errors(workdir: Path) -> None:
    with pytest.raises(Exception, match="no axis named 'colour'"):
        invoke("report", "--cols", "colour")
    with pytest.raises(StateError, match="no run named 'nope'"):
        invoke("export", "nope")
    with pytest.raises(StateError, match="no state database"):
        invoke("export", "--db", str(workdir / "missing.db"))


def test_unwritable_destination_is_an_output_error(workdir: Path) -> None:
    (workdir / "blocker").write_text("a file, not a directory")
    with pytest.raises(OutputError, match=r"cannot write blocker/results\.csv"):
        invoke("export", "-o", "blocker/results.csv")
