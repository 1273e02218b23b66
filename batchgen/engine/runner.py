"""The runner: drives one run's jobs to a terminal state, exactly once each.

Order of business per job: intent committed -> POST -> generation id committed -> completion noticed (SSE, or a
poll after a reconnect or a long silence) -> file downloaded, hashed, renamed into place -> succeeded.
Anything that dies between two of those steps is picked up from the database by the next runner.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from batchgen.core.jobs import JobStatus, canonical_json
from batchgen.core.lifecycle import JobEvent
from batchgen.core.matching import Window
from batchgen.core.progress import Progress
from batchgen.core.remote import RemoteGeneration, failure_class
from batchgen.engine.client import OxenClient
from batchgen.engine.downloads import destination, fetch_result, refresh_result_url
from batchgen.engine.events import EventListener
from batchgen.engine.options import RunOptions, RunOutcome
from batchgen.engine.reconcile import current_state, read_candidates
from batchgen.engine.scheduler import AdaptiveLimit, SubmitGate
from batchgen.engine.settle import settle_details
from batchgen.engine.store import JobState, Lease, RunInfo, Store
from batchgen.errors import (
    ApiError,
    ApiUnreachableError,
    AuthError,
    BatchgenError,
    BudgetExceededError,
    EnqueueUnknownError,
    InsufficientCreditsError,
    OutputError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)

ACTIVE = (JobStatus.QUEUED, JobStatus.PROCESSING)
UNFINISHED = (JobStatus.PENDING, JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.DOWNLOADING)
INTENT_BATCH = 64  # at most this many intents share one durable commit
NOT_FOUND_READS = 2  # reads that must agree an enqueue created nothing (or a generation is gone) before acting


def lease_clock() -> float:
    """Seconds that keep counting while the machine sleeps (CLOCK_BOOTTIME), so a lease check after a laptop's
    sleep sees the time that passed; monotonic where there is no such clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class _Halt(Exception):
    """Stop the run now (auth refused, API gone, disk unusable, lease lost): the state stays resumable."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Runner:
    """Runs one run to completion against one API, holding the run's lease."""

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
        self.store, self.client, self.run, self.lease = store, client, run, lease
        self.out_dir, self.options = out_dir, options
        self.on_progress = on_progress
        self.limit = AdaptiveLimit(options.concurrency)
        self.gate = SubmitGate(options.submit_rate)
        self.downloads = anyio.CapacityLimiter(options.download_concurrency)
        self.jobs: dict[int, JobState] = {}
        self.by_generation: dict[str, JobState] = {}
        self.early: OrderedDict[str, RemoteGeneration] = OrderedDict()  # events that beat their enqueue reply
        self.pending: deque[JobState] = deque()
        self.repeated: set[str] = set()  # requests more than one pending job makes: only these are grouped
        self.last_heard: dict[int, float] = {}
        self.not_found: dict[int, int] = {}  # job id -> consecutive reads that found no trace of its generation
        self.slotted: set[int] = set()
        self.giving_up: set[int] = set()  # jobs whose timeout cancel is under way
        self.reconciling: dict[str, anyio.Lock] = {}  # one reconciliation at a time per request
        self.halted_submits: str | None = None
        self.submitter_running = False
        self.changed = anyio.Event()
        self.listener: EventListener | None = None
        self.reconcile_wanted = anyio.Event()
        self.started = time.monotonic()
        self.lease_confirmed_at = lease_clock()
        self.finished_times: deque[float] = deque(maxlen=200)
        self.unreachable_since: float | None = None
        self._tg: TaskGroup | None = None

    # ---- entry ---------------------------------------------------------------------------------------

    async def execute(self) -> RunOutcome:
        """Run until every job is terminal (or nothing more can be done); raise on auth/API/disk/lease failure.
        The caller holds the lease and releases it."""
        outcome = RunOutcome(self.run.name, {})
        try:
            await self.client.check_access()
            self._load()
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create the output directory {self.out_dir}: {exc.strerror}") from exc
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    if not self.options.poll_only:
                        self.listener = EventListener(self.client, self._on_event, self._on_connect)
                        await tg.start(self.listener.listen)
                    tg.start_soon(self._heartbeat)
                    tg.start_soon(self._recover)
                    tg.start_soon(self._submitter)
                    tg.start_soon(self._watchdog)
                    tg.start_soon(self._progress_loop)
                    await self._wait_until_done()
                    await settle_details(self.client, self.store, self.lease)
                    tg.cancel_scope.cancel()
            except* (_Halt, BatchgenError) as group:
                raise _first_user_error(group) from None
        finally:
            # plain synchronous calls: nothing here can be cancelled half-way
            outcome.counts = self.store.status_counts(self.run.id)
            outcome.elapsed_s = time.monotonic() - self.started
            outcome.requests = self.client.requests_sent
            outcome.stream_connections = self.listener.connections if self.listener else 0
            outcome.stopped_reason = self.halted_submits
            self._emit_progress()
        return outcome

    def _load(self) -> None:
        self.store.retry_downloads(self.lease)
        for job in self.store.load_jobs(self.run.id, [*UNFINISHED, JobStatus.UNKNOWN]):
            self.jobs[job.id] = job
            if job.generation_id:
                self.by_generation[job.generation_id] = job
            if job.status is JobStatus.PENDING:
                self.pending.append(job)
            elif job.status is not JobStatus.DOWNLOADING and self.limit.try_acquire(job.id):
                self.slotted.add(job.id)
        seen: set[str] = set()
        for job in self.pending:
            key = _request_key(job)
            if key in seen:
                self.repeated.add(key)
            seen.add(key)

    async def _wait_until_done(self) -> None:
        # self.jobs holds only unfinished jobs (_moved drops the others), so this check is O(1) until submitting halts
        while True:
            if not self.jobs:
                return
            if self.halted_submits and all(j.status is JobStatus.PENDING for j in self.jobs.values()):
                return  # nothing in flight, and nothing more may be submitted
            self.changed = anyio.Event()
            with anyio.move_on_after(1.0):
                await self.changed.wait()

    # ---- bookkeeping of this process's copy of the jobs --------------------------------------------------

    def _moved(self, job: JobState, status: JobStatus) -> None:
        """The store moved `job` to `status`: follow in memory (slots, what is left to do)."""
        job.status = status
        if status.is_terminal or status in (JobStatus.DOWNLOADING, JobStatus.PENDING, JobStatus.UNKNOWN):
            self._free_slot(job)
        if status.is_terminal:
            self.finished_times.append(time.monotonic())
        if status.is_terminal or status is JobStatus.UNKNOWN:  # nothing more this run can do for it
            self.jobs.pop(job.id, None)
        self.changed.set()

    def _free_slot(self, job: JobState) -> None:
        if job.id in self.slotted:
            self.slotted.discard(job.id)
            self.limit.release(job.id)

    def _adopted(self, job: JobState, generation_id: str) -> None:
        job.generation_id = generation_id
        self.by_generation[generation_id] = job
        self.last_heard[job.id] = time.monotonic()
        self.not_found.pop(job.id, None)
        self._moved(job, JobStatus.QUEUED)

    async def _observe(self, remote: RemoteGeneration) -> None:
        """Apply what the API says about a generation we own (from an event or a poll); duplicates are no-ops."""
        job = self.by_generation.get(remote.generation_id)
        if job is None or job.status not in ACTIVE:
            return
        self.last_heard[job.id] = time.monotonic()
        self.not_found.pop(job.id, None)
        if remote.status == "processing" and job.status is JobStatus.QUEUED:
            self.store.mark_started(self.lease, job, remote)
            self._moved(job, JobStatus.PROCESSING)
        elif remote.status == "succeeded":
            job.download_url = remote.download_url or job.download_url
            job.result_url = remote.result_url or job.result_url
            downloading = self.options.download and self._tg is not None
            # with downloads off the job is done now: one commit instead of two on the path that frees a slot
            status = self.store.mark_succeeded_remotely(self.lease, job, remote, download=downloading)
            self._moved(job, status)
            if downloading and self._tg is not None:
                self._tg.start_soon(self._download, job)
        elif remote.status == "failed":
            error = remote.error or "failed without a message"
            klass = failure_class(error)
            if klass == "insufficient_credits":
                self.halted_submits = f"the account ran out of credits ({error}); add credits, then `batchgen resume`"
            self.store.mark_failed(
                self.lease, job, JobEvent.FAILED_REMOTELY, error=error, error_class=klass, remote=remote
            )
            self._moved(job, JobStatus.FAILED)
        elif remote.status == "cancelled":
            self.store.mark_failed(
                self.lease,
                job,
                JobEvent.CANCELLED_REMOTELY,
                error="cancelled remotely",
                error_class="cancelled",
                remote=remote,
            )
            self._moved(job, JobStatus.CANCELLED)

    # ---- events --------------------------------------------------------------------------------------

    async def _on_event(self, remote: RemoteGeneration) -> None:
        if remote.generation_id in self.by_generation:
            await self._observe(remote)
            return
        # maybe its enqueue reply is still on the way: keep it a while (bounded)
        self.early[remote.generation_id] = remote
        while len(self.early) > 10_000:
            self.early.popitem(last=False)

    def _on_connect(self, count: int) -> None:
        if count > 1:  # the first connect precedes every enqueue of this process; recovery covers older jobs
            self.reconcile_wanted.set()

    # ---- submitting -----------------------------------------------------------------------------------

    def _next_group(self) -> list[JobState]:
        """The next pending job plus, when allowed, its later repeats of the very same request (up to 4)."""
        first = self.pending.popleft()
        group = [first]
        # scanning the line for every job was quadratic (15 min of a blocked loop at 100,000 distinct jobs)
        if self.options.batch_repeats and _request_key(first) in self.repeated:
            for other in self.pending:  # no copy of the whole line: stop as soon as the group is full
                if len(group) >= self.options.max_per_enqueue:
                    break
                if other.model == first.model and other.params == first.params:
                    group.append(other)
            for other in group[1:]:
                self.pending.remove(other)
        return group

    async def _submitter(self) -> None:
        # One submitter at a time: two of them, each holding part of a group's slots while waiting for the rest,
        # can take every slot between them and wait for each other forever.
        self.submitter_running = True
        async with anyio.create_task_group() as tg:
            while self.pending and not self.halted_submits:
                batch = self._commit_intents(await self._take_batch())
                if not batch:
                    break
                for index, group in enumerate(batch):
                    await self.gate.wait_turn()
                    if not self.halted_submits:
                        await self._ensure_lease()  # a runner paused past its lease sends nothing
                    if self.halted_submits:
                        for unsent in batch[index:]:
                            self._unsend(unsent)
                        break
                    tg.start_soon(self._enqueue, group)
            self.submitter_running = False  # from here on a requeue must start a new one
        self.changed.set()

    def _commit_intents(self, batch: list[list[JobState]]) -> list[list[JobState]]:
        """Commit the intents of the batch: one durable, fenced, budget-checked transaction when the whole batch
        fits the budget; otherwise group by group until one does not, which stops submitting."""
        if not batch:
            return []
        try:
            self._record_intents([job for group in batch for job in group])
            return batch
        except BudgetExceededError:
            pass
        committed: list[list[JobState]] = []
        for index, group in enumerate(batch):
            try:
                self._record_intents(group)
            except BudgetExceededError as exc:
                self.halted_submits = str(exc)
                for job in reversed([j for g in batch[index:] for j in g]):
                    self._free_slot(job)
                    self.pending.appendleft(job)
                break
            committed.append(group)
        return committed

    def _record_intents(self, jobs: list[JobState]) -> None:
        intent = self.store.record_intents(self.lease, jobs)
        for job in jobs:
            job.status, job.intent_at = JobStatus.SUBMITTING, intent
            job.attempts += 1

    async def _take_batch(self) -> list[list[JobState]]:
        """The next group (waiting for room), then every further group that fits in the slots free right now.
        Each group becomes one enqueue."""
        batch: list[list[JobState]] = []
        taken = 0
        while self.pending and taken < INTENT_BATCH:
            group = self._next_group()
            while len(group) > self.limit.limit:
                self.pending.appendleft(group.pop())
            if batch:
                held = self._take_slots_now(group)
            else:
                held = await self._take_slots(group)
                # let the listener finish the completions already read: their slots join this batch
                await anyio.lowlevel.checkpoint()
            if not held:
                break
            batch.append(held)
            taken += len(held)
        return batch

    def _take_slots_now(self, group: list[JobState]) -> list[JobState]:
        """Slots for the whole group if they are free now; otherwise none, and the group goes back in line."""
        got: list[JobState] = []
        for job in group:
            if not self.limit.try_acquire(job.id):
                for held in got:
                    self.limit.release(held.id)
                self.pending.extendleft(reversed(group))
                return []
            got.append(job)
        self.slotted.update(j.id for j in group)
        return got

    def _unsend(self, group: list[JobState]) -> None:
        """An intent whose POST was never sent (submitting stopped first): back to pending, nothing to reconcile."""
        self.store.mark_unsent(self.lease, [j.id for j in group])
        for job in reversed(group):
            self._moved(job, JobStatus.PENDING)
            self.pending.appendleft(job)

    async def _take_slots(self, group: list[JobState]) -> list[JobState]:
        """Slots for the whole group, waiting for room (one enqueue is cheaper than several), but never for more
        than the limit: a 429 can shrink it below what the group already holds, and then no slot would ever come.
        The jobs left out go back to the front of the line."""
        held: list[JobState] = []
        for index, job in enumerate(group):
            while not self.limit.try_acquire(job.id):
                if held and len(held) >= self.limit.limit:
                    self.pending.extendleft(reversed(group[index:]))
                    return held
                with anyio.move_on_after(0.5):  # then look at the limit again
                    await self.limit.acquire(job.id)
                    break
            self.slotted.add(job.id)
            held.append(job)
        return held

    async def _enqueue(self, group: list[JobState]) -> None:
        body = {"model": group[0].model, **group[0].params}
        if len(group) > 1:
            body["num_generations"] = len(group)
        try:
            ids = await self.client.enqueue(body)
        except EnqueueUnknownError:
            await self._reconcile(group)
            return
        except (RateLimitedError, ApiUnreachableError, InsufficientCreditsError, ServerError) as exc:
            self._requeue(group, exc)
            return
        except AuthError as exc:
            self._requeue(group, exc)
            raise _Halt(exc) from exc
        except RequestRejectedError as exc:
            self.store.mark_rejected(self.lease, [j.id for j in group], error=str(exc))
            for job in group:
                self._moved(job, JobStatus.FAILED)
            return
        self.unreachable_since = None
        self.limit.succeeded()
        self.store.record_enqueued(self.lease, list(zip(group, ids, strict=True)))
        for job, generation_id in zip(group, ids, strict=True):
            self._adopted(job, generation_id)
            early = self.early.pop(generation_id, None)
            if early is not None:
                await self._observe(early)

    def _requeue(self, group: list[JobState], exc: ApiError) -> None:
        """Nothing was created: the jobs go back to the front of the line, and submitting pauses."""
        self.store.mark_not_created(self.lease, [j.id for j in group], error=str(exc), error_class=type(exc).__name__)
        for job in reversed(group):
            self._moved(job, JobStatus.PENDING)
            self.pending.appendleft(job)
        if isinstance(exc, RateLimitedError):
            self.limit.shrink()
            self.gate.pause(exc.retry_after if exc.retry_after is not None else self._backoff(group[0].attempts))
        elif isinstance(exc, InsufficientCreditsError):
            self.halted_submits = str(exc)
        else:
            if isinstance(exc, ApiUnreachableError):
                self.unreachable_since = self.unreachable_since or time.monotonic()
            self.gate.pause(self._backoff(group[0].attempts))
        if self._tg is not None and not self.halted_submits and not self.submitter_running:
            self._tg.start_soon(self._submitter)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.options.backoff_max, self.options.backoff_initial * 2 ** max(0, min(attempt - 1, 10))))

    # ---- reconciling lost enqueue replies -------------------------------------------------------------

    async def _reconcile(self, group: list[JobState], *, resubmit_undecidable: bool = False) -> None:
        """An enqueue may or may not have created generations: find them before anything is resent.

        One reconciliation at a time per request, so identical requests (repeats) never race for the same
        candidates; each adoption is reserved in the ledger in the transaction that assigns it. A job is sent
        again only after NOT_FOUND_READS reads of the queue agree that nothing was created for it."""
        async with self.reconciling.setdefault(_request_key(group[0]), anyio.Lock()):
            left = list(group)
            empty_reads = 0
            for attempt in range(1, self.options.reconcile_tries + 1):
                await anyio.sleep(self.options.reconcile_grace * attempt)
                try:
                    found = await self._claim_orphans(left)
                except AuthError as exc:
                    raise _Halt(exc) from exc
                except ApiError:
                    continue
                for job in left:
                    remote = found.get(job.id)
                    if remote is None:
                        continue
                    self._adopted(job, remote.generation_id)
                    await self._observe(remote)
                    early = self.early.pop(remote.generation_id, None)
                    if early is not None:
                        await self._observe(early)
                left = [j for j in left if j.id not in found]
                if not left:
                    return
                empty_reads += 1
                if empty_reads >= NOT_FOUND_READS:
                    # the queue, read again and again after the failed POST, has no such generation
                    self._requeue(left, ServerError("the enqueue created nothing (read twice); sending it again"))
                    return
            if resubmit_undecidable:
                self.store.resubmit_unknown(self.lease, [j.id for j in left])
                for job in reversed(left):
                    self._moved(job, JobStatus.PENDING)
                    self.pending.appendleft(job)
                if self._tg is not None and not self.submitter_running:
                    self._tg.start_soon(self._submitter)
                return
            error = "the enqueue reply was lost and the queue could not be read to check whether it was created"
            self.store.mark_undecidable(self.lease, [j.id for j in left], error=error)
            for job in left:
                self._moved(job, JobStatus.UNKNOWN)

    async def _claim_orphans(self, jobs: list[JobState]) -> dict[int, RemoteGeneration]:
        earliest = min((j.intent_at for j in jobs if j.intent_at), default=None)
        window = Window(clock_offset=self.client.clock_offset)
        since = None
        if earliest is not None:
            since = earliest + (self.client.clock_offset or timedelta(0)) - window.slack
        candidates = await read_candidates(self.client, jobs[0].model, namespace=jobs[0].namespace, since=since)
        window = Window(clock_offset=self.client.clock_offset, server_now=self.client.server_now())
        return self.store.claim_orphans(self.lease, jobs, candidates, window)

    # ---- recovery, polling, the safety net ------------------------------------------------------------

    async def _recover(self) -> None:
        """Pick up what a previous runner left between two steps; undecided jobs are reconciled again."""
        leftovers = [j for j in self.jobs.values() if j.status in (JobStatus.SUBMITTING, JobStatus.UNKNOWN)]
        by_request: dict[str, list[JobState]] = {}
        for job in leftovers:
            by_request.setdefault(_request_key(job), []).append(job)
        async with anyio.create_task_group() as tg:
            for group in by_request.values():
                tg.start_soon(partial(self._reconcile, group, resubmit_undecidable=self.options.resubmit_unknown))
            for job in [j for j in self.jobs.values() if j.status is JobStatus.DOWNLOADING]:
                if self.options.download:
                    tg.start_soon(self._download, job)
                else:
                    self.store.mark_finished_without_download(self.lease, job)
                    self._moved(job, JobStatus.SUCCEEDED)
            if any(j.status in ACTIVE for j in self.jobs.values()):
                tg.start_soon(self._poll_active, False)

    async def _watchdog(self) -> None:
        """Polls after reconnects, on a slow cadence for silent jobs (or always, in poll-only mode)."""
        interval = self.options.poll_interval if self.options.poll_only else max(0.05, self.options.silent_after / 2)
        while True:
            with anyio.move_on_after(interval):
                await self.reconcile_wanted.wait()
            everything = self.reconcile_wanted.is_set() or self.options.poll_only
            self.reconcile_wanted = anyio.Event()
            await self._poll_active(not everything)
            self._check_unreachable()
            self._check_timeouts()

    async def _poll_active(self, only_silent: bool) -> None:
        now = time.monotonic()
        targets = [
            j for j in self.jobs.values()
            if j.status in ACTIVE and j.generation_id
            and (not only_silent or now - self.last_heard.get(j.id, 0.0) >= self.options.silent_after)
        ]  # fmt: skip
        if not targets:
            return
        try:
            active = {g.generation_id: g for g in await self.client.list_queue()}
            for namespace in sorted({j.namespace for j in targets if j.namespace}):
                active.update({g.generation_id: g for g in await self.client.list_queue(namespace=namespace)})
        except AuthError as exc:
            raise _Halt(exc) from exc
        except ApiError:
            return
        self.unreachable_since = None
        for job in targets:
            remote = active.get(job.generation_id or "")
            if remote is not None:
                await self._observe(remote)
                continue
            try:
                remote = await current_state(self.client, job.generation_id or "")
            except AuthError as exc:
                raise _Halt(exc) from exc
            except ApiError:
                continue
            if remote is None:
                # one "not found" may be a replica behind: only repeated reads say the generation is gone
                self.not_found[job.id] = self.not_found.get(job.id, 0) + 1
                if self.not_found[job.id] >= NOT_FOUND_READS and job.status in ACTIVE:
                    self.store.mark_failed(
                        self.lease,
                        job,
                        JobEvent.VANISHED,
                        error="the generation vanished from the API",
                        error_class="lost",
                    )
                    self._moved(job, JobStatus.FAILED)
            elif remote.is_known_status:
                await self._observe(remote)

    def _check_unreachable(self) -> None:
        if self.unreachable_since and time.monotonic() - self.unreachable_since > self.options.unreachable_timeout:
            raise _Halt(
                ApiUnreachableError(
                    f"no answer from {self.client.base_url} for {self.options.unreachable_timeout:.0f} s"
                )
            )

    def _check_timeouts(self) -> None:
        limit = self.options.job_timeout
        if limit is None or self._tg is None:
            return
        now = datetime.now(UTC)
        for job in list(self.jobs.values()):
            if job.status in ACTIVE and job.intent_at and (now - job.intent_at).total_seconds() > limit:
                if job.id not in self.giving_up:
                    self.giving_up.add(job.id)
                    self._tg.start_soon(self._give_up, job)

    async def _give_up(self, job: JobState) -> None:
        """Cancel a generation past job_timeout, then read it: one that succeeded meanwhile is paid for, so it is
        downloaded and its job succeeds. A cancel that fails leaves the job in flight (tried again later)."""
        try:
            if job.status not in ACTIVE:
                return
            try:
                await self.client.cancel(job.generation_id or "")
                remote = await current_state(self.client, job.generation_id or "")
            except AuthError as exc:
                raise _Halt(exc) from exc
            except ApiError:
                return  # still in flight for all we know: the next watchdog round tries again
            if job.status not in ACTIVE:
                return
            if remote is not None and remote.status in ("succeeded", "failed"):
                await self._observe(remote)
            elif remote is None or remote.status == "cancelled":
                self.store.mark_failed(
                    self.lease,
                    job,
                    JobEvent.TIMED_OUT,
                    error=f"no result after {self.options.job_timeout:.0f} s; cancelled",
                    error_class="timeout",
                    remote=remote,
                )
                self._moved(job, JobStatus.FAILED)
        finally:
            self.giving_up.discard(job.id)

    # ---- downloads ------------------------------------------------------------------------------------

    async def _download(self, job: JobState) -> None:
        """Fetch the result now (presigned URLs expire). A paid result that cannot be fetched stays recoverable:
        it is marked failed with error_class "download", and the next run or resume fetches it again."""
        dest = destination(self.out_dir, self.run.name, job)
        async with self.downloads:
            try:
                fetched = await fetch_result(
                    self.client,
                    job,
                    dest,
                    attempts=self.options.download_attempts,
                    backoff=self._backoff,
                    refresh=lambda: refresh_result_url(self.client, self.store, self.lease, job),
                )
            except OutputError as exc:
                raise _Halt(exc) from exc
        if fetched is None:
            self.store.mark_download_failed(
                self.lease, job, error="the result could not be downloaded (it is paid for: resume retries it)"
            )
            self._moved(job, JobStatus.FAILED)
            return
        digest, size = fetched
        self.store.mark_downloaded(self.lease, job, path=str(dest), sha256=digest, size=size)
        self._moved(job, JobStatus.SUCCEEDED)

    # ---- the lease --------------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.lease.seconds / 6)
            self._confirm_lease()

    async def _ensure_lease(self) -> None:
        """Before an enqueue: when the lease was last confirmed longer ago than a third of it (a pause, a sleep),
        confirm it now; a lost lease stops the run before anything is sent."""
        if lease_clock() - self.lease_confirmed_at > self.lease.seconds / 3:
            self._confirm_lease()

    def _confirm_lease(self) -> None:
        try:
            self.store.confirm_lease(self.lease)
        except BatchgenError as exc:
            self.halted_submits = str(exc)
            raise _Halt(exc) from exc
        self.lease_confirmed_at = lease_clock()

    # ---- progress ---------------------------------------------------------------------------------------

    async def _progress_loop(self) -> None:
        while True:
            self._emit_progress()
            await anyio.sleep(0.5)

    def _emit_progress(self) -> None:
        if self.on_progress is None:
            return
        money = self.store.money(self.run.id)
        self.on_progress(
            Progress.measure(
                run=self.run.name,
                counts=self.store.status_counts(self.run.id),
                elapsed_s=time.monotonic() - self.started,
                finish_times=list(self.finished_times),
                cost_so_far=money.spent,
                estimated_total=self.store.estimated_total(self.run.id),
                concurrency=self.limit.limit,
                stream_connected=bool(self.listener and self.listener.connected),
            )
        )


def _request_key(job: JobState) -> str:
    return canonical_json([job.model, job.params])


def _first_user_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_user_error(exc)
        return exc.error if isinstance(exc, _Halt) else exc
    return group


__all__ = ["RunOptions", "RunOutcome", "Runner"]
