"""Several runners on one run over a real PostgreSQL (issue 13): they share the run's jobs, its concurrency and its
budget, and losing one loses nothing. Real processes, each test in a database of its own, the emulator holding
generations so that nothing races the clock; every check is on the emulator's own ledger and rows."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import socket
import subprocess
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import ProgrammingError

from batchgen.emulator import EmulatorConfig, Faults, RunningEmulator, running_emulator
from batchgen.emulator.state import Status
from tests.kit import IMAGE_MODEL, assert_exactly_once, wait_for, write_manifest
from tests.kit_faults import assert_fired
from tests.kit_processes import batchgen, entry_cmd, started

pytestmark = pytest.mark.timeout(240)
CONCURRENCY = 4
LEASE = "2.0"


def query(url: str, statement: str) -> list[Any]:
    """Rows of `statement` ([] while the first runner has not created the tables yet)."""
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"), pool_size=1)
    try:
        with engine.connect() as db:
            return list(db.execute(text(statement)).all())
    except ProgrammingError as exc:
        if "does not exist" in str(exc):
            return []
        raise
    finally:
        engine.dispose()


def live_runners(url: str) -> list[Any]:
    return query(url, "SELECT id, pid FROM runners WHERE ended_at IS NULL ORDER BY id")


def held_in_flight(url: str, pid: int) -> list[int]:
    """Ids of the jobs in flight that the runner process `pid` holds."""
    return [
        r.id
        for r in query(
            url,
            "SELECT jobs.id FROM jobs JOIN runners ON runners.id = jobs.runner_id "
            f"WHERE runners.pid = {int(pid)} AND runners.ended_at IS NULL AND jobs.status IN ('queued', 'processing')",
        )
    ]


def most_at_once(emu: RunningEmulator) -> int:
    """The most generations of the account running at one moment, from the emulator's rows: the account's
    concurrency as the API saw it."""
    edges: list[tuple[float, int]] = []
    for g in emu.state.all():
        edges.append((g.enqueued_at, 1))
        edges.append((g.completed_at if g.completed_at is not None else float("inf"), -1))
    running = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def charged(emu: RunningEmulator) -> Decimal:
    return sum((g.cost for g in emu.state.all() if g.cost is not None), Decimal(0))


def pause_runner(process: subprocess.Popen[str], url: str, *, holding_the_lock: bool = False) -> None:
    """SIGSTOP the runner at a moment none of its sessions is inside a transaction; or, `holding_the_lock`, at one
    when a session of it is inside a write holding the run's lock: the others wait until the server ends that
    session (idle_in_transaction_session_timeout, 10 s), and the runner, continued, finds its connection gone."""
    busy = (
        "SELECT 1 FROM pg_locks JOIN pg_stat_activity USING (pid) WHERE pg_locks.locktype = 'advisory' "
        f"AND pg_locks.granted AND application_name = 'batchgen:{process.pid}'"
        if holding_the_lock
        else f"SELECT 1 FROM pg_stat_activity WHERE application_name = 'batchgen:{process.pid}' AND state <> 'idle'"
    )
    for _ in range(2000 if holding_the_lock else 200):
        process.send_signal(signal.SIGSTOP)
        if bool(query(url, busy)) == holding_the_lock:
            return
        process.send_signal(signal.SIGCONT)
    raise AssertionError(f"the runner was never caught {'in' if holding_the_lock else 'out of'} a transaction")


def runner_cmd(manifest: Path, url: str, emu: RunningEmulator, out: Path) -> list[str]:
    return entry_cmd(
        "run", "--manifest", manifest, "--db", url, "--base-url", emu.base_url, "--out", out, "--lease-seconds", LEASE
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> str:
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("a runner did not finish") from None
    assert process.returncode == 0, err
    return err


def test_three_runners_share_one_run_and_one_killed_midway_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    manifest = write_manifest(tmp_path, 18, model=IMAGE_MODEL, concurrency=CONCURRENCY)
    out = tmp_path / "out"
    with running_emulator(EmulatorConfig(seed=31, duration_s=0.05, hold=True)) as emu:
        command = runner_cmd(manifest, postgres_url, emu, out)
        with started(command, key=emu.api_key) as a, started(command, key=emu.api_key) as b:
            with started(command, key=emu.api_key) as c:
                wait_for(lambda: len(live_runners(postgres_url)) == 3, timeout=60, what="three runners", process=c)
                shown = batchgen("status", "--db", postgres_url, "--json")
                assert shown.returncode == 0, shown.stderr
                listed = json.loads(shown.stdout)["runners"]
                assert sorted(r["pid"] for r in listed if r["live"]) == sorted(p.pid for p in (a, b, c))
                # the run's places are full (all runners together), and the one to die holds some of them
                wait_for(lambda: len(emu.held) == CONCURRENCY, timeout=60, what="the run's concurrency in use")
                # the one to die: a runner holding generations in flight (and, likely, pending jobs it claimed)
                victim = next(p for p in (a, b, c) if held_in_flight(postgres_url, p.pid))
                lost = held_in_flight(postgres_url, victim.pid)
                claimed = [r.id for r in query(postgres_url, "SELECT jobs.id FROM jobs JOIN runners ON "
                           f"runners.id = jobs.runner_id WHERE runners.pid = {victim.pid}")]  # fmt: skip
                victim.kill()
                victim.communicate(timeout=30)
                emu.release()  # everything from now on finishes
                for survivor in {a, b, c} - {victim}:
                    finish(survivor)
        rows = assert_exactly_once(emu, postgres_url)
        peak = most_at_once(emu)
    assert len(rows) == 18
    assert peak <= CONCURRENCY, f"{peak} generations ran at once between the runners (limit {CONCURRENCY})"
    (dead,) = query(postgres_url, f"SELECT ended_at, end_reason FROM runners WHERE pid = {victim.pid}")
    assert dead.end_reason == "lease expired"
    taken = query(postgres_url, f"SELECT status FROM jobs WHERE id IN ({','.join(map(str, claimed))})")
    assert len(taken) >= len(lost) >= 1
    assert {r.status for r in taken} == {"succeeded"}, "the killed runner's jobs were finished by the others"
    assert not live_runners(postgres_url)
    exported = batchgen("export", "--db", postgres_url, "--format", "jsonl")
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(records) == 18 and {r["downloaded_by"] for r in records} == {socket.gethostname()}


def test_runners_together_never_pass_the_budget_and_every_fault_on(tmp_path: Path, postgres_url: str) -> None:
    # flux-1-dev costs 0.025 a generation on the emulator: the budget is exactly the plan's estimate, so a single
    # generation paid twice (a lost reply resent, a result adopted by two runners) would pass it
    manifest = write_manifest(tmp_path, 30, model=IMAGE_MODEL, concurrency=CONCURRENCY, extra="budget: 0.75\n")
    out = tmp_path / "out"
    config = EmulatorConfig(seed=32, duration_s=0.05, faults=Faults.chaos(seed=5))
    with running_emulator(config) as emu:
        command = runner_cmd(manifest, postgres_url, emu, out)
        with started(command, key=emu.api_key) as a, started(command, key=emu.api_key) as b:
            with started(command, key=emu.api_key) as c:
                for process in (a, b, c):
                    try:
                        process.communicate(timeout=120)
                    except subprocess.TimeoutExpired:
                        raise AssertionError("a runner did not finish") from None
                    assert process.returncode in (0, 1, 2), process.returncode
        spent = charged(emu)
        created = len(emu.ledger.created_ids)
        peak = most_at_once(emu)
        assert_fired(emu, "lost_reply_rate", "fail_rate", "sse_drop_rate")
        generations = {g.generation_id: g for g in emu.state.all()}
    assert spent <= Decimal("0.75"), f"the runners together spent {spent}"
    assert created <= 30, f"{created} generations for 30 jobs"
    assert peak <= CONCURRENCY
    owned = query(postgres_url, "SELECT generation_id FROM jobs WHERE generation_id IS NOT NULL")
    ids = [r.generation_id for r in owned]
    assert len(ids) == len(set(ids)), "two jobs own one generation"
    assert all(g in generations for g in ids)


@pytest.mark.parametrize("holding_the_lock", [False, True], ids=["between-writes", "inside-a-write"])
def test_a_runner_paused_past_its_lease_sends_nothing_stale_and_says_so(
    tmp_path: Path, postgres_url: str, holding_the_lock: bool
) -> None:
    # inside a write, the server ends the paused session after 10 s: continued, the runner finds its connection
    # closed, and must still say it was taken over (exit 4), not that the database broke
    manifest = write_manifest(tmp_path, 8, model=IMAGE_MODEL, concurrency=2)
    out = tmp_path / "out"
    with running_emulator(EmulatorConfig(seed=36 if holding_the_lock else 33, duration_s=0.05, hold=True)) as emu:
        command = runner_cmd(manifest, postgres_url, emu, out)
        with started(command, key=emu.api_key) as a:
            wait_for(lambda: len(emu.held) == 2, timeout=60, what="A's two generations running", process=a)
            pause_runner(a, postgres_url, holding_the_lock=holding_the_lock)
            with started(command, key=emu.api_key) as b:
                wait_for(
                    lambda: query(postgres_url, f"SELECT 1 FROM runners WHERE pid = {a.pid} AND ended_at IS NOT NULL"),
                    timeout=60 if holding_the_lock else 30,
                    what="the paused runner's lease to be ended by the other",
                    process=b,
                )
                enqueues_before = len(emu.ledger.enqueues)
                emu.release()
                finish(b)
            enqueues_after_b = len(emu.ledger.enqueues)
            a.send_signal(signal.SIGCONT)
            _, err = a.communicate(timeout=60)
        assert a.returncode == 4, err
        assert "took this run over" in err and "Traceback" not in err
        assert len(emu.ledger.enqueues) == enqueues_after_b >= enqueues_before, "the continued runner sent something"
        rows = assert_exactly_once(emu, postgres_url)
    assert len(rows) == 8
    assert all(g.status is Status.SUCCEEDED for g in emu.state.all())


class TcpCut:
    """A TCP forwarder on 127.0.0.1 in front of PostgreSQL for one runner; `cut()` drops every connection and
    refuses new ones: a network partition between that runner and the database."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread: close() alone would not
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


def test_a_runner_cut_off_from_the_database_stops_and_the_others_finish_its_jobs(
    tmp_path: Path, postgres_url: str
) -> None:
    manifest = write_manifest(tmp_path, 12, model=IMAGE_MODEL, concurrency=CONCURRENCY)
    out = tmp_path / "out"
    parsed = make_url(postgres_url)
    cut = TcpCut((parsed.host or "127.0.0.1", parsed.port or 5432))
    through_cut = parsed.set(port=cut.port).render_as_string(hide_password=False)
    with running_emulator(EmulatorConfig(seed=34, duration_s=0.05, hold=True)) as emu:
        # the first runner creates the run's tables and claims first: it reaches the database through the cut
        with started(runner_cmd(manifest, through_cut, emu, out), key=emu.api_key) as cut_off:
            wait_for(lambda: len(emu.held) == CONCURRENCY, timeout=60, what="the run's places in use", process=cut_off)
            with started(runner_cmd(manifest, postgres_url, emu, out), key=emu.api_key) as other:
                wait_for(lambda: len(live_runners(postgres_url)) == 2, timeout=60, what="two runners", process=other)
                assert held_in_flight(postgres_url, cut_off.pid), "the runner to be cut off holds work in flight"
                cut.cut()
                emu.release()
                _, err = cut_off.communicate(timeout=90)
                assert cut_off.returncode == 2, err  # the state database is unusable: said in one line, no traceback
                assert "cannot use the state database" in err and "Traceback" not in err
                finish(other)
        rows = assert_exactly_once(emu, postgres_url)
        peak = most_at_once(emu)
    assert len(rows) == 12 and peak <= CONCURRENCY


def test_a_killed_runner_that_held_all_the_runs_places_is_taken_over(tmp_path: Path, postgres_url: str) -> None:
    # the survivor has a full pending line of its own, and every place of the run is counted as in flight for the
    # lost runner's jobs: it must take those up (reconcile, poll, download) without waiting for its line to run low
    manifest = write_manifest(tmp_path, 40, model=IMAGE_MODEL, concurrency=CONCURRENCY)
    out = tmp_path / "out"
    with running_emulator(EmulatorConfig(seed=35, duration_s=0.05, hold=True)) as emu:
        command = runner_cmd(manifest, postgres_url, emu, out)
        with started(command, key=emu.api_key) as victim:
            wait_for(lambda: len(emu.held) == CONCURRENCY, timeout=60, what="every place in use", process=victim)
            with started(command, key=emu.api_key) as survivor:
                pending_claimed = (
                    f"SELECT jobs.id FROM jobs JOIN runners ON runners.id = jobs.runner_id "
                    f"WHERE runners.pid = {survivor.pid} AND jobs.status = 'pending'"
                )
                wait_for(lambda: query(postgres_url, pending_claimed), timeout=60, what="a claim", process=survivor)
                assert len(held_in_flight(postgres_url, victim.pid)) == CONCURRENCY
                victim.kill()
                victim.communicate(timeout=30)
                emu.release()
                finish(survivor, timeout=60)
        rows = assert_exactly_once(emu, postgres_url)
        peak = most_at_once(emu)
    assert len(rows) == 40 and peak <= CONCURRENCY


def test_a_runner_stopped_mid_download_does_not_keep_its_file_from_the_runner_that_takes_over(
    tmp_path: Path, postgres_url: str
) -> None:
    # the stopped runner keeps the lock on its part file for as long as it is stopped: the one that takes its job
    # over downloads into a part of its own instead of waiting (for ever) or giving up on a paid result
    manifest = write_manifest(tmp_path, 2, model=IMAGE_MODEL, concurrency=2)
    out = tmp_path / "out"
    faults = Faults(result_size_bytes=512 * 1024, download_bandwidth_bps=64 * 1024)
    with running_emulator(EmulatorConfig(seed=37, duration_s=0.05, faults=faults)) as emu:
        command = runner_cmd(manifest, postgres_url, emu, out)
        with started(command, key=emu.api_key) as a:
            wait_for(lambda: list(out.glob(".*.part")) if out.exists() else None, timeout=60, what="a download",
                     process=a)  # fmt: skip
            pause_runner(a, postgres_url)
            with started(command, key=emu.api_key) as b:
                finish(b, timeout=90)
            a.send_signal(signal.SIGCONT)
            _, err = a.communicate(timeout=60)
        assert a.returncode == 4, err
        rows = assert_exactly_once(emu, postgres_url)
        assert_fired(emu, "download_bandwidth_bps")
    assert len(rows) == 2 and all(r.status == "succeeded" for r in rows)
    for row in rows:
        assert hashlib.sha256(Path(row.output_path).read_bytes()).hexdigest() == row.sha256
