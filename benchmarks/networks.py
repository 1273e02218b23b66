"""batchgen against the plain poller over three network paths: direct, through nginx streaming, through nginx
buffering and gzipping (the stream delivers nothing).

    .venv/bin/python benchmarks/networks.py             # 100 jobs, 3 paths; rewrites its section of BENCHMARKS.md
    .venv/bin/python benchmarks/networks.py --smoke     # 12 jobs, direct + buffering; writes nothing; exits 1 when
                                                        # batchgen missed a job or was slower than the poller allows

Run from the repository's root. For each path and each client: a fresh emulator in this process (flux-1-dev at
time scale 0.1: 0.5-3 s runs after a 0.05-0.3 s queue delay, fixed by the seed and the request, so both clients
get the same run times), behind fresh nginx (tests/network/proxies.py: TLS with a throw-away CA) when the path has
one. batchgen runs as `batchgen run` in a process of its own, as a user runs it; the plain poller
(benchmarks/plain_poller.py, polling every 5 s) in another. Wall time is from spawning the client to its exit.
Requests are counted on the emulator as benchmarks/bench.py counts them; nginx's readiness probe is answered by
nginx itself and never reaches it. Every server binds 127.0.0.1; every process is reaped; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for entry in (str(ROOT), str(HERE)):  # `tests.*` from the root; bench and plain_poller from here
    if entry not in sys.path:
        sys.path.insert(0, entry)

from bench import BATCHGEN_OPTIONS, POLL_EVERY, machine, revision, write_section  # noqa: E402

from batchgen.emulator import Account, EmulatorConfig, RunningEmulator, running_emulator  # noqa: E402
from tests.kit import IMAGE_MODEL, assert_exactly_once, write_manifest  # noqa: E402
from tests.network.poller_entry import bodies  # noqa: E402
from tests.network.proxies import Certificates, Mode, make_certificates, nginx  # noqa: E402

KEY = "oxen-key-for-the-network-benchmark"
SEED = 7
TIME_SCALE = 0.1  # as tests/network/test_real_proxies.py: flux-1-dev's documented 5-30 s runs take 0.5-3 s
CONCURRENCY = 10
JOBS, SMOKE_JOBS = 100, 12
SUBMIT_RATE = BATCHGEN_OPTIONS["submit_rate"]  # as bench.py: the emulator has no rate limit
SLACK_RATIO, SLACK_S = 1.5, 5.0  # --smoke fails when batchgen takes longer than the poller's time x 1.5 + 5 s
SECTION = "## Networks: direct and behind a buffering proxy (issue 12)"
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@dataclass(frozen=True)
class NetworkPath:
    name: str
    mode: Mode | None  # None: straight to the emulator over http


DIRECT = NetworkPath("direct (http)", None)
STREAMING = NetworkPath("nginx streaming (https)", "streaming")
BUFFERING = NetworkPath("nginx buffering + gzip (https)", "buffering")


@dataclass
class Result:
    """One client's run over one path."""

    path: NetworkPath
    client: str
    jobs: int
    wall_s: float
    exit_code: int
    requests: list[tuple[float, str, str, int]]  # (time, method, path, status), event streams left out
    streams: int  # event streams opened, each counted once
    exactly_once: str  # "yes", or what was wrong
    timing: Timing
    status: str = ""  # `batchgen status` after the run (batchgen only)
    stream: str = ""  # what batchgen's last progress line said of the event stream ("live", "connecting: polling")

    @property
    def per_job(self) -> float:
        return (len(self.requests) + self.streams) / self.jobs

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.exactly_once == "yes"

    def kinds(self) -> Counter[str]:
        """The requests by what they asked for."""
        counted: Counter[str] = Counter()
        for _, method, path, _status in self.requests:
            counted[kind(method, path)] += 1
        counted["event stream"] += self.streams
        return counted


def kind(method: str, path: str) -> str:
    if path == "/api/ai/queue":
        return "enqueue" if method == "POST" else "list"
    if path.startswith("/api/ai/queue/") and method == "GET":
        return "poll"
    if "/file/" in path or path.startswith("/presigned/"):
        return "download"
    return "other"  # the model look-up, the cost read after the run (GET /api/ai/generations)


# ---- servers -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def served(path: NetworkPath, directory: Path, certs: Certificates) -> Iterator[tuple[RunningEmulator, str]]:
    """A fresh emulator (behind fresh nginx when the path has one): yields it and the URL a client is given."""
    directory.mkdir(parents=True)
    config = EmulatorConfig(keys={KEY: Account(username="bench", credits_usd=1e9)}, seed=SEED, time_scale=TIME_SCALE)
    with running_emulator(config) as emu:
        if path.mode is None:
            yield emu, emu.base_url
            return
        with nginx(emu.base_url, path.mode, directory, certs=certs) as site:
            emu.state.base_url = site.url  # result URLs name the proxy, as production's name the API's own host
            yield emu, site.url


def client_env(certs: Certificates) -> dict[str, str]:
    """The key, the throw-away CA to trust, no proxy from this shell, a wide terminal."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES and not k.startswith("BATCHGEN_")}
    env.pop("SSL_CERT_DIR", None)
    return {**env, "OXEN_API_KEY": KEY, "SSL_CERT_FILE": str(certs.ca), "COLUMNS": "200"}


def run_bounded(command: list[str], env: dict[str, str], timeout: float, log: Path) -> tuple[float, int]:
    """Run `command` from the repository's root, output to `log`; (wall seconds, exit code). Killed and reaped past
    `timeout` (exit code -9)."""
    started = time.monotonic()
    with log.open("wb") as sink, subprocess.Popen(command, stdout=sink, stderr=sink, env=env, cwd=ROOT) as process:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
            say(f"killed after {timeout:.0f} s: {' '.join(command[:4])} ... (output in {log})")
    return time.monotonic() - started, process.returncode


def settled(emu: RunningEmulator) -> tuple[list[tuple[float, str, str, int]], int]:
    """The requests the emulator received, once its log held still for 0.1 s (a request is logged just after its
    reply went, so the last ones land after the client exited); at most 5 s."""

    def read() -> tuple[list[tuple[float, str, str, int]], int]:
        ledger = emu.ledger
        records = [(r.time, r.method, r.path, r.status) for r in ledger.requests if r.path != "/api/events"]
        return records, ledger.stream_connections

    deadline = time.monotonic() + 5.0
    last = read()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if len(now[0]) == len(last[0]) and now[1] == last[1]:
            return now
        last = now
    return last


def keep_timeline(emu: RunningEmulator, directory: Path) -> None:
    """DIRECTORY/timeline.json: every request, enqueue, terminal time and download the emulator saw (for --keep)."""
    ledger = emu.ledger
    timeline = {
        "requests": [[r.time, r.method, r.path, r.status] for r in ledger.requests],
        "stream_connections": ledger.stream_connections,
        "enqueues": [[e.time, e.generation_ids] for e in ledger.enqueues],
        "terminal_times": ledger.terminal_times,
        "downloads": [[d.time, d.generation_id, d.status] for d in ledger.downloads],
    }
    (directory / "timeline.json").write_text(json.dumps(timeline), encoding="utf-8")


@dataclass(frozen=True)
class Timing:
    """What the emulator's ledger says of one run's timing and polls."""

    lag_s: list[float]  # per job: generation terminal -> its file first requested (how soon the client noticed)
    duration_p90_s: float  # enqueue -> terminal, 90th percentile over the run's generations
    list_active: list[int]  # per GET /api/ai/queue after the first enqueue: the running rows it could return
    polls_finished: int  # status polls of a generation already terminal


def timing(emu: RunningEmulator) -> Timing:
    ledger = emu.ledger
    terminal = ledger.terminal_times
    sent = {g: e.time for e in ledger.enqueues for g in e.generation_ids}
    first: dict[str, float] = {}
    for download in ledger.downloads:
        first.setdefault(download.generation_id, download.time)
    lags = sorted(first[g] - t for g, t in terminal.items() if g in first)
    durations = sorted(terminal[g] - t for g, t in sent.items() if g in terminal)
    start = min(sent.values(), default=math.nan)
    lists = [r.time for r in ledger.requests if r.method == "GET" and r.path == "/api/ai/queue" and r.time > start]
    active = [sum(1 for g, t in sent.items() if t <= at < terminal.get(g, math.inf)) for at in lists]
    polled = [(r.time, r.path.rsplit("/", 1)[1]) for r in ledger.requests if kind(r.method, r.path) == "poll"]
    return Timing(
        lag_s=lags,
        duration_p90_s=durations[int(0.9 * (len(durations) - 1))] if durations else math.nan,
        list_active=active,
        polls_finished=sum(1 for at, g in polled if at >= terminal.get(g, math.inf)),
    )


# ---- clients -----------------------------------------------------------------------------------------------------


def run_batchgen(path: NetworkPath, certs: Certificates, work: Path, jobs: int, timeout: float) -> Result:
    directory = work / f"{slug(path)}-batchgen"
    with served(path, directory, certs) as (emu, url):
        manifest = write_manifest(directory, jobs, model=IMAGE_MODEL, concurrency=CONCURRENCY, name="networks")
        db = directory / "state" / "batchgen.db"
        command = [sys.executable, "-m", "batchgen.cli", "-v", "run", str(manifest), "--db", str(db)]
        command += ["--base-url", url, "--out", str(directory / "out"), "--submit-rate", f"{SUBMIT_RATE:g}"]
        say(f"{path.name}: batchgen run, {jobs} jobs, concurrency {CONCURRENCY}")
        env = client_env(certs)
        wall, code = run_bounded(command, env, timeout, directory / "batchgen.log")
        requests, streams = settled(emu)
        try:
            rows = assert_exactly_once(emu, db)
            once = "yes" if len(rows) == jobs else f"no: {len(rows)} job rows for {jobs} jobs"
        except Exception as error:  # an AssertionError, or no database at all
            once = "no: " + (str(error).splitlines() or [type(error).__name__])[0][:200]
        status = batchgen_status(db, env)
        measured = timing(emu)
        keep_timeline(emu, directory)
    said = re.findall(r"\(stream ([^)]*)\)", (directory / "batchgen.log").read_text(encoding="utf-8", errors="replace"))
    stream = said[-1] if said else "?"
    return Result(path, "batchgen", jobs, wall, code, requests, streams, once, measured, status, stream)


def batchgen_status(db: Path, env: dict[str, str]) -> str:
    """`batchgen status --db DB` (what a user looks at after a run), or why there is none."""
    command = [sys.executable, "-m", "batchgen.cli", "status", "--db", str(db)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    except subprocess.TimeoutExpired:  # killed and reaped by subprocess.run
        return "(batchgen status did not answer within 60 s)"
    return done.stdout + done.stderr


def run_poller(path: NetworkPath, certs: Certificates, work: Path, jobs: int, timeout: float) -> Result:
    directory = work / f"{slug(path)}-poller"
    with served(path, directory, certs) as (emu, url):
        out = directory / "out"
        spec = {"base_url": url, "jobs": jobs, "out": str(out)}
        command = [sys.executable, str(Path(__file__).resolve()), "--poller", json.dumps(spec)]
        say(f"{path.name}: plain poller, {jobs} jobs, concurrency {CONCURRENCY}, polls every {POLL_EVERY:g} s")
        wall, code = run_bounded(command, client_env(certs), timeout, directory / "poller.log")
        requests, streams = settled(emu)
        created = len(emu.ledger.created_ids)
        written = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in out.iterdir()) if out.is_dir() else []
        if created != jobs:
            once = f"no: {created} generations created for {jobs} jobs"
        elif written != sorted(emu.ledger.served_sha256.values()) or len(written) != jobs:
            once = f"no: {len(written)} files, not the {jobs} the emulator served"
        else:
            once = "yes"
        measured = timing(emu)
        keep_timeline(emu, directory)
    return Result(path, "plain poller", jobs, wall, code, requests, streams, once, measured)


def poller_child(spec: dict[str, Any]) -> int:
    """The plain poller in this process (run by `run_poller` with --poller): every body once, files into `out`."""
    import anyio
    from plain_poller import run_plain

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    result = anyio.run(
        lambda: run_plain(
            spec["base_url"],
            os.environ["OXEN_API_KEY"],
            bodies(spec["jobs"]),
            concurrency=CONCURRENCY,
            poll_every=POLL_EVERY,
            out_dir=out,
        )
    )
    print(f"plain poller: {len(result.noticed)} finished, {result.failed} failed in {result.elapsed_s:.2f} s")
    return 0 if result.failed == 0 and len(result.noticed) == spec["jobs"] else 1


# ---- report ------------------------------------------------------------------------------------------------------


def slug(path: NetworkPath) -> str:
    return path.mode or "direct"


def say(message: str) -> None:
    print(f"networks: {message}", file=sys.stderr, flush=True)


def p50(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s" if values else "-"


def table(results: list[Result]) -> str:
    head = (
        "| path | client | wall s | requests/job | of which (enqueue / poll / list / download / stream / other) "
        "| terminal -> download p50 | exactly once |\n|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        k = r.kinds()
        parts = " / ".join(str(k[name]) for name in ("enqueue", "poll", "list", "download", "event stream", "other"))
        exit_note = "" if r.exit_code == 0 else f" (exit {r.exit_code})"
        rows.append(
            f"| {r.path.name} | {r.client} | {r.wall_s:.1f}{exit_note} | {r.per_job:.2f} | {parts} "
            f"| {p50(r.timing.lag_s)} | {r.exactly_once} |\n"
        )
    return head + "".join(rows)


def pair(results: list[Result], path: NetworkPath) -> tuple[Result, Result] | None:
    ours = next((r for r in results if r.path == path and r.client == "batchgen"), None)
    theirs = next((r for r in results if r.path == path and r.client == "plain poller"), None)
    return (ours, theirs) if ours and theirs else None


def reading(results: list[Result]) -> str:
    """A few lines of what the table says, every figure from this run."""
    lines = []
    for path in (DIRECT, STREAMING, BUFFERING):
        both = pair(results, path)
        if both is not None:
            lines.append(f"- {compared(path, *both)}")
    buffered, direct = pair(results, BUFFERING), pair(results, DIRECT)
    if buffered is not None:
        ours, theirs = buffered
        t = ours.timing
        slower = f": the run takes {ours.wall_s - direct[0].wall_s:.1f} s longer than direct" if direct else ""
        lines.append(
            f"- Behind the buffering proxy no event comes through (batchgen's progress line still said "
            f'"stream {ours.stream}" at the end), so batchgen polls each job on its learned schedule: first after '
            f"the longest of the run's recent durations, at most twice their median (the 90th percentile over this "
            f"run: {t.duration_p90_s:.1f} s), polling every 5 s like the poller until the first job finished. The "
            f"{CONCURRENCY} jobs of a wave are sent together and so come due together; most finished well before "
            f"that, and their slots stay taken until the poll (terminal -> download p50 {p50(t.lag_s)}){slower}."
        )
        extra = ours.per_job - theirs.per_job
        lists = len(t.list_active)  # those after the first enqueue; the one before it is the access check
        mean_active = statistics.mean(t.list_active) if t.list_active else 0.0
        fixed = (ours.kinds()["event stream"] + ours.kinds()["other"] + ours.kinds()["list"] - lists) / ours.jobs
        verdict = f"{extra:.2f} MORE requests per job than the poller" if extra > 0 else "no more requests"
        lines.append(
            f"- Requests behind the buffering proxy: batchgen makes {verdict}. Its status polls are "
            f"{ours.kinds()['poll'] / ours.jobs:.2f} per job ({t.polls_finished} of {ours.kinds()['poll']} found "
            f"the generation already finished), against the poller's {theirs.kinds()['poll'] / theirs.jobs:.2f}. "
            f"The difference is {lists / ours.jobs:.2f} per job of queue "
            f"lists ({lists}: one whenever 3 or more jobs come due at once; a list shows only the rows still "
            f"running, {mean_active:.1f} on average, so the finished jobs of the wave still need a read each) "
            f"and {fixed:.2f} of start-up and stream (the access check, which is a queue list, the model "
            f"look-up, the cost read after the run, one stream connection)."
        )
    failed = [r for r in results if not r.ok]
    if failed:  # otherwise the table's last column says it
        lines.append("- NOT exactly once: " + "; ".join(f"{r.path.name} {r.client}: {r.exactly_once}" for r in failed))
    return "\n".join(lines) + "\n"


def compared(path: NetworkPath, ours: Result, theirs: Result) -> str:
    faster = "faster" if ours.wall_s <= theirs.wall_s else "SLOWER"
    return (
        f"**{path.name}**: batchgen finishes in {ours.wall_s:.1f} s against the poller's {theirs.wall_s:.1f} s "
        f"({faster}, {theirs.wall_s / ours.wall_s:.2f}x), with {ours.per_job:.2f} requests per job against "
        f"{theirs.per_job:.2f}; it notices a finished generation after {p50(ours.timing.lag_s)} (p50) against "
        f"{p50(theirs.timing.lag_s)}."
    )


def nginx_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10)
        return (done.stderr or done.stdout).strip().split(": ", 1)[-1]
    return "nginx (version unknown)"


def section(results: list[Result], jobs: int, command: str) -> str:
    return (
        f"{SECTION}\n\n"
        f"Generated by `{command}` on {dt.date.today().isoformat()}, at {revision()}.\n\n"
        f"Machine: {machine()}; {nginx_version()}.\n\n"
        f"Set-up: {jobs} flux-1-dev jobs (0.5-3 s runs after a 0.05-0.3 s queue delay, the same per request for "
        f"both clients), concurrency {CONCURRENCY}, downloads on. Each client runs on its own fresh emulator (and "
        f"fresh nginx, TLS with a throw-away CA), as its own process: `batchgen run --submit-rate {SUBMIT_RATE:g}` "
        f"(otherwise defaults), and `benchmarks/plain_poller.py` polling every {POLL_EVERY:g} s. Wall time is "
        f"spawn to exit (imports and planning included). Requests are counted on the emulator as "
        f"`benchmarks/bench.py` counts them: every HTTP request it received, each event stream once; reading its "
        f"ledger and nginx's readiness probe never reach it; *other* is the model look-up and the cost read "
        f"after the run. *terminal -> download* is from a generation turning terminal on the emulator to the "
        f"client's first request for its file: how soon it noticed.\n\n"
        f"{table(results)}\n{reading(results)}"
    )


# ---- main --------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", type=int, default=None, help=f"jobs per run (default {JOBS}; {SMOKE_JOBS} with --smoke)"
    )
    parser.add_argument("--smoke", action="store_true", help="12 jobs, direct + buffering; checks, writes nothing")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--paths", help="comma-separated subset of direct,streaming,buffering; writes nothing")
    parser.add_argument("--keep", type=Path, help="keep every log, database and file in this (new) directory")
    parser.add_argument("--poller", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poller:
        return poller_child(json.loads(args.poller))
    jobs = args.jobs or (SMOKE_JOBS if args.smoke else JOBS)
    paths = [DIRECT, BUFFERING] if args.smoke else [DIRECT, STREAMING, BUFFERING]
    if args.paths:
        paths = [p for p in (DIRECT, STREAMING, BUFFERING) if slug(p) in args.paths.split(",")]
    # a bound on every client: generous for a slow machine, yet a stall ends the benchmark
    waves = math.ceil(jobs / CONCURRENCY)
    poller_timeout = 30.0 + waves * (POLL_EVERY * 2 + 5)
    started = time.monotonic()
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            work = args.keep.resolve()
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batchgen-networks-")))
        certs = make_certificates(work / "certificates")
        for path in paths:
            theirs = run_poller(path, certs, work, jobs, poller_timeout)
            limit = theirs.wall_s * SLACK_RATIO + SLACK_S
            ours = run_batchgen(path, certs, work, jobs, limit + 10 if args.smoke else poller_timeout * 2)
            results += [ours, theirs]
            say(f"{path.name}: batchgen {ours.wall_s:.1f} s, poller {theirs.wall_s:.1f} s")
            say(f"{path.name}: batchgen status after the run:\n{ours.status.rstrip()}")
    text = table(results)
    print(text)
    print(reading(results))
    say(f"done in {time.monotonic() - started:.0f} s")
    if args.smoke:
        return smoke_verdict(results)
    if args.paths:
        return 0
    command = ".venv/bin/python benchmarks/networks.py" + (f" --jobs {jobs}" if jobs != JOBS else "")
    write_section(args.output, SECTION, section(results, jobs, command))
    say(f"wrote the section {SECTION!r} of {args.output}")
    return 0


def smoke_verdict(results: list[Result]) -> int:
    """0 when, on every path, batchgen finished every job exactly once within the poller's time x 1.5 + 5 s."""
    misses = []
    for path in {r.path.name: r.path for r in results}.values():
        both = pair(results, path)
        assert both is not None
        ours, theirs = both
        if not ours.ok:
            misses.append(f"{path.name}: batchgen exit {ours.exit_code}, exactly once: {ours.exactly_once}")
        limit = theirs.wall_s * SLACK_RATIO + SLACK_S
        if ours.wall_s > limit:
            misses.append(f"{path.name}: batchgen took {ours.wall_s:.1f} s, over the limit of {limit:.1f} s")
    for miss in misses:
        say(f"MISS: {miss}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
