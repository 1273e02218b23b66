"""The benchmark's pieces work end to end at a tiny size: its figures are computed and sane (not fast)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as the module NAME (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH.parent / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench")


@pytest.mark.timeout(60)
def test_batchgen_and_plain_poller_figures_are_sane(bench: ModuleType, tmp_path: Path) -> None:
    jobs = 6
    base = {"jobs": jobs, "concurrency": 3, "download": False, "poll_every": 0.1}
    with bench.emulator(0.05) as emu:
        ours = bench.client(emu, {**base, "kind": "batchgen", "workdir": str(tmp_path / "ours")})
    with bench.emulator(0.05) as emu:
        plain = bench.client(emu, {**base, "kind": "plain", "workdir": str(tmp_path / "plain")})
    for report in (ours, plain):
        assert report["ok"]
        assert report["ledger"]["created"] == jobs
        assert len(report["noticed"]) == jobs
        assert bench.requests_per_job(report, jobs) >= 1.0
        assert 0.1 <= bench.makespan(report) < 10  # two waves of 0.05 s at least
        p50, p99 = bench.latencies_ms(report)
        assert math.isfinite(p50) and 0 <= p50 <= p99 < 5_000
        assert report["cpu_s"] > 0 and report["peak_rss_mb"] > 10
    # the plain poller polls each job at least once and sends no stream: one enqueue + >= 1 poll per job
    assert bench.requests_per_job(plain, jobs) >= 2.0


def test_report_keeps_the_prose_around_the_generated_section(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nprose before\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\nprose after\n")
    bench.write_report(path, "| a |\n", "python benchmarks/bench.py")
    text = path.read_text()
    assert "prose before" in text and "prose after" in text and "old" not in text
    assert "| a |" in text and "python benchmarks/bench.py" in text and "Machine:" in text


@pytest.fixture(scope="module")
def money_audit() -> ModuleType:
    return load_benchmark("money_audit")


@pytest.mark.timeout(120)
def test_money_audit_smoke_every_finding_is_charged_once_per_job(money_audit: ModuleType) -> None:
    # issue 10's findings 3, 4, 7, 8 and 9 replayed against the emulator: a row that fails is a money bug
    rows = money_audit.audit(smoke=True)
    assert [r.finding for r in rows] == ["3", "4", "7", "8", "9"]
    assert all(r.ok for r in rows), money_audit.table(rows)
    assert all(r.fired and r.charged == r.succeeded > 0 and r.unused == 0 for r in rows)
    budget = next(r for r in rows if r.finding == "7")
    assert budget.refused == 4 and budget.budget is not None and budget.charged_total <= budget.budget


@pytest.fixture(scope="module")
def million() -> ModuleType:
    return load_benchmark("million")


@pytest.mark.timeout(120)
def test_million_smoke_times_every_command_in_a_fresh_process(million: ModuleType, tmp_path: Path) -> None:
    # issue 15's inspection benchmark at 2,000 jobs and 200 cells: every figure is measured and sane (not fast)
    from tests.export.devtools import chromium_executable
    from tests.kit import require

    require(chromium_executable(), "chromium is not installed (apt-get install chromium; .ci/run installs it)")
    results = million.measure(tmp_path, 2_000, 200, 1)
    timed = [results[k] for k in ("status", "status_json", "export_csv", "export_jsonl", "export_stdout", "report")]
    assert all(0 < t.seconds < 60 and 10 < t.peak_mb < 1_000 for t in timed), timed
    csv_, jsonl = results["export_csv"], results["export_jsonl"]
    assert csv_.output_bytes > 2_000 * 100 and jsonl.output_bytes > csv_.output_bytes  # every row, keys per line
    assert results["export_stdout"].output_bytes == csv_.output_bytes  # the same CSV, streamed to stdout
    paint = results["paint"]
    assert paint["cells"] > 0 and 0 < paint["fcp"] < 30_000 and 0 < paint["dcl"] <= paint["load"] < 30_000
    text = million.table(results)
    assert text.count("\n| ") == 7 and "2,000-job run" in text


@pytest.mark.timeout(120)
def test_million_run_smoke_resumes_a_large_run_and_measures_it(tmp_path: Path) -> None:
    # issue 15's runner benchmark at 5,000 jobs for a few seconds: the runner sends, finishes jobs, and its memory
    # and first enqueue are measured (sane, not fast)
    module = load_benchmark("million_run")
    result = module.measure(tmp_path, 5_000, 6.0, 16)
    assert result["first_enqueue_s"] is not None and 0 < result["first_enqueue_s"] < 60, result
    assert result["done"] > 0 and 10 < result["peak_rss_mb"] < 1_000, result
    assert result["exit"] == 130, result  # interrupted with Ctrl-C, and said how to resume
    assert "| resume -> first enqueue |" in module.table(result)


@pytest.mark.timeout(120)
def test_million_report_smoke_writes_pages_and_opens_them(million: ModuleType, tmp_path: Path) -> None:
    # issue 15 item 5's benchmark just past the one-file limit: the paged report is written in a fresh process and
    # its index, a page and the one-file report open in Chromium (sane figures, not fast ones)
    from tests.export.devtools import chromium_executable
    from tests.kit import require

    require(chromium_executable(), "chromium is not installed (apt-get install chromium; .ci/run installs it)")
    module = load_benchmark("million_report")
    results = module.measure(tmp_path, 10_500, 50, 1)
    pages, total, largest, index_bytes = results["files"]
    assert pages >= 11 and 0 < largest <= total and index_bytes > 0, results["files"]  # 1,000 jobs a page at most
    assert 10 < results["report"].peak_mb < 1_000 and results["single"].output_bytes > 0
    for opened in ("index_paint", "page_paint", "single_paint"):
        assert 0 < results[opened]["fcp"] < 30_000, results[opened]
    assert results["page_paint"]["cells"] > 0
    assert module.rows(results).count("\n| ") == 5  # a row per measure
