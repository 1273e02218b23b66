"""A runner on a 1,000,000-job run (issue 15): how soon `batchgen resume` sends its first enqueue, and the runner's
memory and pace while it works through the run.

    .venv/bin/python benchmarks/million_run.py [--jobs 1000000] [--seconds 60] [--smoke]

A SQLite state database is filled with one run of `--jobs` pending image jobs (bulk inserts into the store's own
schema: no planning, no emulator). The emulator runs in its own process (benchmarks/emulator_proc.py, instant
generations, unlimited credits). `batchgen resume` is then started as a fresh process and, from the emulator's own
ledger, timed from its spawn to the first enqueue the emulator receives; its resident memory (VmRSS, VmHWM) is
sampled every 0.5 s for `--seconds`, after which it is interrupted (Ctrl-C, the way a user would) and the jobs it
finished are counted in the database. The full run of a million jobs is not waited for: at the measured pace it
would take hours, and memory is flat once the first pages are claimed (see the samples).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import emulator, machine, revision, write_section  # noqa: E402

from batchgen.engine.store import Store  # noqa: E402

SECTION = "## A million-job run: resume, memory, pace (issue 15)"
KEY = "bench-key"
MODEL = "flux-1-dev"  # an image model of the emulator's catalogue


def fill(db: Path, jobs: int, base_url: str, out_dir: Path, concurrency: int) -> None:
    """One run named "million" of `jobs` pending jobs, as `batchgen run` leaves a run it was interrupted in before
    sending anything (the estimate is the emulator's price of the model)."""
    store = Store.open(db)
    try:
        store.ensure_run(
            "million", manifest_path="million.yaml", manifest_sha256="", base_url=base_url, out_dir=str(out_dir),
            settings={"concurrency": concurrency, "download": True}, budget=None,
        )  # fmt: skip
        run_id = store.get_run("million").id
    finally:
        store.close()
    rows = (
        (run_id, f"{i:016x}", MODEL, json.dumps({"prompt": f"An ox, take {i}"}), "{}", 0, "rows", "image", "pending",
         0, 0.025, "2026-11-30 00:00:00")
        for i in range(jobs)
    )  # fmt: skip
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.executemany(
            "INSERT INTO jobs (run_id, key, model, params_json, variables_json, repeat, origin, media_type, status, "
            "attempts, estimated_cost, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def memory_kb(pid: int) -> tuple[int, int]:
    """The process's resident set now and at its peak (VmRSS, VmHWM), in KiB; (0, 0) once it is gone."""
    found = {"VmRSS": 0, "VmHWM": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in found:
                found[name] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def first_enqueue(base_url: str) -> float | None:
    ledger = httpx.get(f"{base_url}/__bench/ledger", timeout=30).json()
    return min((e[0] for e in ledger["enqueues"]), default=None)


def finished(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return int(con.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0])


def waiting_for_download(db: Path) -> int:
    """Paid results not yet fetched when the runner was stopped (its download backlog)."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        return int(con.execute("SELECT count(*) FROM jobs WHERE status = 'downloading'").fetchone()[0])


def measure(work: Path, jobs: int, seconds: float, concurrency: int) -> dict[str, Any]:
    db = work / "state" / "batchgen.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    with emulator(0.0) as emu:
        started = time.monotonic()
        fill(db, jobs, emu.base_url, work / "out", concurrency)
        filled_s = time.monotonic() - started
        print(f"million-run: {jobs:,} pending jobs written in {filled_s:.1f} s", file=sys.stderr)
        env = {**os.environ, "OXEN_API_KEY": KEY, "BATCHGEN_DB": str(db), "OXEN_CONFIG_DIR": str(work / "oxen")}
        spawned = time.time()
        runner = subprocess.Popen(
            [sys.executable, "-m", "batchgen.cli", "resume", "--base-url", emu.base_url, "--submit-rate", "10000"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=work,
        )  # fmt: skip
        samples: list[tuple[float, int]] = []
        first: float | None = None
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and runner.poll() is None:
                time.sleep(0.5)
                rss, _ = memory_kb(runner.pid)
                samples.append((time.monotonic() - started, rss))
                if first is None:
                    first = first_enqueue(emu.base_url)
            _, peak_kb = memory_kb(runner.pid)
            used_cpu = cpu_s(runner.pid)
            ran_s = time.time() - spawned
        finally:
            runner.send_signal(signal.SIGINT)
            try:
                _, err = runner.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                runner.kill()
                _, err = runner.communicate()
        done = finished(db)
        backlog = waiting_for_download(db)
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "fill_s": filled_s,
        "first_enqueue_s": (first - spawned) if first is not None else None,
        "seconds": ran_s,
        "peak_rss_mb": peak_kb / 1024,
        "rss_mb_last": samples[-1][1] / 1024 if samples else 0.0,
        "rss_mb_at_10s": next((kb / 1024 for t, kb in samples if t >= filled_s + 10), 0.0),
        "done": done,
        "backlog": backlog,
        "cpu_s": used_cpu,
        "exit": runner.returncode,
        "stderr_tail": err.strip().splitlines()[-1:] if err else [],
    }


def table(r: dict[str, Any]) -> str:
    first = r["first_enqueue_s"]
    rate = r["done"] / r["seconds"] if r["seconds"] else 0.0
    cpu_ms = r["cpu_s"] / r["done"] * 1000 if r["done"] else float("nan")
    rows = [
        ("resume -> first enqueue", f"{first:.2f} s" if first is not None else "none", "<= 3 s",
         "PASS" if first is not None and first <= 3 else "MISS"),
        ("runner peak RSS while running", f"{r['peak_rss_mb']:.0f} MB (at 10 s {r['rss_mb_at_10s']:.0f} MB, "
         f"at the end {r['rss_mb_last']:.0f} MB)", "< 1 GB", "PASS" if r["peak_rss_mb"] < 1024 else "MISS"),
        ("jobs finished in the window", f"{r['done']:,} in {r['seconds']:.0f} s ({rate:.0f} jobs/s, "
         f"{cpu_ms:.2f} ms runner CPU/job incl. start-up)", "info", "-"),
        ("paid results waiting for their download at the stop", f"{r.get('backlog', 0):,}",
         "<= download_backlog (256) + C", "PASS" if r.get("backlog", 0) <= 256 + r["concurrency"] else "MISS"),
    ]  # fmt: skip
    lines = ["| measure | batchgen | target | result |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def section(r: dict[str, Any], command: str) -> str:
    return (
        f"{SECTION}\n\n"
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} ({revision()}).\n\n"
        f"Machine: {machine()}.\n\n"
        f"{r['jobs']:,} pending image jobs in a SQLite state database, C = {r['concurrency']}, downloads on, "
        f"instant generations on the emulator (its own process); `batchgen resume` in a fresh process, "
        f"interrupted after {r['seconds']:.0f} s.\n\n"
        f"{table(r)}\n\n"
        "Before the fix (commit 68ccd4b) a runner on SQLite claimed every unfinished job at once and kept every job "
        "it had seen; its watchdog walked them all four times a second. Now it claims pages of 1,000 (at least 4x "
        "concurrency) as its line runs low, and forgets a job once it is finished; the progress line's aggregates "
        "are read at most 1/20th of the time. Before `947748a` the runner sent jobs faster than their results "
        "could be fetched (the emulator draws each PNG in pure Python, about 17 ms, on the same two cores): at "
        "`4cecdfa` 1,204 jobs finished in 60 s (20 jobs/s, 50.7 ms of runner CPU per finished job, peak RSS 143 MB) "
        "while thousands of paid results waited for their download. Now submitting waits while 256 of them do "
        "(`RunOptions.download_backlog`), so the runner's time goes to fetching what is paid; the pace left is the "
        "emulator's drawing and the runner's CPU per job (bench.py's throughput row).\n\n"
    )


@contextlib.contextmanager
def work_dir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="batchgen-million-run-") as name:
        yield Path(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the runner works before Ctrl-C")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="5,000 jobs for 8 s; writes nothing")
    parser.add_argument("--keep", type=Path, help="keep the database and files in this (new) directory")
    parser.add_argument("--output", type=Path, default=HERE.parent / "BENCHMARKS.md")
    args = parser.parse_args()
    jobs, seconds = (5_000, 8.0) if args.smoke else (args.jobs, args.seconds)
    with work_dir(args.keep) as work:
        result = measure(work, jobs, seconds, args.concurrency)
    print(table(result))
    if result["first_enqueue_s"] is None or result["done"] == 0:
        print(f"million-run: the runner sent nothing: {result['stderr_tail']}", file=sys.stderr)
        return 1
    if not args.smoke:
        command = "python benchmarks/million_run.py" + ("" if args.jobs == 1_000_000 else f" --jobs {args.jobs}")
        write_section(args.output, SECTION, section(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
