"""Inspection at dataset scale (issue 15): `status`, `export` and `report` on a 1,000,000-job run.

    .venv/bin/python benchmarks/million.py                  # 1,000,000 jobs; rewrites its BENCHMARKS.md section
    .venv/bin/python benchmarks/million.py --jobs 200000    # another size; prints, writes nothing
    .venv/bin/python benchmarks/million.py --smoke          # 2,000 jobs, 200 cells (CI): checks it works
    .venv/bin/python benchmarks/million.py --work /tmp/million --only status,export --tree /tmp/before
                                        # the same data through another checkout's commands (a git worktree)

A state database is filled with one run straight through the store's own schema (Store.open runs the migrations;
the rows go in with executemany in one transaction, no emulator): a matrix of subjects x seconds x aspect ratios x
resolutions, 98% succeeded, 1% failed, 1% still pending, one ledger row per job that was sent. Then each command
runs in a fresh process (`python -m batchgen.cli ...`), timed from spawn to exit, its peak RSS read from the
child's own rusage (os.wait4). The report is rendered for a run of `--cells` jobs (one job per cell, with a real
PNG each) and opened in headless Chromium: first paint and the load event, as the page reports them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (HERE, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench import machine, revision, write_section  # noqa: E402

from batchgen.emulator.media import png_bytes  # noqa: E402
from batchgen.engine.store import Store  # noqa: E402

SECTION = "## A million jobs: status, export, report (issue 15)"
MODEL = "openai-sora-2-pro"
T0 = dt.datetime(2026, 11, 1, 12, 0, 0)
STATUS_S, EXPORT_S, EXPORT_MB, PAINT_S = 1.0, 15.0, 300.0, 2.0  # the targets
PARTS = frozenset({"status", "export", "report"})


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_mb: float
    output_bytes: int = 0
    cpu_s: float = 0.0  # user + system time of the command: what a shared machine's noise does not inflate


# ---- filling a state database --------------------------------------------------------------------------------


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")  # how SQLAlchemy stores a DateTime on SQLite


def fill(db: Path, name: str, jobs: int, out_dir: Path, *, media: bool = False) -> None:
    """One run of `jobs` jobs in `db`, as a finished-but-messy run leaves it. With `media`, every succeeded job's
    PNG is written under out_dir, where its output_path points."""
    store = Store.open(db)
    try:
        store.ensure_run(
            name, manifest_path=f"{name}.yaml", manifest_sha256="", base_url="http://127.0.0.1:1",
            out_dir=str(out_dir), settings={"concurrency": 64, "download": True},
        )  # fmt: skip
        run_id = store.get_run(name).id
    finally:
        store.close()
    if media:
        out_dir.mkdir(parents=True, exist_ok=True)
    subjects = max(1, jobs // 12)
    seconds, aspects, resolutions = ("4", "8", "12"), ("landscape", "portrait"), ("standard", "high")
    job_rows, ledger_rows = [], []
    for i in range(jobs):
        subject = f"animal number {i % subjects}"
        rest = i // subjects
        params = {
            "prompt": f"A {subject} driving a tractor",
            "seconds": seconds[rest % 3],
            "aspect_ratio": aspects[rest // 3 % 2],
            "resolution": resolutions[rest // 6 % 2],
        }
        key = f"{i:016x}"
        status, error, error_class = "succeeded", None, None
        if i % 100 == 7:
            status, error, error_class = "failed", "the provider refused the prompt", "content_policy"
        elif i % 100 == 8:
            status = "pending"
        sent = status != "pending"
        enqueued = T0 + dt.timedelta(milliseconds=5 * i)
        generation = f"gen-{i:012d}" if sent else None
        output = f"{out_dir.name}/{key}.png" if status == "succeeded" else None
        if media and output:
            (out_dir.parent / output).write_bytes(png_bytes(key, 48, 27))
        job_rows.append((
            run_id, key, MODEL, json.dumps(params), json.dumps({"animal": subject}), 0, "matrix", "image", status,
            generation, 1 if sent else 0,
            _stamp(enqueued) if sent else None, _stamp(enqueued) if sent else None,
            _stamp(enqueued + dt.timedelta(seconds=20)) if sent else None,
            _stamp(enqueued + dt.timedelta(seconds=80)) if sent else None,
            f"https://hub.oxen.ai/api/results/{generation}.png" if status == "succeeded" else None,
            output, f"{i:064x}" if output else None, 4096 if output else None, 0.25, 0.25 if sent else None,
            error, error_class, "bench-host" if output else None, _stamp(enqueued + dt.timedelta(seconds=81)),
        ))  # fmt: skip
        if sent:
            ledger_rows.append((
                generation, run_id, i + 1, MODEL, json.dumps(params), "enqueued", _stamp(enqueued), _stamp(enqueued),
                "failed" if status == "failed" else "succeeded", 0.25, 0.25, None, _stamp(enqueued),
            ))  # fmt: skip
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        first = con.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs").fetchone()[0]
        con.executemany(
            "INSERT INTO jobs (run_id, key, model, params_json, variables_json, repeat, origin, media_type, status, "
            "generation_id, attempts, intent_at, enqueued_at, started_at, completed_at, result_url, output_path, "
            "sha256, bytes, estimated_cost, cost, error, error_class, downloaded_by, updated_at) "
            "VALUES (" + ", ".join("?" * 25) + ")",
            job_rows,
        )
        con.executemany(
            "INSERT INTO generations (generation_id, run_id, job_id, model, request_json, how, seen_at, enqueued_at, "
            "remote_status, estimated_cost, cost, result_url, updated_at) VALUES (" + ", ".join("?" * 13) + ")",
            [(g, r, job - 1 + first, *rest) for g, r, job, *rest in ledger_rows],
        )


# ---- timing commands in fresh processes ----------------------------------------------------------------------


# Linux keeps a process's peak RSS across exec, and a child starts with its parent's: measured straight from this
# process (which held the filled database's rows), every command would show this process's peak. So a small
# spawner (a fresh interpreter that imports nothing) starts the command and reports the command's own time and peak.
SPAWNER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"seconds": time.perf_counter() - started, "peak_kb": usage.ru_maxrss,
               "cpu_s": usage.ru_utime + usage.ru_stime}, out)
sys.exit(os.waitstatus_to_exitcode(status))
"""


TREE = [ROOT]  # where `python -m batchgen.cli` runs: this checkout, or another one's (--tree) for a before/after


def timed(args: list[str], *, stdout: Path | None = None) -> Timed:
    """`python -m batchgen.cli ARGS` in a fresh process: wall time from spawn to exit, and its own peak RSS."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report, contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(stdout, "wb")) if stdout else subprocess.DEVNULL
        command = [sys.executable, "-m", "batchgen.cli", *args]
        done = subprocess.run(
            [sys.executable, "-c", SPAWNER, report.name, *command], stdout=sink, stderr=subprocess.PIPE, cwd=TREE[0]
        )
        if done.returncode != 0:
            raise RuntimeError(f"batchgen {' '.join(args)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
        figures = json.loads(Path(report.name).read_text())
    return Timed(figures["seconds"], figures["peak_kb"] / 1024, cpu_s=figures["cpu_s"])


def best_of(runs: int, args: list[str], output: Path | None = None, stdout: Path | None = None) -> Timed:
    """The fastest of `runs` runs (the others were disturbed by something else on the machine), the largest RSS."""
    results = [timed(args, stdout=stdout) for _ in range(runs)]
    size = (output or stdout).stat().st_size if (output or stdout) else 0
    return Timed(min(r.seconds for r in results), max(r.peak_mb for r in results), size, min(r.cpu_s for r in results))


# ---- the report in headless Chromium -------------------------------------------------------------------------

PAINT_PROBE = """
new Promise((resolve) => {
  const seen = () => performance.getEntriesByType("paint").find((e) => e.name === "first-contentful-paint");
  (function poll() {
    const paint = seen();
    if (paint && document.readyState === "complete") {
      const nav = performance.getEntriesByType("navigation")[0];
      const images = [...document.querySelectorAll("figure.job img")];
      resolve(JSON.stringify({
        fcp: paint.startTime, dcl: nav ? nav.domContentLoadedEventEnd : null, load: nav ? nav.loadEventEnd : null,
        cells: document.querySelectorAll("td.cell").length, images: images.length,
        loaded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
      }));
    } else {
      setTimeout(poll, 20);
    }
  })();
})
"""


def first_paint(report: Path, profile: Path) -> dict[str, float]:
    """Open the report in a fresh headless Chromium: first contentful paint and the load event (ms from navigation
    start, as the page's Performance API reports them), cells on the page, images loaded at that point."""
    from tests.export.devtools import DevTools, chromium_executable, evaluate, open_page

    executable = chromium_executable()
    if executable is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    browser = DevTools(executable, profile)
    try:
        session = open_page(browser, report.as_uri())
        return dict(json.loads(evaluate(browser, session, PAINT_PROBE)))
    finally:
        browser.close()


# ---- the benchmark -------------------------------------------------------------------------------------------


def measure(work: Path, jobs: int, cells: int, runs: int, only: frozenset[str] = PARTS) -> dict[str, object]:
    big, small = work / "million.db", work / "cells.db"
    started = time.perf_counter()
    if not big.exists():  # a --work directory keeps its databases: the same data before and after a change
        fill(big, "million", jobs, work / "million-out")
    filled = time.perf_counter() - started
    log(f"filled {jobs:,} jobs in {filled:.1f} s ({big.stat().st_size / 1e6:.0f} MB)")
    if not small.exists() and "report" in only:
        fill(small, "cells", cells, work / "cells-out", media=True)
    results: dict[str, object] = {"jobs": jobs, "cells": cells, "fill_s": filled}
    if "status" in only:
        results["status"] = best_of(runs, ["status", "--db", str(big), "million"])
        log(f"status: {results['status']}")
        results["status_json"] = best_of(runs, ["status", "--json", "--db", str(big), "million"])
        log(f"status --json: {results['status_json']}")
    if "export" in only:
        measure_export(work, big, runs, results)
    if "report" in only:
        measure_report(work, small, cells, runs, results)
    return results


def measure_export(work: Path, big: Path, runs: int, results: dict[str, object]) -> None:
    for fmt in ("csv", "jsonl"):
        target = work / f"million.{fmt}"
        results[f"export_{fmt}"] = best_of(runs, ["export", "--db", str(big), "million", "-o", str(target)], target)
        log(f"export {fmt}: {results[f'export_{fmt}']}")
        target.unlink()
    piped = work / "million-stdout.csv"
    results["export_stdout"] = best_of(1, ["export", "--db", str(big), "million"], stdout=piped)
    log(f"export to stdout: {results['export_stdout']}")
    piped.unlink()


def measure_report(work: Path, small: Path, cells: int, runs: int, results: dict[str, object]) -> None:
    report = work / "cells-out" / "report.html"
    results["report"] = best_of(runs, ["report", "--db", str(small), "cells", "-o", str(report)], report)
    log(f"report of {cells:,} jobs: {results['report']}")
    paints = [first_paint(report, work / f"profile-{n}") for n in range(runs)]
    results["paint"] = min(paints, key=lambda p: p["fcp"])
    log(f"first paint: {results['paint']}")


def log(message: str) -> None:
    print(f"million: {message}", file=sys.stderr, flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# The same benchmark at commit fa30f61, before issue 15's inspection work, on the same machine and data (2 cores,
# shared with other work at the time; one run each): the "before" column.
BEFORE = {
    "status": "4.39 s, peak RSS 76 MB",
    "status_json": "4.78 s, peak RSS 76 MB",
    "export_csv": "128.22 s, peak RSS 4,013 MB",
    "export_jsonl": "68.90 s, peak RSS 4,013 MB",
    "export_stdout": "65.44 s, peak RSS 4,013 MB",
    "report": "1.74 s, peak RSS 159 MB, 7.8 MB of HTML",
    "paint": "first contentful paint 0.15 s, load event 3.95 s (DOMContentLoaded 4.0-5.4 s in later runs)",
}


def table(r: dict[str, object]) -> str:
    jobs, cells = int(r["jobs"]), int(r["cells"])  # type: ignore[call-overload]
    status, status_json = r["status"], r["status_json"]
    csv_, jsonl, piped, report = r["export_csv"], r["export_jsonl"], r["export_stdout"], r["report"]
    paint: dict[str, float] = r["paint"]  # type: ignore[assignment]
    assert isinstance(status, Timed) and isinstance(status_json, Timed) and isinstance(csv_, Timed)
    assert isinstance(jsonl, Timed) and isinstance(piped, Timed) and isinstance(report, Timed)
    rows = [
        ("`batchgen status`", f"{jobs:,}-job run", BEFORE["status"],
         f"{status.seconds:.2f} s, peak RSS {status.peak_mb:.0f} MB", f"<= {STATUS_S:g} s",
         verdict(status.seconds <= STATUS_S)),
        ("`batchgen status --json`", f"{jobs:,}-job run", BEFORE["status_json"],
         f"{status_json.seconds:.2f} s, peak RSS {status_json.peak_mb:.0f} MB", f"<= {STATUS_S:g} s",
         verdict(status_json.seconds <= STATUS_S)),
    ]  # fmt: skip
    for key, label, t in (("export_csv", "csv -o FILE", csv_), ("export_jsonl", "jsonl -o FILE", jsonl),
                          ("export_stdout", "csv to stdout", piped)):  # fmt: skip
        ok = t.seconds <= EXPORT_S and t.peak_mb <= EXPORT_MB
        rows.append((
            f"`batchgen export` {label}", f"{jobs:,} rows ({t.output_bytes / 1e6:.0f} MB written)", BEFORE[key],
            f"{t.seconds:.2f} s, peak RSS {t.peak_mb:.0f} MB", f"<= {EXPORT_S:g} s, < {EXPORT_MB:g} MB", verdict(ok),
        ))  # fmt: skip
    rows.append((
        "`batchgen report`", f"{cells:,} jobs, one per cell", BEFORE["report"],
        f"{report.seconds:.2f} s, peak RSS {report.peak_mb:.0f} MB, {report.output_bytes / 1e6:.1f} MB of HTML",
        "info", "info",
    ))  # fmt: skip
    opened = max(paint["fcp"], paint["dcl"]) / 1000
    rows.append((
        "report in headless Chromium", f"{cells:,} jobs; {int(paint['cells']):,} cells drawn at first", BEFORE["paint"],
        f"first contentful paint {paint['fcp'] / 1000:.2f} s, DOMContentLoaded {paint['dcl'] / 1000:.2f} s, load "
        f"event {paint['load'] / 1000:.2f} s; {int(paint['loaded'])} image(s) loaded by then",
        f"first paint and the page parsed <= {PAINT_S:g} s", verdict(opened <= PAINT_S),
    ))  # fmt: skip
    head = "| measure | set-up | before (`fa30f61`) | after | target | result |\n|---|---|---|---|---|---|\n"
    return head + "".join(f"| {' | '.join(row)} |\n" for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="jobs in the big run (default 1,000,000)")
    parser.add_argument("--cells", type=int, default=None, help="jobs (cells) in the report (default 10,000)")
    parser.add_argument("--runs", type=int, default=None, help="runs of each command; the fastest counts (3)")
    parser.add_argument("--smoke", action="store_true", help="2,000 jobs, 200 cells, one run each; writes nothing")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--work", type=Path, default=None, help="keep the databases here (default: a temp dir)")
    parser.add_argument("--only", default=",".join(sorted(PARTS)), help="some of status,export,report; writes nothing")
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="run the commands of this checkout (e.g. a git worktree of an older "
        "commit, for a before/after on the same data); writes nothing",
    )  # fmt: skip
    args = parser.parse_args()
    only = frozenset(args.only.split(","))
    if not only <= PARTS:
        parser.error(f"--only takes some of {','.join(sorted(PARTS))}")
    TREE[0] = args.tree.resolve()
    jobs = args.jobs or (2_000 if args.smoke else 1_000_000)
    cells = args.cells or (200 if args.smoke else 10_000)
    runs = args.runs or (1 if args.smoke else 3)
    with work_dir(args.work) as work:
        results = measure(work, jobs, cells, runs, only)
    if only != PARTS or TREE[0] != ROOT:
        for key, value in results.items():
            print(f"{key}: {value}")
        return 0
    text = table(results)
    print(text)
    if not args.smoke and args.jobs is None and args.cells is None:
        command = "python benchmarks/million.py"
        write_section(args.output, SECTION, section(text, command) + report_rows(args.output))
    return 0


def report_rows(path: Path) -> str:
    """The paged report's rows (benchmarks/million_report.py) in this section, kept when it is rewritten."""
    begin, end = "<!-- report-pages:begin -->", "<!-- report-pages:end -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin not in old or end not in old:
        return ""
    return "\n" + begin + old.split(begin, 1)[1].split(end, 1)[0] + end + "\n"


@contextlib.contextmanager
def work_dir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="batchgen-million-") as tmp:
        yield Path(tmp)


def section(text: str, command: str) -> str:
    return (
        f"{SECTION}\n\nGenerated by `{command}` on {dt.date.today().isoformat()} at {revision()}.\n\n"
        f"Machine: {machine()}; the two cores were shared with other work while it ran, so the wall times carry "
        "its noise (the fastest of three runs counts).\n\n"
        "How it measures: a state database is filled with one 1,000,000-job run through the store's own schema "
        "(executemany in one transaction; 98% succeeded, 1% failed, 1% pending, a ledger row per job sent). Each "
        "command runs in a fresh process (`python -m batchgen.cli ...`), timed from spawn to exit, Python's start "
        "and imports included (about 0.4 s of `status`); its peak RSS is the child's own (os.wait4). The report is "
        "of a 10,000-job run, one job per cell, each with its PNG, opened from disk in headless Chromium: first "
        "contentful paint, DOMContentLoaded and the load event as the page's Performance API reports them.\n\n"
        f"{text}\n"
        "What changed: `status` reads counts, the estimate and money in three aggregate reads over two covering "
        "indexes (migration m005) and the paid-but-unused generations once, as one merge of two index scans "
        "(m006), instead of scanning the run's rows six times, and imports only its own module's code (a command's "
        "module is imported when the command is asked for); `export` streams rows page by page from one read "
        "snapshot (the columns guessed from the first page and checked on every row, the file started over when a "
        "later job has an axis the guess lacks; to stdout, a first pass over the keys SQLite lists), as plain "
        "tuples from SQLite's cursor written without a JobRow, each column's cell made for the kind of value it "
        "holds, 2,000 lines a write; the report draws its first 200 "
        "figures and keeps later table rows as data that its script draws as they come near the window, videos "
        '`preload="none"` until then and images `loading="lazy"`.\n\n'
        "Still missing: `status` is the Python start and imports (about 0.4 s, most of it SQLAlchemy and "
        "SQLModel) plus three scans of a million index entries (about 0.5 s); `export` is SQLite's cursor making 21 "
        "Python values a row (about a third) and pure-Python work per row (JSON decoding, times, the cells).\n"
    )


if __name__ == "__main__":
    sys.exit(main())
