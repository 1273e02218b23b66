"""The runner: drives one run's jobs to a terminal state, exactly once each, by starting its parts and waiting.

Order of business per job: intent committed (fenced, within budget) -> POST -> generation id committed ->
completion noticed (SSE, or a poll after a reconnect or a long silence) -> file downloaded, hashed, renamed into
place -> succeeded. Anything that dies between two of those steps is picked up from the database by the next
runner. The parts:

    Submitter   slots, groups of repeats, intents, enqueues          engine/submitter.py
    Reconciler  enqueues whose reply was lost                         engine/reconcile.py
    Tracker     events, polls after reconnects, silence, timeouts     engine/tracker.py
    Downloader  paid results to disk                                  engine/downloads.py
    LeaseKeeper the heartbeat, and the lease check before an enqueue  engine/heartbeat.py
    PauseWatch  a sleep or SIGSTOP noticed: reconnect, poll, re-check  engine/pauses.py
    JobBook     the shared working copy of the jobs this runner holds engine/book.py
    Claimer     claims jobs (all, or batches on PostgreSQL), sweeps  engine/claims.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from batchgen.core.jobs import JobStatus
from batchgen.core.progress import Progress
from batchgen.engine.book import ACTIVE, Halt, JobBook, request_key
from batchgen.engine.claims import Claimer
from batchgen.engine.client import OxenClient
from batchgen.engine.downloads import Downloader
from batchgen.engine.events import EventListener
from batchgen.engine.heartbeat import LeaseKeeper
from batchgen.engine.holders import lease_lost
from batchgen.engine.options import RunOptions, RunOutcome
from batchgen.engine.pauses import PauseWatch
from batchgen.engine.reconcile import Reconciler
from batchgen.engine.settle import settle_details
from batchgen.engine.store import JobState, Lease, RunInfo, Store
from batchgen.engine.submitter import Submitter
from batchgen.engine.tracker import Tracker
from batchgen.errors import BatchgenError, LeaseLostError, OutputError, StateError

PROGRESS_EVERY_S = 0.5
PROGRESS_SHARE = 20  # wait at least this many times as long as the last progress read took


class Runner:
    """Runs one run to completion against one API, holding the run's lease (the caller takes and releases it)."""

    def __init__(
        self,
        store: Store,
        client: OxenClient,
        run: RunInfo,
        lease: Lease,
        out_dir: Path,
        options: RunOptions,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.store, self.client, self.run, self.lease, self.out_dir = store, client, run, lease, out_dir
        self.options, self.on_progress = options, on_progress
        self.book = JobBook(options.concurrency)
        self.keeper = LeaseKeeper(store, lease, self.book)
        self.downloader = Downloader(store, lease, client, self.book, out_dir, run.name, options)
        self.tracker = Tracker(store, lease, client, self.book, options, on_paid=self.downloader.start)
        self.reconciler = Reconciler(store, lease, client, self.book, self.tracker, options)
        self.submitter = Submitter(store, self.keeper, client, self.book, self.tracker, self.reconciler, options)
        self.claimer = Claimer(store, lease, self.book, options, self._take_up, self.submitter.gate)
        self.listener: EventListener | None = None
        self.pauses = PauseWatch(options.pause_after, self._after_pause)
        self.tg: TaskGroup | None = None
        self.started = time.monotonic()

    async def execute(self) -> RunOutcome:
        """Run until every job is terminal (or nothing more can be done); raise on auth/API/disk/lease failure."""
        outcome = RunOutcome(self.run.name, {})
        try:
            await self.client.check_access()
            self.store.retry_downloads(self.lease)
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create the output directory {self.out_dir}: {exc.strerror}") from exc
            try:
                async with anyio.create_task_group() as tg:
                    self.tracker.tg = self.downloader.tg = self.submitter.tg = tg
                    if not self.options.poll_only:
                        self.listener = EventListener(
                            self.client, self.tracker.on_event, self.tracker.on_connect, self.tracker.health
                        )
                        self.tracker.reconnect = self.listener.reconnect
                        tg.start_soon(self.listener.listen)
                        # connected before the first enqueue, unless connecting takes long (a proxy holding the
                        # stream back): then the first jobs are polled for until the stream proves itself
                        with anyio.move_on_after(self.options.stream_connect_wait):
                            await self.listener.ready.wait()
                    tg.start_soon(self.keeper.heartbeat)
                    tg.start_soon(self.pauses.watch)
                    self.tg = tg
                    self.claimer.claim()  # and sends the pending ones (Submitter.wake)
                    tg.start_soon(self.tracker.watchdog)
                    tg.start_soon(self._progress_loop)
                    await self.claimer.until_done()
                    await settle_details(self.client, self.store, self.lease)
                    tg.cancel_scope.cancel()
            except* (Halt, BatchgenError) as group:
                raise self._told_as_lease_lost(_first_user_error(group)) from None
        finally:
            # plain synchronous calls: nothing here can be cancelled half-way
            outcome.counts = self.store.status_counts(self.run.id)
            outcome.elapsed_s = time.monotonic() - self.started
            outcome.requests = self.client.requests_sent
            outcome.stream_connections = self.listener.connections if self.listener else 0
            outcome.stopped_reason = self.book.halted_submits
            self._emit_progress()
        return outcome

    def _told_as_lease_lost(self, error: BaseException) -> BaseException:
        """A runner paused inside a transaction past the database's patience finds its connection closed when it
        is continued: when the run was taken over meanwhile, that is what it says (LeaseLostError), not a broken
        database. Nothing was sent after the pause either way: every enqueue is preceded by a fenced write."""
        if not isinstance(error, StateError) or isinstance(error, LeaseLostError):
            return error
        try:
            lost = not self.store.still_holds(self.lease)
        except BatchgenError:
            return error  # the database is unreachable: that is the error to tell
        return lease_lost() if lost else error

    def _take_up(self, jobs: list[JobState]) -> None:
        """Work on newly claimed jobs, picking up what an earlier runner left between two steps: undecided
        enqueues are reconciled, paid results downloaded, generations in flight polled, pending jobs sent."""
        assert self.tg is not None, "jobs are taken up inside the run's task group"
        self.book.load(jobs)
        lost: dict[str, list[JobState]] = {}
        for job in jobs:
            if job.status in (JobStatus.SUBMITTING, JobStatus.UNKNOWN):
                lost.setdefault(request_key(job), []).append(job)
        for group in lost.values():
            self.tg.start_soon(partial(self._settle_lost, group))
        for job in [j for j in jobs if j.status is JobStatus.DOWNLOADING]:
            if self.options.download:
                self.tg.start_soon(self.downloader.download, job)
            else:
                self.store.mark_finished_without_download(self.lease, job)
                self.book.moved(job, JobStatus.SUCCEEDED)
        if any(j.status in ACTIVE for j in jobs):
            self.tracker.poll_wanted.set()
        if any(j.status is JobStatus.PENDING for j in jobs):
            self.submitter.wake()

    def _after_pause(self, seconds: float) -> None:
        """The runner was paused: its lease first (a runner woken past it sends nothing), then a new stream
        connection and a poll of every job in flight, instead of waiting for silence to say the same."""
        self.keeper.confirm()
        self.tracker.health.paused(time.monotonic(), seconds)
        if self.listener is not None:
            self.listener.reconnect()
        self.tracker.poll_wanted.set()

    async def _settle_lost(self, group: list[JobState]) -> None:
        if await self.reconciler.reconcile(group, resubmit_undecidable=self.options.resubmit_unknown):
            self.submitter.wake()

    async def _progress_loop(self) -> None:
        """Progress every half second, or less often when reading it is costly (its counts are aggregates over
        the whole run: at a million jobs, 0.2 s a read), so that it never takes more than 5% of the runner."""
        took = 0.0  # the first line comes after the first enqueues, which must not wait for it
        while True:
            await anyio.sleep(max(PROGRESS_EVERY_S, PROGRESS_SHARE * took))
            started = time.perf_counter()
            self._emit_progress()
            took = time.perf_counter() - started

    def _emit_progress(self) -> None:
        if self.on_progress is None:
            return
        money = self.store.money(self.run.id)
        self.on_progress(
            Progress.measure(
                run=self.run.name,
                counts=self.store.status_counts(self.run.id),
                elapsed_s=time.monotonic() - self.started,
                finish_times=list(self.book.finished_times),
                cost_so_far=money.spent,
                estimated_total=self.store.estimated_total(self.run.id),
                concurrency=self.book.limit.limit,
                stream=self.tracker.health.mode.value,
                bytes_downloaded=self.book.bytes_received,
                budget=money.budget,
            )
        )


def _first_user_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_user_error(exc)
        return exc.error if isinstance(exc, Halt) else exc
    return group


__all__ = ["RunOptions", "RunOutcome", "Runner"]
