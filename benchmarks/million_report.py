"""The report at dataset scale (issue 15 item 5): `batchgen report` of a 1,000,000-job run, and the pages it writes
opened in headless Chromium; and the 10,000-job report (one file) as before.

    .venv/bin/python benchmarks/million_report.py --work /tmp/rbench --write   # rewrites its rows in BENCHMARKS.md
    .venv/bin/python benchmarks/million_report.py --jobs 50000                 # another size; prints, writes nothing
    .venv/bin/python benchmarks/million_report.py --smoke                      # 20,000 jobs, 200 cells: it works

The databases are benchmarks/million.py's (`fill`), the timing too (`timed`: a fresh process, spawn to exit, its
own peak RSS), and the paint probe (`first_paint`: first contentful paint, DOMContentLoaded, load). The rows go
between the markers below, inside million.py's section, which keeps them when it rewrites its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (HERE, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench import revision  # noqa: E402
from million import PAINT_S, SECTION, Timed, best_of, fill, first_paint, log, timed, verdict, work_dir  # noqa: E402

BEGIN, END = "<!-- report-pages:begin -->", "<!-- report-pages:end -->"


def fastest_paint(page: Path, profile: Path, runs: int) -> dict[str, float]:
    """The quickest of `runs` openings in a fresh browser each (the others were slowed by the shared machine)."""
    return min((first_paint(page, profile.with_name(f"{profile.name}-{n}")) for n in range(runs)),
               key=lambda p: max(p["fcp"], p["dcl"]))  # fmt: skip


def measure(work: Path, jobs: int, cells: int, runs: int) -> dict[str, object]:
    big, small = work / "million.db", work / "cells.db"
    if not big.exists():
        fill(big, "million", jobs, work / "million-out")
    if not small.exists():
        fill(small, "cells", cells, work / "cells-out", media=True)
    site = work / "site"
    index = site / "report.html"
    results: dict[str, object] = {"jobs": jobs, "cells": cells}
    results["report"] = timed(["report", "--db", str(big), "million", "-o", str(index)])
    pages = sorted((site / "report-pages").iterdir())
    sizes = [p.stat().st_size for p in pages]
    results["files"] = (len(pages), sum(sizes), max(sizes), index.stat().st_size)
    log(f"report of {jobs:,} jobs: {results['report']}, pages {results['files']}")
    results["index_paint"] = fastest_paint(index, work / "profile-index", runs)
    results["page_paint"] = fastest_paint(pages[len(pages) // 2], work / "profile-page", runs)
    log(f"index {results['index_paint']}, a page {results['page_paint']}")
    single = work / "cells-out" / "report.html"
    results["single"] = best_of(runs, ["report", "--db", str(small), "cells", "-o", str(single)], single)
    results["single_paint"] = fastest_paint(single, work / "profile-single", runs)
    log(f"report of {cells:,} jobs: {results['single']}, {results['single_paint']}")
    return results


def _opened(paint: dict[str, float]) -> str:
    return (
        f"first contentful paint {paint['fcp'] / 1000:.2f} s, DOMContentLoaded {paint['dcl'] / 1000:.2f} s, "
        f"load event {paint['load'] / 1000:.2f} s"
    )


def rows(r: dict[str, object]) -> str:
    jobs, cells = int(r["jobs"]), int(r["cells"])  # type: ignore[call-overload]
    report, single = r["report"], r["single"]
    assert isinstance(report, Timed) and isinstance(single, Timed)
    pages, total, largest, index_bytes = r["files"]  # type: ignore[misc]
    index, page, one = r["index_paint"], r["page_paint"], r["single_paint"]
    assert isinstance(index, dict) and isinstance(page, dict) and isinstance(one, dict)
    slowest = max(max(index["fcp"], index["dcl"]), max(page["fcp"], page["dcl"])) / 1000
    lines = [
        ("`batchgen report` (paged)", f"{jobs:,}-job run",
         "one HTML page of about 800 MB, every row held (not run: no browser opens it)",
         f"{report.seconds:.1f} s ({report.cpu_s:.1f} s of CPU), peak RSS {report.peak_mb:.0f} MB; an index of "
         f"{index_bytes / 1e3:.0f} kB and "
         f"{pages:,} pages ({total / 1e6:.0f} MB, the largest {largest / 1e6:.2f} MB)",
         "peak RSS well under 1 GB", verdict(report.peak_mb < 1024)),
        ("its index in headless Chromium", f"{pages:,} pages listed", "—", _opened(index),
         f"<= {PAINT_S:g} s", verdict(max(index["fcp"], index["dcl"]) / 1000 <= PAINT_S)),
        ("a section page in headless Chromium", f"page {pages // 2 + 1:,} of {pages:,}; "
         f"{int(page['cells']):,} cells drawn at first", "—", _opened(page), f"<= {PAINT_S:g} s",
         verdict(slowest <= PAINT_S)),
        ("`batchgen report` (one file)", f"{cells:,} jobs, one per cell",
         "1.67 s, peak RSS 161 MB, 8.3 MB of HTML",
         f"{single.seconds:.2f} s ({single.cpu_s:.2f} s of CPU), peak RSS {single.peak_mb:.0f} MB, "
         f"{single.output_bytes / 1e6:.1f} MB of HTML",
         "info", "info"),
        ("that file in headless Chromium", f"{cells:,} jobs; {int(one['cells']):,} cells drawn at first",
         "first contentful paint 0.17 s, DOMContentLoaded 0.36 s, load event 0.36 s", _opened(one),
         f"<= {PAINT_S:g} s", verdict(max(one["fcp"], one["dcl"]) / 1000 <= PAINT_S)),
    ]  # fmt: skip
    head = "| measure | set-up | before | after | target | result |\n|---|---|---|---|---|---|\n"
    return head + "".join(f"| {' | '.join(line)} |\n" for line in lines)


def block(text: str) -> str:
    return (
        f"{BEGIN}\n### The report at a million jobs (item 5)\n\n"
        f"Generated by `python benchmarks/million_report.py --write` on {dt.date.today().isoformat()} at "
        f"{revision()}, on the machine above (shared with other work while it ran: the million-job report once, the rest the fastest of three).\n\n{text}\n"
        "How: past 10,000 jobs `batchgen report` writes an index (summary, money, the grid's axes, every page listed "
        "by section) and section pages of at most 1,000 jobs in `report-pages/` next to it, with links to the index "
        "and the previous and next page. The jobs stream once from one snapshot (engine/job_stream.py): each is "
        "added to the summary and to a 20,000-job sample to choose the layout from, and its figure and axes' values "
        "filed into an SQLite spool in the staging folder; then the layout is chosen, each job's place in the grid "
        "worked out in SQL, and the pages written one at a time. The 10,000-job report is the one file it was (the "
        "same code).\n"
        f"{END}\n"
    )


def write_block(path: Path, text: str) -> None:
    """Put the block in million.py's section of BENCHMARKS.md: in place of the old one, else at the section's end."""
    old = path.read_text(encoding="utf-8")
    if BEGIN in old and END in old:
        before, rest = old.split(BEGIN, 1)
        new = before + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        head, rest = old.split(SECTION, 1)
        cut = rest.index("\n## ") + 1 if "\n## " in rest else len(rest)
        new = head + SECTION + rest[:cut].rstrip("\n") + "\n\n" + text + "\n" + rest[cut:]
    path.write_text(new, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="jobs in the big run (default 1,000,000)")
    parser.add_argument("--cells", type=int, default=None, help="jobs in the one-file report (default 10,000)")
    parser.add_argument("--smoke", action="store_true", help="20,000 jobs, 200 cells; writes nothing")
    parser.add_argument("--runs", type=int, default=3, help="runs of the small report and of each opening (3)")
    parser.add_argument("--work", type=Path, default=None, help="keep the databases here (default: a temp dir)")
    parser.add_argument("--write", action="store_true", help="put the rows in BENCHMARKS.md (the full size only)")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    jobs = args.jobs or (20_000 if args.smoke else 1_000_000)
    cells = args.cells or (200 if args.smoke else 10_000)
    with work_dir(args.work) as work:
        results = measure(work, jobs, cells, 1 if args.smoke else args.runs)
    text = rows(results)
    print(text)
    if args.write and not args.smoke and args.jobs is None and args.cells is None:
        write_block(args.output, block(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
