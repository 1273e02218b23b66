"""Several runners on one PostgreSQL run (issue 13): throughput with 1, 2 and 4 runners, SQLite against
PostgreSQL for one runner, and how fast the others take over from a runner that dies or stops.

    python benchmarks/scale_out.py [--jobs 5000]   # full run (about 15 minutes), rewrites its BENCHMARKS.md section
    python benchmarks/scale_out.py --smoke          # 300 jobs, 1 and 2 runners, a kill -9 failover; writes nothing

Every runner is the real CLI (`python -m batchgen.cli run MANIFEST --db ...`) in its own process, all on the same
manifest; every run gets a fresh emulator process (benchmarks/emulator_proc.py, via bench.py) and a fresh
PostgreSQL database, created here and dropped afterwards. CPU time is each process's own: the runners' from
wait4's resource usage, the emulator's and PostgreSQL's backends' from /proc, the whole machine's from /proc/stat.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench import BATCHGEN_OPTIONS, KEY, Emulator, emulator, machine, revision, write_section  # noqa: E402

SECTION = "## Scale-out: runners on one PostgreSQL run (issue 13)"
SERVER = "postgresql://postgres@127.0.0.1:5432"
MODEL = "flux-1-dev"  # an image model: small PNGs, so downloads stay cheap
SUBMIT_RATE = BATCHGEN_OPTIONS["submit_rate"]  # as bench.py: the emulator has no rate limit
LEASE_S, SWEEP_S = 30.0, 30.0 / 6  # the CLI's lease, and the sweep every sixth of it (engine/claims.py)
UNFINISHED = ("pending", "submitting", "unknown", "queued", "processing", "downloading")
IN_FLIGHT = ("submitting", "unknown", "queued", "processing")
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
TICK = os.sysconf("SC_CLK_TCK")
QUIET, QUIET_FOR = 0.15, 30.0  # before a measurement: the machine less than 15 % busy for 30 s
DISTURBED, TRIES = 0.10, 3  # a throughput run during which other processes took over 10 % of the machine is redone
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Sizes:
    jobs: int
    runners: tuple[int, ...]
    concurrency: int
    failover_jobs: int
    failover_duration: float
    failover_concurrency: int
    failover_runners: int
    slow_paths: bool  # also the lease path (SIGSTOP: only its lease frees its jobs) and a kill -9 with the places full


FULL = Sizes(5_000, (1, 2, 4), 64, 300, 1.0, 12, 3, True)
SMOKE = Sizes(300, (1, 2), 64, 60, 0.5, 6, 2, False)


def say(message: str) -> None:
    print(f"scale-out: {message}", file=sys.stderr, flush=True)


# ---- databases -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(tag: str) -> Iterator[str]:
    """A new PostgreSQL database for one run; dropped afterwards (connections left over are ended)."""
    name = f"batchgen_scale_{tag}_{uuid.uuid4().hex[:8]}"
    server = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
    subprocess.run(["createdb", *server, name], check=True, timeout=60)
    try:
        yield f"{SERVER}/{name}"
    finally:
        subprocess.run(["dropdb", *server, "--if-exists", "--force", name], check=False, timeout=60)


def connect(url: str) -> psycopg.Connection[Any]:
    """A connection of this script's (autocommit; every statement bounded)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=10, options="-c statement_timeout=10000")


def job_rows(db: str) -> list[tuple[int, str, str | None]]:
    """(id, status, generation_id) of every job in the database (one run per database here)."""
    statement = "SELECT id, status, generation_id FROM jobs ORDER BY id"
    if db.startswith("postgresql://"):
        with connect(db) as con:
            return [(int(i), str(s), g) for i, s, g in con.execute(statement).fetchall()]
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        return [(int(i), str(s), g) for i, s, g in con.execute(statement).fetchall()]


def transactions_in(url: str) -> int:
    """Transactions (commits and rollbacks) PostgreSQL counted in the database so far."""
    with connect(url) as con:
        row = con.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def runners_table(url: str) -> list[tuple[int, int, str | None]]:
    """(id, pid, end_reason) of the run's runners."""
    with connect(url) as con:
        return [(int(i), int(p), r) for i, p, r in con.execute("SELECT id, pid, end_reason FROM runners ORDER BY id")]


# ---- CPU: processes and the machine ------------------------------------------------------------------------------


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a live process (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (every core) since boot: /proc/stat minus idle and iowait."""
    return machine_ticks()[0]


def machine_ticks() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / TICK, sum(values) / TICK


def wait_for_quiet(limit_s: float = 1800.0) -> None:
    """Wait (at most `limit_s`) until the machine has been less than QUIET busy for QUIET_FOR seconds: other
    sessions share this machine, and a benchmark measured beside their test suites measures them."""
    started = time.monotonic()
    quiet_since: float | None = None
    while time.monotonic() - started < limit_s:
        busy0, total0 = machine_ticks()
        time.sleep(5)
        busy1, total1 = machine_ticks()
        now = time.monotonic()
        if (busy1 - busy0) / max(1e-9, total1 - total0) < QUIET:
            quiet_since = quiet_since or now - 5
            if now - quiet_since >= QUIET_FOR:
                if now - started > QUIET_FOR + 5:
                    say(f"  waited {now - started:.0f} s for the machine to be quiet")
                return
        else:
            quiet_since = None
    say(f"the machine was not quiet for {limit_s:.0f} s; measuring anyway")


def census(database: str | None) -> dict[int, tuple[str, float]]:
    """pid -> (what it is, CPU seconds) of every process on the machine; PostgreSQL's processes are told apart by
    their title: `db` for a backend serving `database`, `postgres` for every other one (other databases, the
    server's background processes)."""
    found: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            if name == "postgres":
                name = postgres_role(Path(entry.path, "cmdline").read_bytes(), database)
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return found


def postgres_role(title: bytes, database: str | None) -> str:
    """`db` for a backend (or autovacuum worker) of the run's database, else `postgres <what it is>`."""
    words = title.decode(errors="replace").replace("\0", " ").split()
    if database and database in words:
        return "db"
    if not words or words[0] != "postgres:":
        return "postgres postmaster"
    what = words[2:3] if len(words) > 2 and words[1].endswith(":") else words[1:2]  # after "postgres: 15/main:"
    role = " ".join(what) if what and what[0] in ("walwriter", "checkpointer", "background", "autovacuum") else ""
    return f"postgres {role or 'backend (other databases)'}"


class Watch:
    """While a run goes: the machine's busy time, the emulator's CPU, this script's own, every process's CPU (a
    census every 0.3 s: a process is counted as last seen before it exits), and on PostgreSQL what the run
    database's backends wait on (pg_stat_activity every 0.1 s)."""

    def __init__(self, url: str | None, emulator_pid: int) -> None:
        self.database = url.rsplit("/", 1)[1] if url else None
        self.emulator_pid = emulator_pid
        self.baseline: dict[int, float] = {}
        self.seen: dict[int, tuple[str, float]] = {}
        self.activity = Activity()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Watch:
        self.baseline = {pid: cpu for pid, (_, cpu) in census(self.database).items()}
        self.busy0, self.emulator0 = machine_busy(), process_cpu(self.emulator_pid) or 0.0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.own0 = usage.ru_utime + usage.ru_stime
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)
        self.busy = machine_busy() - self.busy0
        self.emulator = (process_cpu(self.emulator_pid) or 0.0) - self.emulator0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.own = usage.ru_utime + usage.ru_stime - self.own0

    def used(self, pid: int) -> float:
        return self.seen[pid][1] - self.baseline.get(pid, 0.0)

    @property
    def postgres(self) -> float:
        """CPU of the run database's backends."""
        return sum(self.used(pid) for pid, (name, _) in self.seen.items() if name == "db")

    def others(self, ours: set[int]) -> list[tuple[str, float]]:
        """CPU seconds of every other process (not `ours`, not the run database's backends), by name, most first."""
        ours = ours | {os.getpid(), self.emulator_pid}
        by_name: dict[str, float] = {}
        for pid, (name, _) in self.seen.items():
            if pid not in ours and name != "db":
                by_name[name] = by_name.get(name, 0.0) + self.used(pid)
        return sorted(((n, cpu) for n, cpu in by_name.items() if cpu >= 0.05), key=lambda item: -item[1])

    def _sample(self) -> None:
        con = connect(f"{SERVER}/postgres") if self.database else None
        try:
            tick = 0
            while not self.stop.wait(0.1):
                tick += 1
                if con is not None:
                    with contextlib.suppress(psycopg.Error):
                        self._activity(con)
                if tick % 3 == 0:
                    self.seen.update(census(self.database))
            self.seen.update(census(self.database))
        finally:
            if con is not None:
                con.close()

    def _activity(self, con: psycopg.Connection[Any]) -> None:
        counts = con.execute(
            "SELECT count(*) FILTER (WHERE state = 'active'), "
            "count(*) FILTER (WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'), "
            "count(*) FILTER (WHERE wait_event_type = 'Lock' AND wait_event <> 'advisory'), "
            "count(*) FILTER (WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')) "
            "FROM pg_stat_activity WHERE datname = %s",
            (self.database,),
        ).fetchone()
        holders = con.execute(
            "SELECT a.state, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = %s",
            (self.database,),
        ).fetchall()
        if counts is not None:
            self.activity.add([int(v) for v in counts], [(str(state), str(query)) for state, query in holders])


@dataclass
class Activity:
    """What the run database's backends were doing, summed over the samples of pg_stat_activity and pg_locks."""

    samples: int = 0
    active: int = 0  # backends running a statement (waiting on a lock included)
    advisory_waits: int = 0  # ... waiting for a run's advisory lock (batchgen's write lock)
    other_waits: int = 0  # ... waiting on another lock (a row, a transaction)
    idle_in_transaction: int = 0  # backends inside a transaction, waiting for their runner's next statement
    held: int = 0  # samples in which a backend held an advisory lock
    holder_states: Counter[str] = field(default_factory=Counter)  # what the holder was doing
    holder_queries: Counter[str] = field(default_factory=Counter)  # its current (or last) statement

    def add(self, counts: list[int], holders: list[tuple[str, str]]) -> None:
        self.samples += 1
        self.active += counts[0]
        self.advisory_waits += counts[1]
        self.other_waits += counts[2]
        self.idle_in_transaction += counts[3]
        self.held += bool(holders)
        for state, query in holders:
            self.holder_states[state] += 1
            self.holder_queries[query] += 1

    def mean(self, value: int) -> float:
        return value / max(1, self.samples)

    def summary(self) -> str:
        states = ", ".join(f"{n} {state}" for state, n in self.holder_states.most_common())
        queries = "; ".join(f"{n}x {q!r}" for q, n in self.holder_queries.most_common(3))
        return (
            f"{self.samples} samples: on average {self.mean(self.active):.2f} backends running a statement, "
            f"{self.mean(self.advisory_waits):.2f} waiting for the run's advisory lock, {self.mean(self.other_waits):.2f} "
            f"on another lock, {self.mean(self.idle_in_transaction):.2f} idle in a transaction; the lock held in "
            f"{self.held} samples (holder: {states or '-'}; {queries or '-'})"
        )


# ---- runner processes ----------------------------------------------------------------------------------------------


@dataclass
class Runner:
    """One `batchgen run` process, reaped with wait4 so that its own CPU time is known."""

    proc: subprocess.Popen[bytes]
    log: Path
    ended: float | None = None
    exit_code: int | None = None
    cpu_s: float = 0.0
    hung: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self, *, block: bool = False) -> bool:
        """Reap the process if it has exited (or wait for it); True once reaped."""
        if self.exit_code is not None:
            return True
        pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return False
        self.ended = time.time()
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.exit_code  # reaped here: Popen must not wait for it again
        self.cpu_s = usage.ru_utime + usage.ru_stime
        return True

    def kill(self) -> None:
        """Continue it if stopped, kill it, reap it (a bounded wait: SIGKILL cannot be refused)."""
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGKILL)
            self.poll(block=True)

    def requests(self) -> int | None:
        """The API requests it reports in its closing line."""
        found = re.findall(r"\((\d+) API requests\)", self.log.read_text(errors="replace"))
        return int(found[-1]) if found else None

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def runner_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES and not k.startswith("BATCHGEN_")}
    return {**env, "OXEN_API_KEY": KEY, "BATCHGEN_STATE_DIR": str(work / "state")}


@contextlib.contextmanager
def runner_group() -> Iterator[list[Runner]]:
    """A list to start runners into; on leaving, any still running is killed and every one is reaped."""
    group: list[Runner] = []
    try:
        yield group
    finally:
        for runner in group:
            runner.kill()


def start_runner(
    group: list[Runner], work: Path, manifest: Path, db: str, emu: Emulator, concurrency: int, *, own_out: bool = False
) -> Runner:
    """Start `batchgen run` in `work`; `own_out`: in an output directory of its own, as on a host of its own."""
    out = work / (f"out-{len(group) + 1}" if own_out else "out")
    command = [
        sys.executable, "-m", "batchgen.cli", "run", str(manifest), "--db", db, "--base-url", emu.base_url,
        "--out", str(out), "-j", str(concurrency), "--submit-rate", f"{SUBMIT_RATE:g}",
    ]  # fmt: skip
    log = work / f"runner-{len(group) + 1}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=runner_env(work), cwd=work)
    runner = Runner(proc, log)
    group.append(runner)
    return runner


def reap(runners: list[Runner], deadline: float) -> None:
    """Wait for every runner to exit, noting when each did; past `deadline` the rest are killed as hung."""
    while not all(r.poll() for r in runners):
        if time.monotonic() > deadline:
            for runner in runners:
                if runner.exit_code is None:
                    runner.hung = True
                    runner.kill()
            return
        time.sleep(0.02)


def write_manifest(directory: Path, jobs: int, concurrency: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    prompts = "\n".join(f'    - "clip {i} of an ox"' for i in range(jobs))
    path = directory / "scale.yaml"
    path.write_text(
        f'name: scale\nmodel: {MODEL}\nparams:\n  aspect_ratio: "1:1"\nmatrix:\n  prompt:\n{prompts}\n'
        f"concurrency: {concurrency}\n",
        encoding="utf-8",
    )
    return path


# ---- exactly once ------------------------------------------------------------------------------------------------


@dataclass
class Once:
    """Whether every job ran exactly once: one generation per job, every job succeeded with its own generation."""

    ok: bool
    detail: str
    extra_downloads: int  # result files fetched more than once (two runners downloading one generation)


def exactly_once(db: str, ledger: dict[str, Any], jobs: int) -> Once:
    rows = job_rows(db)
    ids = [g for _, _, g in rows if g]
    statuses = Counter(s for _, s, _ in rows)
    created, known = int(ledger["created"]), set(ledger["terminal_times"]) | set(ledger.get("created_ids", []))
    # a job being sent may have its generation on the emulator before its id is in the database
    sending = statuses.get("submitting", 0) + statuses.get("unknown", 0)
    twice = []
    if len(rows) != jobs:
        twice.append(f"{len(rows)} job rows for {jobs} jobs")
    if len(ids) != len(set(ids)):
        twice.append(f"{len(ids) - len(set(ids))} generations owned by two jobs")
    if created > len(set(ids)) + sending:
        twice.append(f"{created - len(set(ids)) - sending} generation(s) created beyond one per job sent")
    if statuses.get("succeeded", 0) == len(rows) and created != len(rows):
        twice.append(f"{created} generations created for {len(rows)} jobs")
    fetched = Counter(g for _, g, status in ledger["downloads"] if status in (200, 206))
    extra = sum(n - 1 for n in fetched.values())
    unfinished = ", ".join(f"{n} {s}" for s, n in statuses.most_common() if s != "succeeded")
    if twice:
        return Once(False, "NO: " + "; ".join(twice) + (f" (unfinished: {unfinished})" if unfinished else ""), extra)
    if unfinished:
        detail = (
            f"NO, the run did not finish ({unfinished}); no job ran twice ({created} generations, one per job sent)"
        )
        return Once(False, detail, extra)
    if not set(ids) <= known:
        return Once(False, f"NO: {len(set(ids) - known)} job generations unknown to the emulator", extra)
    return Once(True, "yes", extra)


# ---- throughput -----------------------------------------------------------------------------------------------------


@dataclass
class Throughput:
    database: str
    runners: int
    jobs: int
    wall_s: float
    span_s: float  # first enqueue -> last download, on the emulator
    runner_cpu_s: float
    emulator_cpu_s: float
    postgres_cpu_s: float
    busy_s: float
    own_cpu_s: float
    requests: int
    per_runner: list[int | None]
    exit_codes: list[int | None]
    hung: int
    once: Once
    activity: Activity
    transactions: int  # PostgreSQL: commits + rollbacks in the run's database
    end_reasons: list[str | None] = field(default_factory=list)
    others: list[tuple[str, float]] = field(default_factory=list)  # other processes' CPU seconds, by name
    tries: int = 1  # runs it took to get one that other processes did not disturb

    @property
    def rate(self) -> float:
        return self.jobs / self.wall_s

    @property
    def other_cpu_s(self) -> float:
        return max(0.0, self.busy_s - self.runner_cpu_s - self.emulator_cpu_s - self.postgres_cpu_s - self.own_cpu_s)

    @property
    def disturbed(self) -> float:
        """The share of the machine's CPU that processes other than the run's (and this script's) took."""
        return self.other_cpu_s / (self.wall_s * CORES)

    def share(self, seconds: float) -> str:
        return f"{100 * seconds / (self.wall_s * CORES):.0f}"


def measure_throughput(sizes: Sizes, work: Path, database: str, runners: int, *, quiet: bool) -> Throughput:
    """`run_throughput` on a quiet machine (with `quiet`), again when other processes disturbed it (TRIES at most)."""
    for attempt in range(1, TRIES + 1):
        if quiet:
            wait_for_quiet()
        result = run_throughput(sizes, work / f"try-{attempt}", database, runners)
        result.tries = attempt
        if not quiet or result.disturbed <= DISTURBED:
            break
        say(f"  other processes took {100 * result.disturbed:.0f} % of the machine: measuring it again")
    return result


def run_throughput(sizes: Sizes, work: Path, database: str, runners: int) -> Throughput:
    n, c = sizes.jobs, sizes.concurrency
    work = work / f"throughput-{database.lower()}-{runners}"
    manifest = write_manifest(work, n, c)
    say(f"throughput: {runners} runner(s) on {database}, {n} instant jobs, C = {c}")
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(emulator(0.0, seed=runners))
        url = stack.enter_context(fresh_database(f"t{runners}")) if database == "PostgreSQL" else None
        db = url or str(work / "state.db")
        group = stack.enter_context(runner_group())
        with Watch(url, emu.proc.pid) as watch:
            started = time.time()
            for _ in range(runners):
                start_runner(group, work, manifest, db, emu, c)
            reap(group, time.monotonic() + 90 + n * 0.06)
            ended = max(r.ended or time.time() for r in group)
        ledger = emu.ledger()
        transactions = transactions_in(url) if url else 0
        once = exactly_once(db, ledger, n)
        reasons = [reason for _, _, reason in runners_table(url)] if url else []
    enqueued = [t for t, method, path, _ in ledger["requests"] if method == "POST" and path == "/api/ai/queue"]
    fetched = [t for t, _, status in ledger["downloads"] if status in (200, 206)]
    result = Throughput(
        database=database,
        runners=runners,
        jobs=n,
        wall_s=ended - started,
        span_s=(max(fetched) - min(enqueued)) if enqueued and fetched else float("nan"),
        runner_cpu_s=sum(r.cpu_s for r in group),
        emulator_cpu_s=watch.emulator,
        postgres_cpu_s=watch.postgres,
        busy_s=watch.busy,
        own_cpu_s=watch.own,
        requests=len(ledger["requests"]) + int(ledger["stream_connections"]),
        per_runner=[r.requests() for r in group],
        exit_codes=[r.exit_code for r in group],
        hung=sum(r.hung for r in group),
        once=once,
        activity=watch.activity,
        transactions=transactions,
        end_reasons=reasons,
        others=watch.others({r.pid for r in group}),
    )
    say(
        f"  {result.rate:.0f} jobs/s in {result.wall_s:.1f} s; runners {result.runner_cpu_s:.1f} CPU s, emulator "
        f"{result.emulator_cpu_s:.1f}, PostgreSQL {result.postgres_cpu_s:.1f}, machine busy {result.busy_s:.1f} "
        f"of {result.wall_s * CORES:.1f}; exits {result.exit_codes}; exactly once: {once.detail}; runners' rows "
        f"ended as {reasons}; other processes' CPU s: {named(result.others)}"
    )
    if url:
        say(f"  PostgreSQL: {watch.activity.summary()}")
    if once.ok is False or result.hung or any(code != 0 for code in result.exit_codes):
        for runner in group:
            say(f"  runner {runner.pid} (exit {runner.exit_code}, hung {runner.hung}):\n{runner.tail()}")
    return result


def plan_cpu(sizes: Sizes, work: Path) -> float:
    """CPU seconds of one `batchgen plan` of the throughput manifest: what each runner spends before it starts."""
    work = work / "plan"
    manifest = write_manifest(work, sizes.jobs, sizes.concurrency)
    with emulator(0.0, seed=0) as emu:
        command = [sys.executable, "-m", "batchgen.cli", "plan", str(manifest), "--base-url", emu.base_url, "--json"]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=runner_env(work))
        runner = Runner(proc, work / "plan.log")
        reap([runner], time.monotonic() + 120)
    say(f"plan: {sizes.jobs} jobs: {runner.cpu_s:.2f} CPU s (exit {runner.exit_code})")
    return runner.cpu_s if runner.exit_code == 0 else 0.0


# ---- failover -------------------------------------------------------------------------------------------------------


@dataclass
class Failover:
    path: str
    how: str  # "kill" (SIGKILL) or "stop" (SIGSTOP: the process stays, only its lease frees its jobs)
    runners: int
    jobs: int
    duration: float
    concurrency: int
    done_at_kill: int = 0
    held: int = 0
    held_in_flight: int = 0
    ended_s: float | None = None  # signal -> the runner's row ended (its ended_at, the database's clock)
    claimed_s: float | None = None  # signal -> every job it held seen held by another runner (or finished)
    flying_claimed_s: float | None = None  # ... every job it held in flight (a generation running)
    in_transaction: str = ""  # SIGSTOP: whether it was stopped inside a transaction, holding the run's lock
    # the longest pause between enqueues from the signal to the last enqueue (SIGSTOP: the last before its row ended)
    longest_gap_s: float | None = None
    run_end_s: float | None = None  # signal -> the last surviving runner's exit
    end_reason: str | None = None
    survivor_exits: list[int | None] = field(default_factory=list)
    victim_exit: int | None = None
    victim_says: str = ""
    sent_after_waking: int | None = None
    hung: int = 0
    stuck: str = ""  # when the survivors hung: the unfinished jobs by status and holder
    stalled_s: float = 0.0  # ... and how long no job had finished when they were killed
    once: Once | None = None


PATHS = {
    "kill": "same host, kill -9 (pid check)",
    "stop": "lease (SIGSTOP: the pid stays alive)",
    "full": "same host, kill -9 of the runner holding all of the run's places",
}
FULL_RUN = (32, 3.0, 4)  # jobs, seconds each, concurrency: two runners claim 16 each, the first fills the 4 places
STALL_S = 30.0  # kill -9: no job finishing for this long, with jobs left and the survivors alive, is a hang


def run_failover(sizes: Sizes, work: Path, how: str) -> Failover:
    n, d, c, k = sizes.failover_jobs, sizes.failover_duration, sizes.failover_concurrency, sizes.failover_runners
    if how == "full":
        (n, d, c), k = FULL_RUN, 2
    result = Failover(PATHS[how], how, k, n, d, c)
    work = work / f"failover-{how}"
    manifest = write_manifest(work, n, c)
    say(f"failover ({how}): {k} runners, {n} jobs of {d:g} s, C = {c}")
    with (
        emulator(d, seed=40) as emu,
        fresh_database(f"f{how}") as url,
        runner_group() as group,
        connect(url) as con,
    ):
        limit = time.monotonic() + 60 + 4 * n * d / c
        if how == "full":
            victim_id, victim = fill_then_join(con, group, work, manifest, url, emu, c, limit)
        else:
            for _ in range(k):
                # SIGSTOP stands for another host: a disk of its own (on a shared directory a runner stopped in a
                # download keeps its part file's flock, and whoever takes that job over retries for minutes)
                start_runner(group, work, manifest, url, emu, c, own_out=how == "stop")
            wait_until(lambda: live_rows(con) == k, limit, "every runner to join", group)
            wait_until(lambda: succeeded(con) >= n // 2, limit, "half of the jobs to finish", group)
            victim_id, victim, frozen = freeze_victim(con, group, c, limit)
        if how == "full":
            os.kill(victim.pid, signal.SIGSTOP)
            frozen = time.time()
            time.sleep(0.3)
        # frozen, it changes nothing more (a commit already on its way lands within the pause above); the others
        # cannot take its jobs before its row is ended, which needs the kill (pid gone) or its lease to run out
        held = held_by(con, victim_id)
        result.held, result.held_in_flight = len(held), sum(1 for s in held.values() if s in IN_FLIGHT)
        result.done_at_kill = succeeded(con)
        if how == "stop":
            signalled = frozen
            time.sleep(1.0)  # its transaction, if it was in one, is then idle for over a second
            result.in_transaction = open_transactions(con)
        else:
            os.kill(victim.pid, signal.SIGKILL)
            signalled = time.time()
            victim.poll(block=True)
        survivors = [r for r in group if r is not victim]
        flying = [i for i, status in held.items() if status in IN_FLIGHT]
        deadline = time.monotonic() + LEASE_S + SWEEP_S + 2 * n * d / c + 20
        stall = None if how == "stop" else STALL_S  # a stopped runner's jobs wait for its lease, by design
        watch_takeover(con, result, victim_id, (list(held), flying), signalled, survivors, deadline, stall)
        if any(r.hung for r in survivors):
            result.stuck = unfinished_summary(con, victim_id)
        if how == "stop":
            enqueues = len(emu.ledger()["enqueues"])
            os.kill(victim.pid, signal.SIGCONT)
            reap([victim], time.monotonic() + 60)
            result.sent_after_waking = len(emu.ledger()["enqueues"]) - enqueues
            said = [line for line in victim.log.read_text(errors="replace").splitlines() if "error" in line]
            result.victim_says = said[-1].strip() if said else ""
        result.victim_exit = victim.exit_code
        result.survivor_exits = [r.exit_code for r in survivors]
        result.hung = sum(r.hung for r in group)
        row = con.execute("SELECT ended_at, end_reason FROM runners WHERE id = %s", (victim_id,)).fetchone()
        if row is not None and row[0] is not None:
            result.ended_s = row[0].timestamp() - signalled
            result.end_reason = row[1]
        ledger = emu.ledger()
        result.once = exactly_once(url, ledger, n)
        if not result.once.ok or result.hung:
            evidence(con, ledger, work / "evidence.txt")
        # after its row ended, the lost runner's jobs are sent as one late burst, after a gap that is the lease
        until = signalled + (result.ended_s if how == "stop" and result.ended_s is not None else float("inf"))
        result.longest_gap_s = longest_gap([t for t, _ in ledger["enqueues"] if t < until], signalled)
        table = runners_table(url)
    say(
        f"  held {result.held} ({result.held_in_flight} in flight); ended after {fmt_s(result.ended_s)}, in-flight "
        f"claimed after {fmt_s(result.flying_claimed_s)}, all claimed after {fmt_s(result.claimed_s)}, run ended "
        f"after {fmt_s(result.run_end_s)}; longest pause between enqueues after the signal "
        f"{fmt_s(result.longest_gap_s)}; runners {table}; exactly once: {result.once.detail}; the lost runner "
        f"exited {result.victim_exit} {result.victim_says!r} {result.in_transaction}; stuck: {result.stuck or '-'}"
    )
    if not result.once.ok or result.hung or any(code != 0 for code in result.survivor_exits):
        for runner in group:
            say(f"  runner {runner.pid} (exit {runner.exit_code}, hung {runner.hung}):\n{runner.tail()}")
    return result


def fill_then_join(
    con: psycopg.Connection[Any],
    group: list[Runner],
    work: Path,
    manifest: Path,
    url: str,
    emu: Emulator,
    c: int,
    limit: float,
) -> tuple[int, Runner]:
    """One runner alone until all the run's `c` places hold its generations, then a second one joins (and claims
    its batch of pending jobs): the first is the one to lose."""
    first = start_runner(group, work, manifest, url, emu, c)
    wait_until(lambda: live_rows(con) == 1, limit, "the first runner to join", group)
    first_id = runners_table(url)[0][0]
    wait_until(lambda: in_flight(con, first_id) >= c, limit, "the first runner to fill the run's places", group)
    start_runner(group, work, manifest, url, emu, c)
    wait_until(lambda: live_rows(con) == 2, limit, "the second runner to join", group)
    second_id = runners_table(url)[1][0]
    wait_until(lambda: bool(held_by(con, second_id)), limit, "the second runner to claim jobs", group)
    return first_id, first


def in_flight(con: psycopg.Connection[Any], runner_id: int) -> int:
    row = con.execute(
        "SELECT count(*) FROM jobs WHERE runner_id = %s AND status = ANY(%s)", (runner_id, list(IN_FLIGHT))
    ).fetchone()
    return int(row[0]) if row else 0


def unfinished_summary(con: psycopg.Connection[Any], victim_id: int) -> str:
    """The unfinished jobs by status and holder ("12 pending held by runner 2, 4 queued held by nobody")."""
    rows = con.execute(
        "SELECT status, runner_id, count(*) FROM jobs WHERE status = ANY(%s) GROUP BY status, runner_id "
        "ORDER BY count(*) DESC",
        (list(UNFINISHED),),
    ).fetchall()

    def holder(runner_id: int | None) -> str:
        if runner_id is None:
            return "held by nobody"
        return f"held by the lost runner (row {runner_id})" if runner_id == victim_id else f"held by runner {runner_id}"

    return ", ".join(f"{n} {status} {holder(r)}" for status, r, n in rows)


def evidence(con: psycopg.Connection[Any], ledger: dict[str, Any], where: Path) -> None:
    """When a run went wrong: the runners table, every unfinished job, and what the emulator saw of their
    generations, to stderr and to `where`."""
    lines = ["runners:"]
    lines += [repr(row) for row in con.execute("SELECT * FROM runners ORDER BY id").fetchall()]
    stuck = con.execute("SELECT * FROM jobs WHERE status = ANY(%s) ORDER BY id", (list(UNFINISHED),))
    names = [c.name for c in stuck.description or []]
    lines.append("unfinished jobs:")
    ids = set()
    for row in stuck.fetchall():
        record = dict(zip(names, row, strict=True))
        ids.add(record.get("generation_id"))
        lines.append(repr(record))
    lines.append("the emulator, for their generations (terminal time; downloads as time, id, status):")
    lines += [f"{g}: terminal {ledger['terminal_times'].get(g)}" for g in ids if g]
    lines += [repr(d) for d in ledger["downloads"] if d[1] in ids]
    text = "\n".join(lines)
    where.write_text(text + "\n", encoding="utf-8")
    say(f"  evidence (also in {where}):\n{text}")


def open_transactions(con: psycopg.Connection[Any]) -> str:
    """Sessions of the run idle inside a transaction for over a second (only a stopped runner leaves one open that
    long), and whether one holds an advisory lock (the run's write lock: every other runner's writes wait)."""
    row = con.execute(
        "SELECT count(*), count(l.pid) FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid "
        "AND l.locktype = 'advisory' AND l.granted WHERE a.datname = current_database() "
        "AND a.state IN ('idle in transaction', 'idle in transaction (aborted)') "
        "AND a.state_change < now() - interval '1 second'"
    ).fetchone()
    sessions, locking = (int(row[0]), int(row[1])) if row else (0, 0)
    if not sessions:
        return "stopped outside any transaction"
    return "stopped inside a transaction" + (" holding the run's advisory lock" if locking else "")


def longest_gap(times: list[float], since: float) -> float | None:
    """The longest pause between enqueues after `since`, up to the last enqueue (after it nothing was left to send)."""
    after = sorted(t for t in times if t >= since)
    if not after:
        return None
    return max(b - a for a, b in zip([since, *after], after, strict=False))


def wait_until(check: Any, deadline: float, what: str, group: list[Runner]) -> None:
    while not check():
        if any(r.poll() for r in group):
            raise RuntimeError(f"a runner exited while waiting for {what}: " + group[0].tail())
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def live_rows(con: psycopg.Connection[Any]) -> int:
    with contextlib.suppress(psycopg.errors.UndefinedTable):  # the first runner has not made the tables yet
        row = con.execute("SELECT count(*) FROM runners WHERE ended_at IS NULL").fetchone()
        return int(row[0]) if row else 0
    return 0


def succeeded(con: psycopg.Connection[Any]) -> int:
    row = con.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()
    return int(row[0]) if row else 0


def held_by(con: psycopg.Connection[Any], runner_id: int) -> dict[int, str]:
    """Job id -> status of the unfinished jobs the runner holds."""
    rows = con.execute(
        "SELECT id, status FROM jobs WHERE runner_id = %s AND status = ANY(%s)", (runner_id, list(UNFINISHED))
    ).fetchall()
    return {int(i): str(s) for i, s in rows}


def freeze_victim(
    con: psycopg.Connection[Any], group: list[Runner], places: int, limit: float
) -> tuple[int, Runner, float]:
    """SIGSTOP the runner `pick_victim` names, and keep it stopped only if, once stopped, it still holds fewer than
    all the run's places (between the pick and the stop it may have taken the last ones); else continue it and pick
    again. Returns its row id, itself, and when it was stopped."""
    chosen: list[tuple[int, Runner]] = []

    def found() -> bool:
        pick = pick_victim(con, group, places)
        chosen[:] = [pick] if pick is not None else []
        return pick is not None

    while True:
        wait_until(found, limit, "a runner holding generations in flight, short of all the run's places", group)
        victim_id, victim = chosen[-1]
        os.kill(victim.pid, signal.SIGSTOP)
        stopped = time.time()
        time.sleep(0.3)
        if in_flight(con, victim_id) < places:
            return victim_id, victim, stopped
        os.kill(victim.pid, signal.SIGCONT)
        if time.monotonic() > limit:
            raise RuntimeError("every runner stopped held all of the run's places")
        time.sleep(0.2)


def pick_victim(con: psycopg.Connection[Any], group: list[Runner], places: int) -> tuple[int, Runner] | None:
    """The live runner holding the most generations in flight (the loss that most needs taking over), short of all
    the run's `places`: losing a runner that holds them all stops the run for good (the "full" path shows it), which
    would leave nothing to measure here. None while no runner holds between 1 and places - 1."""
    rows = con.execute(
        "SELECT runners.id, runners.pid, count(jobs.id) FILTER (WHERE jobs.status = ANY(%s)) AS flying "
        "FROM runners LEFT JOIN jobs ON jobs.runner_id = runners.id WHERE runners.ended_at IS NULL "
        "GROUP BY runners.id, runners.pid ORDER BY flying DESC, runners.id",
        (list(IN_FLIGHT),),
    ).fetchall()
    by_pid = {r.pid: r for r in group}
    for runner_id, pid, flying in rows:
        if pid in by_pid and 0 < flying < places:
            return int(runner_id), by_pid[pid]
    return None


def watch_takeover(
    con: psycopg.Connection[Any],
    result: Failover,
    victim_id: int,
    held: tuple[list[int], list[int]],
    signalled: float,
    survivors: list[Runner],
    deadline: float,
    stall: float | None,
) -> None:
    """Poll (every 50 ms) until each held job (`held`: all, in flight) is seen held by another runner or finished,
    and the survivors exit."""
    everything, flying = set(held[0]), set(held[1])
    waiting = set(everything)
    done, progressed = -1, time.monotonic()
    while True:
        now = time.time()
        if stall is not None:
            finished = succeeded(con)
            if finished != done:
                done, progressed = finished, time.monotonic()
            elif time.monotonic() - progressed > stall:
                deadline = 0.0  # nothing finished for `stall` seconds: the survivors are stuck
        if waiting:
            rows = con.execute("SELECT id, runner_id, status FROM jobs WHERE id = ANY(%s)", (list(waiting),)).fetchall()
            waiting -= {i for i, owner, status in rows if (owner not in (None, victim_id)) or status not in UNFINISHED}
            if result.flying_claimed_s is None and not waiting & flying:
                result.flying_claimed_s = now - signalled
            if not waiting:
                result.claimed_s = now - signalled
        if all(r.poll() for r in survivors):
            result.run_end_s = max(r.ended or now for r in survivors) - signalled
            return
        if time.monotonic() > deadline:
            result.stalled_s = time.monotonic() - progressed if stall is not None else 0.0
            for runner in survivors:
                if runner.exit_code is None:
                    runner.hung = True
                    runner.kill()
            return
        time.sleep(0.05)


# ---- the report ---------------------------------------------------------------------------------------------------------


def named(others: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {cpu:.1f}" for name, cpu in others[:4]) or "none"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def throughput_table(rows: list[Throughput]) -> str:
    base = next((r for r in rows if r.database == "PostgreSQL" and r.runners == 1), None)
    lines = [
        "| database | runners | wall s | jobs/s | vs 1 runner (PostgreSQL) | runner CPU ms/job (all runners) | "
        "emulator CPU ms/job | PostgreSQL CPU ms/job | PostgreSQL transactions/job | CPU of the 2 cores, %: runners / "
        "emulator / PostgreSQL / other (busy) | requests/job | exactly once |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r.rate / base.rate:.2f}x" if base else "-"
        pg = f"{r.postgres_cpu_s / r.jobs * 1000:.2f}" if r.database == "PostgreSQL" else "-"
        tx = f"{r.transactions / r.jobs:.1f}" if r.database == "PostgreSQL" else "-"
        share = (
            f"{r.share(r.runner_cpu_s)} / {r.share(r.emulator_cpu_s)} / {r.share(r.postgres_cpu_s)} / "
            f"{r.share(r.other_cpu_s + r.own_cpu_s)} ({r.share(r.busy_s)})"
        )
        ok = (
            r.once.detail
            if not (r.hung or any(c != 0 for c in r.exit_codes))
            else f"{r.once.detail}; exits {r.exit_codes}"
        )
        lines.append(
            f"| {r.database} | {r.runners} | {r.wall_s:.1f} | {r.rate:.0f} | {ratio} | "
            f"{r.runner_cpu_s / r.jobs * 1000:.2f} | {r.emulator_cpu_s / r.jobs * 1000:.2f} | {pg} | {tx} | {share} | "
            f"{r.requests / r.jobs:.3f} | {ok} |"
        )
    return "\n".join(lines) + "\n"


def failover_table(rows: list[Failover]) -> str:
    lines = [
        "| path | set-up | held by the lost runner (in flight) | signal -> its row ended | signal -> its jobs in "
        "flight claimed by others | signal -> all its jobs claimed by others | signal -> run ended | longest pause "
        "between enqueues after the signal | bound / target | the lost runner's exit | exactly once |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bound = f"sweep every {SWEEP_S:g} s" if r.how != "stop" else f"lease + 5 s = {LEASE_S + 5:g} s: {verdict(r)}"
        once = r.once.detail if r.once else "-"
        if r.hung or any(c != 0 for c in r.survivor_exits):
            once += f"; survivors' exits {r.survivor_exits}"
        exit_code = "SIGKILL" if r.how != "stop" else f"{r.victim_exit} (expected 4)"
        if r.hung:
            quiet_for = f"no job finished for {r.stalled_s:.0f} s" if r.stalled_s else "still unfinished at the bound"
            once += f"; the survivors HUNG ({quiet_for}; killed): {r.stuck}"
        lines.append(
            f"| {r.path} | {r.runners} runners, {r.jobs} jobs of {r.duration:g} s, C = {r.concurrency}; signal at "
            f"{r.done_at_kill} done | {r.held} ({r.held_in_flight}) | {fmt_s(r.ended_s)} | "
            f"{fmt_s(r.flying_claimed_s) if r.held_in_flight else '-'} | {fmt_s(r.claimed_s)} | "
            f"{fmt_s(r.run_end_s)} | {fmt_s(r.longest_gap_s)} | {bound} | {exit_code} | {once} |"
        )
    return "\n".join(lines) + "\n"


def verdict(r: Failover) -> str:
    return "PASS" if r.claimed_s is not None and r.claimed_s <= LEASE_S + 5 else "MISS"


def reading(tput: list[Throughput], fail: list[Failover], plan_cpu_s: float) -> str:
    notes: list[str] = []
    pg = {r.runners: r for r in tput if r.database == "PostgreSQL"}
    lite = next((r for r in tput if r.database == "SQLite"), None)
    one, most = pg.get(1), pg[max(pg)] if pg else None
    if one and most and most is not one:
        ratio = most.rate / one.rate
        notes.append(
            f"**{most.runners} runners: {most.rate:.0f} jobs/s, {ratio:.2f}x one runner's {one.rate:.0f} "
            f"(target >= 3x: {'PASS' if ratio >= 3 else 'MISS'}).** "
            + ", ".join(f"{k} runners {pg[k].rate:.0f} jobs/s" for k in sorted(pg) if k != 1)
            + f". CPU per job summed over the runners goes from {one.runner_cpu_s / one.jobs * 1000:.2f} ms (1) to "
            f"{most.runner_cpu_s / most.jobs * 1000:.2f} ms ({most.runners}), PostgreSQL's from "
            f"{one.postgres_cpu_s / one.jobs * 1000:.2f} to {most.postgres_cpu_s / most.jobs * 1000:.2f} ms."
        )
        notes.append(bound_of(most, plan_cpu_s))
        notes.append(contention(pg))
        downloads = ", ".join(f"{pg[k].once.extra_downloads} with {k}" for k in sorted(pg))
        notes.append(
            f"Requests per job stay at {min(r.requests for r in pg.values()) / one.jobs:.3f}-"
            f"{max(r.requests for r in pg.values()) / one.jobs:.3f} (each runner adds its own stream, access check "
            f"and model look-up); result files fetched more than once: {downloads}. Work per runner (its API "
            "requests, from its closing line): "
            + "; ".join(f"{k} runners {'/'.join(str(x) for x in pg[k].per_runner)}" for k in sorted(pg) if k > 1)
            + "."
        )
    if lite and one:
        notes.append(
            f"**SQLite vs PostgreSQL, one runner:** SQLite {lite.rate:.0f} jobs/s, "
            f"{lite.runner_cpu_s / lite.jobs * 1000:.2f} ms runner CPU per job; PostgreSQL {one.rate:.0f} jobs/s "
            f"({one.rate / lite.rate:.2f}x), {one.runner_cpu_s / one.jobs * 1000:.2f} ms in the runner plus "
            f"{one.postgres_cpu_s / one.jobs * 1000:.2f} ms in the PostgreSQL server per job."
        )
    for r in fail:
        notes.append(failover_note(r))
    return "".join(f"- {note}\n" for note in notes)


def failover_note(r: Failover) -> str:
    once = r.once.detail if r.once else "-"
    pending = (
        ""
        if r.held == r.held_in_flight
        else f"The last of the {r.held - r.held_in_flight} pending jobs it had claimed was claimed {fmt_s(r.claimed_s)} "
        "after the kill, in the run's normal order."
    )
    if r.how == "full":
        return full_note(r, once)
    if r.hung:
        once += f". **The survivors hung** (unfinished: {r.stuck}): the orphans' places are never freed, as in the second row"
    if r.how == "kill":
        return (
            f"**kill -9, same host:** the runner's pid is gone, so the next sweep of a survivor (every {SWEEP_S:g} s "
            f"at the CLI's lease of {LEASE_S:g} s) ends it without waiting for the lease: its row ended "
            f"{fmt_s(r.ended_s)} after the kill (end_reason {r.end_reason!r}), the {r.held_in_flight} generations it "
            f"had in flight were claimed by the others {fmt_s(r.flying_claimed_s)} after (a survivor claims, "
            "after each sweep, the jobs a lost runner had sent, whatever its own line holds), and the run "
            f"ended {fmt_s(r.run_end_s)} after. {pending} Exactly once: {once}."
        )
    woke = f"Continued after the run, the stopped runner enqueued {r.sent_after_waking} more and exited {r.victim_exit}"
    if r.victim_exit != 4:
        woke += (
            f', not 4 (README: "another runner took this run over"): it said {r.victim_says!r}. It was '
            f"{r.in_transaction}; PostgreSQL ends a session idle in a transaction after 10 s "
            "(idle_in_transaction_session_timeout, engine/postgres.py), so the woken runner found its connection "
            "closed and reported a database error instead of the lost lease. It sent nothing, as it must"
        )
    else:
        woke += f" ({r.victim_says!r}); it was {r.in_transaction}"
    stall = ""
    if r.longest_gap_s is not None and r.longest_gap_s >= 5:
        cause = (
            "it was stopped holding the run's advisory lock, and every other runner's writes wait for that lock "
            "until PostgreSQL ends the stopped session (idle_in_transaction_session_timeout, 10 s)"
            if "holding" in r.in_transaction
            else f"it was {r.in_transaction}; the cause is not known"
        )
        stall = f" The survivors sent nothing for {r.longest_gap_s:.1f} s after the stop: {cause}."
    return (
        f"**Lease path (SIGSTOP: the process stays, so the pid check cannot free it, which is how another host's "
        f"runner looks):** only the lease frees its jobs. Its last heartbeat came at most {SWEEP_S:g} s before "
        f"the stop (every lease/6), the lease ends {LEASE_S:g} s after that heartbeat, and a sweep comes within "
        f"{SWEEP_S:g} s: at most {LEASE_S + SWEEP_S:g} s after the stop, the target lease + 5 s. Measured: its row "
        f"ended {fmt_s(r.ended_s)} after the stop (end_reason {r.end_reason!r}), its {r.held_in_flight} jobs in "
        f"flight were claimed {fmt_s(r.flying_claimed_s)} after and all {r.held} {fmt_s(r.claimed_s)} after "
        f"({verdict(r)}), and the run ended {fmt_s(r.run_end_s)} after.{stall} {woke}. Exactly once: {once}."
    )


def full_note(r: Failover, once: str) -> str:
    setup = (
        f"**kill -9 of the runner holding all of the run's places:** one runner alone until its {r.concurrency} "
        f"generations in flight fill the run's concurrency ({r.jobs} jobs of {r.duration:g} s, C = {r.concurrency}), "
        f"then a second runner joins and claims its batch of pending jobs, then the first is killed. "
    )
    if not r.hung:
        return (
            setup + f"Its row ended {fmt_s(r.ended_s)} after the kill, its {r.held_in_flight} jobs in flight were "
            f"claimed {fmt_s(r.flying_claimed_s)} after, the run ended {fmt_s(r.run_end_s)} after. Exactly once: {once}."
        )
    return (
        setup + f"Its row ended {fmt_s(r.ended_s)} after the kill, and then **the run stopped for good**: no job "
        f"finished for {r.stalled_s:.0f} s and the survivor never exited (the benchmark killed it; in a trial run "
        f"nothing moved for 100 s either). Unfinished at that "
        f"point: {r.stuck}. The {r.held_in_flight} generations the lost runner had in flight are let go by the sweep "
        "but count against the run's concurrency wherever they are (record_intents counts every job of the run in "
        "flight, held or not), so the survivor has no place to send its pending jobs; and a runner claims more jobs "
        "(those already sent first) only when its own line of pending jobs runs low, which a line that cannot be "
        "sent never does. Nobody polls or downloads the orphans, so the places never free. A bug in batchgen, "
        "not fixed here; any kill or stop hits it when the runner lost holds every place (the rows of the first "
        "and third paths pick one that does not)."
    )


def contention(pg: dict[int, Throughput]) -> str:
    """The run's write lock, from the samples of pg_stat_activity and pg_locks."""
    parts = []
    for k in sorted(pg):
        a = pg[k].activity
        idle = a.holder_states.get("idle in transaction", 0) / max(1, sum(a.holder_states.values()))
        per_job = a.mean(a.held) * pg[k].wall_s / pg[k].jobs * 1000
        parts.append(
            f"with {k} runner(s) {a.mean(a.advisory_waits):.2f} backends waiting for it on average; it was held in "
            f"{100 * a.mean(a.held):.0f} % of the samples, about {per_job:.1f} ms per job (a ceiling of "
            f"{1000 / max(per_job, 1e-9):.0f} jobs/s for any number of runners), its holder idle in its transaction "
            f"(waiting for its runner's next statement) in {100 * idle:.0f} % of those"
        )
    top = max(pg.values(), key=lambda r: r.runners).activity.holder_queries.most_common(3)
    return (
        "The database's write lock: the writes that decide what the runners share (intents against the budget "
        "and concurrency, adoptions, run-wide changes) take the run's advisory lock for their whole transaction "
        "(engine/postgres.py); a job's own progress locks only its row (since 7e93b75; before, every write took "
        "it, and it was held in 87 % of the samples with 4 runners). A transaction holds it across several round "
        "trips to its runner (the holder's statement, most often: "
        + ", ".join(f"`{q.strip()}...`" for q, _ in top)
        + "). Sampled every 0.1 s: "
        + "; ".join(parts)
        + ". The time the lock is held per job grows with the runners: a holder waits for its runner's process, "
        "which shares the two cores with the other runners, the emulator and PostgreSQL."
    )


def bound_of(r: Throughput, plan_cpu_s: float) -> str:
    """What held the busiest run back: where the machine's CPU went, and the run's write lock."""
    capacity = r.wall_s * CORES
    parts = {
        "the runners": r.runner_cpu_s,
        "the emulator": r.emulator_cpu_s,
        "PostgreSQL": r.postgres_cpu_s,
        f"other processes ({named(r.others)} CPU s, this script {r.own_cpu_s:.1f})": r.other_cpu_s + r.own_cpu_s,
    }
    where = ", ".join(f"{name} {100 * s / capacity:.0f} %" for name, s in parts.items())
    busy = r.busy_s / capacity
    a = r.activity
    waits, held = a.mean(a.advisory_waits), a.mean(a.held)
    emulator_core = r.emulator_cpu_s / r.wall_s
    reasons = []
    if busy >= 0.9:
        reasons.append(f"the machine's CPU (both cores busy {100 * busy:.0f} % of the time)")
    if held >= 0.5 and waits >= 0.5:
        reasons.append(
            f"the run's write lock (held in {100 * held:.0f} % of the samples, {waits:.2f} backends waiting for it "
            "on average)"
        )
    if emulator_core >= 0.8:
        reasons.append(f"the single-process emulator ({emulator_core:.2f} of a core)")
    lead = f"What bounds the {r.runners}-runner run: " + (" and ".join(reasons) if reasons else "nothing saturated")
    startup = (
        f" Every runner first plans the whole manifest: `batchgen plan` of it alone takes {plan_cpu_s:.1f} CPU s "
        f"(imports included), so {r.runners} runners spend about {r.runners * plan_cpu_s:.0f} CPU s before sending "
        f"anything; without that, the runners' CPU per job is "
        f"{max(0.0, r.runner_cpu_s - r.runners * plan_cpu_s) / r.jobs * 1000:.2f} ms."
        if plan_cpu_s
        else ""
    )
    return (
        f"{lead}. Where the CPU went (of {CORES} cores x {r.wall_s:.1f} s): {where}; {100 * busy:.0f} % busy in all. "
        f"The emulator used {emulator_core:.2f} of a core ({r.emulator_cpu_s / r.jobs * 1000:.2f} ms per job); one "
        f"process, it would cap the run near {r.jobs / max(1e-9, r.emulator_cpu_s):.0f} jobs/s with a core to "
        f"itself.{startup}"
    )


def section(sizes: Sizes, tput: list[Throughput], fail: list[Failover], plan_cpu_s: float, command: str) -> str:
    return (
        f"{SECTION}\n\n"
        f"Generated by `{command}` on {dt.date.today().isoformat()}, at {revision()}.\n\n"
        f"Machine: {machine()}; PostgreSQL on the same machine (127.0.0.1), the emulator and every runner too.\n\n"
        f"Set-up: every runner is the real CLI, `batchgen run scale.yaml --db postgresql://... -j "
        f"{sizes.concurrency} --submit-rate {SUBMIT_RATE:g}` (or `--db state.db` for SQLite), in its own process, "
        f"all started together on the same manifest ({sizes.jobs:,} {MODEL} jobs, distinct prompts) and so on the "
        f"same run, against one emulator process (benchmarks/emulator_proc.py: instant generations, no rate "
        f"limit), downloads on. Each run has a fresh emulator and a fresh PostgreSQL database. *Wall* is the first "
        f"runner's spawn to the last runner's exit (imports and planning included); jobs/s = jobs / wall. CPU is "
        f"each process's own user + system time: the runners' from wait4, the emulator's and the run database's "
        f"PostgreSQL backends' from /proc, the machine's busy time from /proc/stat (*other* is what is left: this "
        f"script, PostgreSQL's background processes, anything else on the machine). *Exactly once*: every job "
        f"succeeded, each with its own generation, and the emulator created exactly one generation per job. Other "
        f"sessions share this machine, so before each measurement the script waits until it has been less than "
        f"{100 * QUIET:.0f} % busy for {QUIET_FOR:g} s, and measures a throughput run again (at most {TRIES} times) "
        f"when other processes took more than {100 * DISTURBED:.0f} % of the machine during it: "
        f"{disturbance(tput)}.\n\n"
        f"{throughput_table(tput)}\n"
        f"Failover: {fail[0].runners if fail else '-'} runners on one run; when half of the jobs are done, the runner "
        f"holding the most generations in flight, short of all the run's places, is killed (SIGKILL) or stopped "
        f"(SIGSTOP). The second row loses a runner holding every place of the run (which hung such a run for good "
        f"before commit 3a9ede8); its set-up is in its note below. The runners table and "
        f"the jobs' `runner_id` are polled every 50 ms: *its row ended* is the row's `ended_at` (the database's "
        f"clock, same machine), *all its jobs claimed* is when every unfinished job it held has been seen held by "
        f"another runner (or finished). A stopped runner stands for one on another host, so each runner of that "
        f"run has an output directory of its own, as on its own disk. (Before commits ec2fc6f and 967f755, on one "
        f"shared directory a runner stopped in the middle of a download kept its part file's flock and the runner "
        f"taking the job over retried for about 7 minutes before marking the paid result failed, in 2 of 10 trial "
        f"stops; and in 6 of 10 the stopped runner, continued, exited 2 rather than 4. Both are fixed, with "
        f"tests in tests/reliability/test_scale_out.py.)\n\n"
        f"{failover_table(fail)}\n"
        f"{reading(tput, fail, plan_cpu_s)}"
    )


def disturbance(tput: list[Throughput]) -> str:
    again = [f"{r.database} with {r.runners} runner(s): {r.tries} tries" for r in tput if r.tries > 1]
    return "measured again: " + "; ".join(again) if again else "every run was undisturbed at the first try"


# ---- main ------------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help=f"jobs per throughput run (default {FULL.jobs:,})")
    parser.add_argument("--smoke", action="store_true", help="300 jobs, 1 and 2 runners, kill -9 only; writes nothing")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--keep", type=Path, help="keep every log, manifest and file in this (new) directory")
    parser.add_argument("--only", help="comma-separated subset of postgres,sqlite,kill,full,stop; writes nothing")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    if args.jobs:
        sizes = dataclasses.replace(sizes, jobs=args.jobs)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            work = args.keep.resolve()
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batchgen-scale-")))
        chosen = set(args.only.split(",")) if args.only else {"postgres", "sqlite", "kill", "full", "stop"}
        plan_cpu_s = plan_cpu(sizes, work) if "postgres" in chosen else 0.0
        quiet = not args.smoke
        tput = [
            measure_throughput(sizes, work, "PostgreSQL", k, quiet=quiet) for k in sizes.runners if "postgres" in chosen
        ]
        if "sqlite" in chosen:
            tput.append(measure_throughput(sizes, work, "SQLite", 1, quiet=quiet))
        fail = []
        for how in ("kill", "full", "stop"):
            if how in chosen and (how == "kill" or sizes.slow_paths or args.only):
                if quiet:
                    wait_for_quiet()
                fail.append(run_failover(sizes, work, how))
    print(throughput_table(tput))
    print(failover_table(fail))
    print(reading(tput, fail, plan_cpu_s))
    say(f"done in {time.monotonic() - started:.0f} s")
    broken = [r.once.detail for r in tput if not r.once.ok] + [r.once.detail for r in fail if r.once and not r.once.ok]
    if args.smoke or args.only:
        return 1 if broken else 0
    command = ".venv/bin/python benchmarks/scale_out.py" + (f" --jobs {sizes.jobs}" if sizes.jobs != FULL.jobs else "")
    write_section(args.output, SECTION, section(sizes, tput, fail, plan_cpu_s, command))
    say(f"wrote the section {SECTION!r} of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
