"""Hearing how generations end: completion events, polls after every reconnect (the stream has no replay), a slow
safety net for silent jobs while the stream is live, polls on a learned schedule while it is not (buffered by a
proxy, unproven, reconnecting: core/stream_health.py), and timeouts. Everything the API says about a generation we
own goes through `Tracker.observe`, which commits the matching transition."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskGroup

from batchgen.core.jobs import JobStatus
from batchgen.core.lifecycle import JobEvent
from batchgen.core.remote import RemoteGeneration, failure_class
from batchgen.core.stream_health import PollSchedule, StreamHealth, StreamMode
from batchgen.engine.book import ACTIVE, OUT_OF_CREDITS, Halt, JobBook
from batchgen.engine.client import OxenClient
from batchgen.engine.options import RunOptions
from batchgen.engine.per_turn import PerTurn
from batchgen.engine.store import JobState, Lease, Store
from batchgen.errors import ApiError, ApiUnreachableError, AuthError

NOT_FOUND_READS = 2  # reads that must agree a generation is gone before its job fails
EARLY_EVENTS = 10_000  # completion events kept for an enqueue reply still on its way (bounded)
TICK_S = 0.25  # how often the watchdog looks at the stream's health and at which jobs are due a poll
LIST_FIRST = 3  # with this many jobs due again at once, one list of the active rows spares a read per running job


class Tracker:
    """Applies what the API says about the run's generations, and asks again when it may have missed something."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        client: OxenClient,
        book: JobBook,
        options: RunOptions,
        on_paid: Callable[[JobState], None],
    ) -> None:
        self.store, self.lease, self.client, self.book, self.options = store, lease, client, book, options
        self.on_paid = on_paid  # a generation succeeded and its file is wanted: start the download
        self.early: OrderedDict[str, RemoteGeneration] = OrderedDict()  # events that beat their enqueue reply
        self.not_found: dict[int, int] = {}  # job id -> consecutive reads that found no trace of its generation
        self.giving_up: set[int] = set()  # jobs whose timeout cancel is under way
        self.poll_wanted = anyio.Event()
        self.unreachable_since: float | None = None
        self.tg: TaskGroup | None = None
        self.health = StreamHealth(poll_only=options.poll_only, keepalive_period_s=options.keepalive_period)
        self.schedule = PollSchedule(options.poll_first_after, options.poll_min_step)
        self.sent_at: dict[int, float] = {}  # job id -> when this runner learned its generation (monotonic)
        self.polled_at: dict[int, float] = {}  # job id -> its last poll on the schedule
        self.reconnect: Callable[[], None] | None = None  # drops the event stream so it connects again
        self._noted: tuple[StreamMode, str | None] | None = None
        self._succeeding: set[int] = set()  # jobs whose success is heard, its commit waiting for this turn's batch
        self._successes = PerTurn(self._commit_successes, lambda: self.tg)

    # ---- what the API says -------------------------------------------------------------------------------

    async def observe(self, remote: RemoteGeneration) -> None:
        """Apply what the API says about a generation we own (from an event or a poll); duplicates are no-ops."""
        job = self.book.by_generation.get(remote.generation_id)
        if job is None or not self._active(job):
            return
        self.book.last_heard[job.id] = time.monotonic()
        self.not_found.pop(job.id, None)
        if remote.status == "processing" and job.status is JobStatus.QUEUED:
            self.store.mark_started(self.lease, job, remote)
            self.book.moved(job, JobStatus.PROCESSING)
        elif remote.status in ("succeeded", "failed"):
            self._learn_duration(job, remote)
        if remote.status == "succeeded":
            job.download_url = remote.download_url or job.download_url
            job.result_url = remote.result_url or job.result_url
            self._succeeding.add(job.id)
            self._successes.add((job, remote))
            return
        elif remote.status == "failed":
            error = remote.error or "failed without a message"
            klass = failure_class(error)
            if klass == "insufficient_credits":
                self.book.halted_submits = self.book.halted_submits or f"{OUT_OF_CREDITS} ({error})"
            self.store.mark_failed(
                self.lease, job, JobEvent.FAILED_REMOTELY, error=error, error_class=klass, remote=remote
            )
            self.book.moved(job, JobStatus.FAILED)
        elif remote.status == "cancelled":
            self.store.mark_failed(
                self.lease, job, JobEvent.CANCELLED_REMOTELY, error="cancelled remotely", error_class="cancelled",
                remote=remote,
            )  # fmt: skip
            self.book.moved(job, JobStatus.CANCELLED)
        self._forget_if_done(job)

    async def _commit_successes(self, batch: list[tuple[JobState, RemoteGeneration]]) -> None:
        """The successes heard in one turn of the loop, in one transaction. With downloads off each job is done
        now (one commit instead of two on the path that frees a slot); otherwise its download starts."""
        status = self.store.mark_many_succeeded_remotely(self.lease, batch, download=self.options.download)
        for job, _ in batch:
            self._succeeding.discard(job.id)
            self.book.moved(job, status)
            self._forget_if_done(job)
            if status is JobStatus.DOWNLOADING:
                self.on_paid(job)

    def _forget_if_done(self, job: JobState) -> None:
        """A job no longer in flight needs no poll schedule."""
        if job.status not in ACTIVE:
            self.sent_at.pop(job.id, None)
            self.polled_at.pop(job.id, None)

    def _active(self, job: JobState) -> bool:
        """Still in flight for the tracker: active, and not a success waiting for its commit."""
        return job.status in ACTIVE and job.id not in self._succeeding

    def _learn_duration(self, job: JobState, remote: RemoteGeneration) -> None:
        if remote.enqueued_at is not None and remote.completed_at is not None:
            self.schedule.finished(job.media_type, (remote.completed_at - remote.enqueued_at).total_seconds())
        elif job.id in self.sent_at:
            self.schedule.finished(job.media_type, time.monotonic() - self.sent_at[job.id])

    def _age_s(self, remote: RemoteGeneration) -> float | None:
        """How long ago the generation finished, on the server's clock (None when unknown)."""
        now = self.client.server_now()
        return None if now is None or remote.completed_at is None else (now - remote.completed_at).total_seconds()

    async def adopted(self, job: JobState, remote: RemoteGeneration | None = None) -> None:
        """`job` just got its generation: apply what is already known of it (a reconciled row, an early event)."""
        self.sent_at[job.id] = time.monotonic()
        self.not_found.pop(job.id, None)
        if remote is not None:
            await self.observe(remote)
        early = self.early.pop(job.generation_id or "", None)
        if early is not None:
            await self.observe(early)

    async def on_event(self, remote: RemoteGeneration) -> None:
        job = self.book.by_generation.get(remote.generation_id)
        if job is not None:
            self.health.event(time.monotonic(), self._age_s(remote), news=self._active(job))
            await self.observe(remote)
            return
        # maybe its enqueue reply is still on the way: keep it a while (bounded)
        self.early[remote.generation_id] = remote
        while len(self.early) > EARLY_EVENTS:
            self.early.popitem(last=False)

    def on_connect(self, count: int) -> None:
        if count > 1:  # the first connect precedes every enqueue of this process; recovery covers older jobs
            self.poll_wanted.set()

    # ---- asking again ------------------------------------------------------------------------------------

    async def watchdog(self) -> None:
        """Polls after reconnects and pauses; while the stream is not live, each job when the schedule says it is
        due; while it is live, a slow safety net for silent jobs. Poll-only runs read every active job each
        poll_interval."""
        options = self.options
        safety_every = max(0.05, options.silent_after / 2)
        last_safety = time.monotonic()
        while True:
            with anyio.move_on_after(options.poll_interval if options.poll_only else min(TICK_S, safety_every)):
                await self.poll_wanted.wait()
            now = time.monotonic()
            everything = self.poll_wanted.is_set() or options.poll_only
            self.poll_wanted = anyio.Event()
            self.health.check(now)
            if self.reconnect is not None and self.health.probe_due(now):
                self.reconnect()  # see whether a new connection delivers
            self._note_stream()
            if everything:
                await self.poll_active(only_silent=False)
            elif self.health.polls_needed:
                await self.poll_due(now)
            elif now - last_safety >= safety_every:
                last_safety = now
                await self.poll_active(only_silent=True)
            self._check_unreachable()
            self._check_timeouts()

    def _note_stream(self) -> None:
        """Keep the run's row saying what the stream is doing (for `status`), when that changes."""
        mode = self.health.mode
        note = None if mode.trusted or not self.health.reasons else self.health.reasons[-1]
        if self._noted != (mode, note):
            self._noted = (mode, note)
            self.store.note_stream(self.lease, mode.value, note)

    async def poll_due(self, now: float) -> None:
        """Read the jobs the schedule says are due (the stream cannot be trusted to tell us)."""
        due = [
            j for j in self.book.jobs.values()
            if self._active(j) and j.generation_id and j.id not in self.giving_up
            and now >= self._due_at(j, now)
        ]  # fmt: skip
        if not due:
            return
        # a first poll comes when most jobs like it are done: one read each. A job read again was running last
        # time, and likely still is: with several of those, one list of the active rows spares their reads
        again = [j for j in due if j.id in self.polled_at]
        first = [j for j in due if j.id not in self.polled_at]
        for job in due:
            self.polled_at[job.id] = now
        if len(again) >= LIST_FIRST:
            await self._poll(again, list_first=True)
        else:
            first += again
        if first:
            await self._poll(first, list_first=False)

    def _due_at(self, job: JobState, now: float) -> float:
        sent = self.sent_at.setdefault(job.id, now)  # a job this runner found in flight: from now on
        return self.schedule.next_poll_at(job.media_type, sent, self.polled_at.get(job.id))

    async def poll_active(self, *, only_silent: bool) -> None:
        now = time.monotonic()
        targets = [
            j for j in self.book.jobs.values()
            if self._active(j) and j.generation_id
            and (not only_silent or now - self.book.last_heard.get(j.id, 0.0) >= self.options.silent_after)
        ]  # fmt: skip
        if targets:
            await self._poll(targets, list_first=True)

    async def _poll(self, targets: list[JobState], *, list_first: bool) -> None:
        """Read `targets`: from one list of the active rows (per namespace) where `list_first`, then one by one
        for those the list does not show (finished, or under the legacy API)."""
        active: dict[str, RemoteGeneration] = {}
        try:
            if list_first:
                active = {g.generation_id: g for g in await self.client.list_queue()}
                for namespace in sorted({j.namespace for j in targets if j.namespace}):
                    active.update({g.generation_id: g for g in await self.client.list_queue(namespace=namespace)})
        except AuthError as exc:
            raise Halt(exc) from exc
        except ApiError:
            return
        self.unreachable_since = None
        for job in targets:
            remote = active.get(job.generation_id or "")
            if remote is None:
                try:
                    remote = await self.client.current_state(job.generation_id or "")
                except AuthError as exc:
                    raise Halt(exc) from exc
                except ApiError:
                    continue
            if remote is None:
                self._not_found(job)
            elif remote.is_known_status:
                if remote.status in ("succeeded", "failed") and self._active(job):
                    self.health.missed(time.monotonic(), self._age_s(remote))
                await self.observe(remote)

    def _not_found(self, job: JobState) -> None:
        # one "not found" may be a replica behind: only repeated reads say the generation is gone
        self.not_found[job.id] = self.not_found.get(job.id, 0) + 1
        if self.not_found[job.id] >= NOT_FOUND_READS and self._active(job):
            error = "the generation vanished from the API"
            self.store.mark_failed(self.lease, job, JobEvent.VANISHED, error=error, error_class="lost")
            self.book.moved(job, JobStatus.FAILED)

    def unreachable(self) -> None:
        """An enqueue found the API unreachable: the clock towards giving up starts (if it has not)."""
        self.unreachable_since = self.unreachable_since or time.monotonic()

    def _check_unreachable(self) -> None:
        limit = self.options.unreachable_timeout
        if self.unreachable_since and time.monotonic() - self.unreachable_since > limit:
            raise Halt(ApiUnreachableError(f"no answer from {self.client.base_url} for {limit:.0f} s"))

    # ---- timeouts ----------------------------------------------------------------------------------------

    def _check_timeouts(self) -> None:
        limit = self.options.job_timeout
        if limit is None or self.tg is None:
            return
        now = datetime.now(UTC)
        for job in list(self.book.jobs.values()):
            if self._active(job) and job.intent_at and (now - job.intent_at).total_seconds() > limit:
                if job.id not in self.giving_up:
                    self.giving_up.add(job.id)
                    self.tg.start_soon(self._give_up, job)

    async def _give_up(self, job: JobState) -> None:
        """Cancel a generation past job_timeout, then read it: one that succeeded meanwhile is paid for, so it is
        downloaded and its job succeeds. A cancel that fails leaves the job in flight (tried again later)."""
        try:
            if not self._active(job):
                return
            try:
                await self.client.cancel(job.generation_id or "")
                remote = await self.client.current_state(job.generation_id or "")
            except AuthError as exc:
                raise Halt(exc) from exc
            except ApiError:
                return  # still in flight for all we know: the next watchdog round tries again
            if not self._active(job):
                return
            if remote is not None and remote.status in ("succeeded", "failed"):
                await self.observe(remote)
            elif remote is None or remote.status == "cancelled":
                self.store.mark_failed(
                    self.lease, job, JobEvent.TIMED_OUT,
                    error=f"no result after {self.options.job_timeout:.0f} s; cancelled", error_class="timeout",
                    remote=remote,
                )  # fmt: skip
                self.book.moved(job, JobStatus.FAILED)
        finally:
            self.giving_up.discard(job.id)
