"""How well batchgen uses what the API allows, side by side with a plain poller.

    python benchmarks/bench.py            # full sizes (a few minutes), writes BENCHMARKS.md
    python benchmarks/bench.py --smoke    # tiny sizes (CI): checks the benchmark works, always exits 0

Every scenario gets a fresh emulator in its own process (benchmarks/emulator_proc.py) with an exact run time
per generation and no rate limit, and every client runs in its own process too, so CPU time and peak RSS are
the client's alone. Requests are counted on the server side from the emulator's ledger: every HTTP request it
received (enqueues, polls, lists, downloads, model look-ups, access checks), each SSE stream counted once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "openai-sora-2-pro"
KEY = "bench-key"

# The options the benchmark gives batchgen, all stated in BENCHMARKS.md. The emulator has no rate limit, so the
# submit rate is lifted (the default 10/s would be the bottleneck by design, not by fault); poll-only mode polls
# as often as the plain poller does. Everything else is the default a user gets.
BATCHGEN_OPTIONS: dict[str, Any] = {"submit_rate": 10_000.0}
POLL_EVERY = 5.0  # the plain poller's interval, and batchgen's poll_interval in --poll-only mode


@dataclass(frozen=True)
class Sizes:
    requests_jobs: int
    requests_duration: float
    requests_c: int
    makespan_jobs: int
    makespan_duration: float
    makespan_c: int
    throughput_jobs: int
    throughput_c: int
    scale_jobs: int
    poll_every: float
    latency_s: float  # the makespan row with a slow API: every /api/ai/ request waits this long on the emulator
    throughput_poll_every: float  # the plain poller's interval on instant jobs (its CPU per job, not its speed)


FULL = Sizes(500, 2.0, 50, 200, 0.5, 20, 5_000, 64, 100_000, POLL_EVERY, 0.1, 0.05)
SMOKE = Sizes(24, 0.2, 6, 20, 0.1, 5, 100, 16, 2_000, 0.3, 0.02, 0.05)


# ---- the emulator process ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def emulator(duration_s: float, seed: int = 1, latency_s: float = 0.0) -> Iterator[Emulator]:
    port = free_port()
    cmd = [sys.executable, str(HERE / "emulator_proc.py"), "--port", str(port), "--seed", str(seed)]
    proc = subprocess.Popen([*cmd, "--duration-s", str(duration_s), "--latency-s", str(latency_s)])
    emu = Emulator(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                emu.ledger()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator process did not start")
            time.sleep(0.05)
        yield emu
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Emulator:
    base_url: str
    proc: subprocess.Popen[bytes]

    def ledger(self) -> dict[str, Any]:
        reply = httpx.get(self.base_url + "/__bench/ledger", timeout=30)
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data


# ---- what one client run did ---------------------------------------------------------------------------------


def write_manifest(directory: Path, jobs: int, repeat: int = 1) -> Path:
    prompts = jobs // repeat
    lines = "\n".join(f'    - "clip {i} of an ox"' for i in range(prompts))
    path = directory / "bench.yaml"
    path.write_text(
        f'name: bench\nmodel: {MODEL}\nparams:\n  seconds: "4"\nmatrix:\n  prompt:\n{lines}\nrepeat: {repeat}\n',
        encoding="utf-8",
    )
    return path


def bodies(jobs: int, repeat: int = 1) -> list[dict[str, Any]]:
    return [{"model": MODEL, "prompt": f"clip {i} of an ox", "seconds": "4"} for i in range(jobs // repeat)] * repeat


def client(emu: Emulator, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one client in its own process; returns what it reported plus the emulator's ledger."""
    spec = {**spec, "base_url": emu.base_url}
    out = subprocess.run(
        [sys.executable, str(HERE / "bench.py"), "--client", json.dumps(spec)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    report["ledger"] = emu.ledger()
    return report


def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    """The child side of `client`: run batchgen or the plain poller, report times, CPU and peak RSS."""
    import anyio

    work = Path(spec["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    cpu0 = time.process_time()
    wall0 = time.time()
    noticed: dict[str, float]
    if spec["kind"] == "plain":
        sys.path.insert(0, str(HERE))
        from plain_poller import run_plain

        out = work / "out" if spec["download"] else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        result = anyio.run(
            lambda: run_plain(
                spec["base_url"],
                KEY,
                bodies(spec["jobs"], spec.get("repeat", 1)),
                concurrency=spec["concurrency"],
                poll_every=spec["poll_every"],
                out_dir=out,
            )
        )
        noticed, elapsed, ok = result.noticed, result.elapsed_s, result.failed == 0
    else:
        from batchgen.api import resume_async, run_async

        db = work / "state" / "batchgen.db"
        options = {**BATCHGEN_OPTIONS, **spec.get("options", {})}
        if spec.get("resume"):
            summary = anyio.run(lambda: resume_async(db=db, base_url=spec["base_url"], api_key=KEY, **options))
        else:
            manifest = write_manifest(work, spec["jobs"], spec.get("repeat", 1))
            if not spec["download"]:
                watch_successes(db)
            summary = anyio.run(
                lambda: run_async(
                    manifest,
                    db=db,
                    base_url=spec["base_url"],
                    api_key=KEY,
                    out=work / "out",
                    concurrency=spec["concurrency"],
                    download=spec["download"],
                    poll_only=spec.get("poll_only", False),
                    **options,
                )
            )
        noticed = recorded_times(db) if not spec["download"] else {}
        elapsed, ok = summary.elapsed_s, summary.exit_code == 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "ok": ok,
        "elapsed_s": elapsed,
        "wall_start": wall0,
        "cpu_s": time.process_time() - cpu0,
        "peak_rss_mb": peak,
        "noticed": noticed,
    }


def watch_successes(db: Path) -> None:
    """Create the state database and a trigger that stamps the moment each job row turns succeeded.

    `updated_at` cannot serve: batchgen rewrites it after the run when it fills in costs. The trigger runs
    inside batchgen's own transaction, so its stamp is when the transition was written (ms precision).
    """
    from batchgen.engine.store import Store

    Store.open(db).close()
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("CREATE TABLE bench_succeeded (generation_id TEXT, at REAL)")
        con.execute(
            "CREATE TRIGGER bench_stamp AFTER UPDATE OF status ON jobs "
            "WHEN NEW.status = 'succeeded' AND OLD.status != 'succeeded' BEGIN "
            "INSERT INTO bench_succeeded VALUES (NEW.generation_id, (julianday('now') - 2440587.5) * 86400.0); END"
        )


def recorded_times(db: Path) -> dict[str, float]:
    """generation id -> when batchgen recorded it succeeded (downloads off: the step that noticed it)."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        return dict(con.execute("SELECT generation_id, at FROM bench_succeeded").fetchall())


# ---- figures ---------------------------------------------------------------------------------------------------


def requests_per_job(report: dict[str, Any], jobs: int) -> float:
    ledger = report["ledger"]
    return (len(ledger["requests"]) + ledger["stream_connections"]) / jobs


def makespan(report: dict[str, Any]) -> float:
    """First enqueue received -> last generation terminal, both on the emulator's clock."""
    ledger = report["ledger"]
    return max(ledger["terminal_times"].values()) - min(t for t, _ in ledger["enqueues"])


def latencies_ms(report: dict[str, Any]) -> tuple[float, float]:
    """p50 and p99 of terminal (emulator) -> recorded (client), in ms."""
    terminal = report["ledger"]["terminal_times"]
    values = sorted((t - terminal[g]) * 1000 for g, t in report["noticed"].items() if g in terminal)
    if not values:
        return math.nan, math.nan
    p99 = values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]
    return statistics.median(values), p99


def first_enqueue(report: dict[str, Any]) -> float:
    return min(t for t, method, path, _ in report["ledger"]["requests"] if method == "POST" and path == "/api/ai/queue")


# ---- scenarios ---------------------------------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    setup: str
    sse: str
    poll: str
    plain: str
    target: str
    verdict: str


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def scenario_requests(s: Sizes, work: Path) -> list[Row]:
    n, c, d = s.requests_jobs, s.requests_c, s.requests_duration
    base = {"jobs": n, "concurrency": c, "download": True, "poll_every": s.poll_every}
    runs: dict[str, dict[str, Any]] = {}
    for name, spec in {
        "sse": {"kind": "batchgen"},
        "poll": {"kind": "batchgen", "poll_only": True, "options": {"poll_interval": s.poll_every}},
        "plain": {"kind": "plain"},
        "sse_repeat": {"kind": "batchgen", "repeat": 4},
        "plain_repeat": {"kind": "plain", "repeat": 4},
    }.items():
        with emulator(d) as emu:
            log(f"requests: {name}: {n} jobs of {d} s, C = {c}")
            runs[name] = client(emu, {**base, **spec, "workdir": str(work / f"requests-{name}")})
    rpj = {k: requests_per_job(r, n) for k, r in runs.items()}
    spans = {k: makespan(r) for k, r in runs.items()}
    setup = f"{n} jobs of {d:g} s, C = {c}, downloads on"
    return [
        Row(
            "HTTP requests per job",
            setup,
            f"{rpj['sse']:.3f}",
            f"{rpj['poll']:.3f}",
            f"{rpj['plain']:.3f} ({rpj['plain'] / rpj['sse']:.2f}x SSE)",
            "<= 2.02 (SSE)",
            verdict(rpj["sse"] <= 2.02 and runs["sse"]["ok"]),
        ),
        Row(
            "HTTP requests per job, repeat 4",
            setup + ", each prompt x 4",
            f"{rpj['sse_repeat']:.3f}",
            "",
            f"{rpj['plain_repeat']:.3f}",
            "<= 1.3 (SSE)",
            verdict(rpj["sse_repeat"] <= 1.3 and runs["sse_repeat"]["ok"]),
        ),
        Row(
            "makespan (first enqueue -> last terminal)",
            setup,
            f"{spans['sse']:.2f} s",
            f"{spans['poll']:.2f} s",
            f"{spans['plain']:.2f} s",
            f"ideal {math.ceil(n / c) * d:g} s",
            "info",
        ),
    ]


def scenario_makespan(s: Sizes, work: Path) -> list[Row]:
    n, c, d = s.makespan_jobs, s.makespan_c, s.makespan_duration
    ideal = math.ceil(n / c) * d
    base = {"jobs": n, "concurrency": c, "download": False, "poll_every": s.poll_every}
    runs: dict[str, dict[str, Any]] = {}
    for name, spec in {
        "sse": {"kind": "batchgen"},
        "poll": {"kind": "batchgen", "poll_only": True, "options": {"poll_interval": s.poll_every}},
        "plain": {"kind": "plain"},
    }.items():
        with emulator(d) as emu:
            log(f"makespan/latency: {name}: {n} jobs of exactly {d} s, C = {c}")
            runs[name] = client(emu, {**base, **spec, "workdir": str(work / f"makespan-{name}")})
    slow = s.latency_s
    for name, spec in {"sse_slow": {"kind": "batchgen"}, "plain_slow": {"kind": "plain"}}.items():
        with emulator(d, latency_s=slow) as emu:
            log(f"makespan with {slow * 1000:g} ms per request: {name}: {n} jobs of exactly {d} s, C = {c}")
            runs[name] = client(emu, {**base, **spec, "workdir": str(work / f"makespan-{name}")})
    ratio = {k: makespan(r) / ideal for k, r in runs.items()}
    # every refill after the first wave must reach the server once, and the emulator holds each request `slow`
    # before handling it: no client that keeps to C can start the next wave sooner than that
    waves = math.ceil(n / c)
    ideal_slow = ideal + (waves - 1) * slow
    lat = {k: latencies_ms(r) for k, r in runs.items()}
    setup = f"{n} jobs of exactly {d:g} s, C = {c}, downloads off"

    def slow_fmt(key: str) -> str:
        span = makespan(runs[key])
        return f"{span / ideal:.3f} ({span / ideal_slow:.3f} of {ideal_slow:g} s)"

    def fmt(pair: tuple[float, float]) -> str:
        return f"p50 {pair[0]:.1f} / p99 {pair[1]:.1f} ms"

    return [
        Row(
            "makespan / ideal",
            f"{setup}; ideal = ceil(N/C) x {d:g} s = {ideal:g} s",
            f"{ratio['sse']:.3f}",
            f"{ratio['poll']:.3f}",
            f"{ratio['plain']:.3f}",
            "<= 1.03 (SSE)",
            verdict(ratio["sse"] <= 1.03 and runs["sse"]["ok"]),
        ),
        Row(
            f"makespan / ideal, every request {slow * 1000:g} ms",
            f"{setup}; the emulator holds every /api/ai/ request {slow * 1000:g} ms before handling it (not the "
            f"event stream); ideal {ideal:g} s, and in brackets against {ideal:g} s + {waves - 1} refills x "
            f"{slow * 1000:g} ms = {ideal_slow:g} s",
            slow_fmt("sse_slow"),
            "",
            slow_fmt("plain_slow"),
            f"<= 1.05 (SSE, of {ideal:g} s)",
            verdict(ratio["sse_slow"] <= 1.05 and runs["sse_slow"]["ok"]),
        ),
        Row(
            "completion detection latency",
            setup + "; emulator terminal time -> client's record time",
            fmt(lat["sse"]),
            fmt(lat["poll"]),
            fmt(lat["plain"]),
            "p99 <= 50 ms (SSE)",
            verdict(lat["sse"][1] <= 50.0),
        ),
    ]


def scenario_throughput(s: Sizes, work: Path) -> list[Row]:
    n, c = s.throughput_jobs, s.throughput_c
    base = {"jobs": n, "concurrency": c, "download": True, "poll_every": s.throughput_poll_every}
    reports: dict[str, dict[str, Any]] = {}
    for kind in ("batchgen", "plain"):
        with emulator(0.0) as emu:
            log(f"throughput: {kind}: {n} instant jobs, C = {c}")
            reports[kind] = client(emu, {**base, "kind": kind, "workdir": str(work / f"tput-{kind}")})
    cpu = {k: r["cpu_s"] / n * 1000 for k, r in reports.items()}
    rate = {k: n / r["elapsed_s"] for k, r in reports.items()}

    def fmt(kind: str) -> str:
        peak = reports[kind]["peak_rss_mb"]
        return f"{rate[kind]:.0f} jobs/s; {cpu[kind]:.2f} ms CPU/job; peak RSS {peak:.0f} MB"

    return [
        Row(
            "orchestration throughput",
            f"{n:,} instant jobs, C = {c}, downloads on; whole run incl. planning (batchgen) in the CPU figure; "
            f"the plain poller polls every {s.throughput_poll_every:g} s here (CPU per job, not its speed)",
            fmt("batchgen"),
            "",
            f"{fmt('plain')} ({cpu['plain'] / cpu['batchgen']:.2f}x batchgen's CPU/job)",
            ">= 500 jobs/s, <= 2 ms CPU/job, <= 1/3 of the plain poller's CPU/job",
            verdict(
                rate["batchgen"] >= 500
                and cpu["batchgen"] <= 2.0
                and cpu["plain"] >= 3 * cpu["batchgen"]
                and reports["batchgen"]["ok"]
            ),
        )
    ]


def scenario_plan(s: Sizes) -> list[Row]:
    log(f"plan at scale: {s.scale_jobs:,} jobs (benchmarks/plan_scale.py)")
    out = subprocess.run(
        [sys.executable, str(HERE / "plan_scale.py"), "--jobs", str(s.scale_jobs)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    totals = [float(line.split(" total ")[1].split("s")[0]) for line in out.splitlines() if " total " in line]
    peak = float(out.split("peak RSS")[1].split("MiB")[0])
    worst = max(totals)
    return [
        Row(
            "plan at scale",
            f"{s.scale_jobs:,}-job manifest, matrix and CSV rows (benchmarks/plan_scale.py)",
            f"{worst:.2f} s (slower shape), peak RSS {peak:.0f} MiB",
            "",
            "",
            "<= 3 s, <= 300 MB",
            verdict(worst <= 3.0 and peak <= 300),
        )
    ]


def scenario_resume(s: Sizes, work: Path) -> list[Row]:
    n, left = s.scale_jobs, 10
    directory = work / "resume"
    directory.mkdir(parents=True, exist_ok=True)
    with emulator(0.0) as emu:
        log(f"resume at scale: {n:,}-job run, {left} left")
        seed_run(write_manifest(directory, n), directory / "state" / "batchgen.db", emu.base_url, left)
        spawned = time.time()
        report = client(emu, {"kind": "batchgen", "resume": True, "workdir": str(directory), "download": True})
    from_spawn = first_enqueue(report) - spawned
    from_call = first_enqueue(report) - report["wall_start"]
    return [
        Row(
            "resume at scale",
            f"{n:,}-job run with {left} jobs left: start -> first enqueue",
            f"{from_spawn:.2f} s from process start ({from_call:.2f} s from the resume call)",
            "",
            "",
            "<= 3 s",
            verdict(from_spawn <= 3.0 and report["ok"]),
        )
    ]


def seed_run(manifest: Path, db: Path, base_url: str, left: int) -> None:
    """A run of the manifest's jobs where all but `left` already succeeded (as if it had run)."""
    import anyio

    from batchgen.engine.planning import make_plan
    from batchgen.engine.store import NewJob, Store

    plan = anyio.run(lambda: make_plan(manifest, base_url=base_url, api_key=KEY, state_dir=db.parent))
    plan.check()
    store = Store.open(db)
    try:
        run = store.ensure_run(
            plan.manifest.name,
            manifest_path=str(manifest),
            manifest_sha256="",
            base_url=base_url,
            out_dir=str(manifest.parent / "out"),
            settings={"concurrency": 10, "download": True, "poll_only": False, "max_cost": None},
        )
        lease = store.acquire_run(run.id)
        store.add_jobs(lease, [NewJob(j.spec, j.estimated_cost, j.media_type) for j in plan.jobs])
        store.release_run(lease)
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute(
            "UPDATE jobs SET status = 'succeeded', generation_id = 'done-' || id "
            "WHERE id NOT IN (SELECT id FROM jobs ORDER BY id DESC LIMIT ?)",
            (left,),
        )


# ---- report ------------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def machine() -> str:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    return f"{os.cpu_count()} cores ({cpu}), {ram} RAM, Python {platform.python_version()}, {platform.system()}"


def table(rows: list[Row]) -> str:
    head = "| measure | set-up | batchgen (SSE) | batchgen --poll-only | plain poller | target | result |\n"
    head += "|---|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {r.measure} | {r.setup} | {r.sse} | {r.poll or '-'} | {r.plain or '-'} | {r.target} | {r.verdict} |\n"
        for r in rows
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; checks that the benchmark works")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--only", help="comma-separated scenarios (requests,makespan,throughput,plan,resume)")
    args = parser.parse_args()
    if args.client:
        print(json.dumps(run_client(json.loads(args.client))))
        return 0
    sizes = SMOKE if args.smoke else FULL
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="batchgen-bench-") as tmp:
        work = Path(tmp)
        scenarios = {
            "requests": lambda: scenario_requests(sizes, work),
            "makespan": lambda: scenario_makespan(sizes, work),
            "throughput": lambda: scenario_throughput(sizes, work),
            "plan": lambda: scenario_plan(sizes),
            "resume": lambda: scenario_resume(sizes, work),
        }
        chosen = args.only.split(",") if args.only else list(scenarios)
        rows = [row for name in chosen for row in scenarios[name]()]
    text = table(rows)
    print(text)
    log(f"done in {time.monotonic() - started:.0f} s")
    if not args.smoke and not args.only:
        command = "python benchmarks/bench.py"
        write_report(args.output, text, command)
    return 0


def revision() -> str:
    """The commit measured, and whether batchgen/ had uncommitted changes in the working tree."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "batchgen"], capture_output=True, text=True, cwd=ROOT, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "an unknown commit"
    commit = f"commit `{head.stdout.strip() or '?'}`"
    return commit + (" with uncommitted changes to batchgen/" if dirty.stdout.strip() else "")


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the section of BENCHMARKS.md that starts at `heading` (up to the next `## ` heading), or append it:
    how benchmarks/networks.py and benchmarks/scale_out.py keep their own sections."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if heading in old:
        before, rest = old.split(heading, 1)
        after = rest[rest.index("\n## ") + 1 :] if "\n## " in rest else ""
        new = before + text + ("\n" + after if after else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new, encoding="utf-8")


def write_report(path: Path, text: str, command: str) -> None:
    """Replace the generated section of BENCHMARKS.md (between the markers), keeping the prose around it."""
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    options = ", ".join(f"{k}={v:g}" for k, v in BATCHGEN_OPTIONS.items())
    section = (
        f"{begin}\n"
        f"Generated by `{command}` on {dt.date.today().isoformat()}.\n\n"
        f"Machine: {machine()}.\n\n"
        f"batchgen options: defaults except {options}; --poll-only runs use poll_interval={POLL_EVERY:g} s "
        f"(the plain poller's interval).\n\n{text}{end}\n"
    )
    old = path.read_text(encoding="utf-8") if path.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin in old and end in old:
        new = old.split(begin)[0] + section + old.split(end, 1)[1].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    path.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
