"""The runner: drives one run's jobs to a terminal state, exactly once each.

Order of business per job: intent committed -> POST -> generation id committed -> completion noticed (SSE, or a
poll after a reconnect or a long silence) -> file downloaded, hashed, renamed into place -> succeeded.
Anything that dies between two of those steps is picked up from the database by the next runner.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from batchgen.core.jobs import JobStatus, canonical_json
from batchgen.core.progress import Progress
from batchgen.core.remote import RemoteGeneration, failure_class
from batchgen.engine.client import OxenClient
from batchgen.engine.downloads import destination, fetch_result, refresh_result_url
from batchgen.engine.events import EventListener
from batchgen.engine.options import RunOptions, RunOutcome
from batchgen.engine.reconcile import current_state, find_orphans
from batchgen.engine.scheduler import AdaptiveLimit, SubmitGate
from batchgen.engine.settle import settle_details
from batchgen.engine.store import JobState, RunInfo, Store
from batchgen.errors import (
    ApiError,
    ApiUnreachableError,
    AuthError,
    BatchgenError,
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


class _Halt(Exception):
    """Stop the run now (auth refused, API gone, disk unusable): the state stays resumable."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Runner:
    """Runs one run to completion against one API."""

    def __init__(
        self,
        store: Store,
        client: OxenClient,
        run: RunInfo,
        out_dir: Path,
        options: RunOptions,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.store, self.client, self.run, self.out_dir, self.options = store, client, run, out_dir, options
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
        self.slotted: set[int] = set()
        self.halted_submits: str | None = None
        self.submitter_running = False
        self.committed_cost = 0.0
        self.changed = anyio.Event()
        self.listener: EventListener | None = None
        self.reconcile_wanted = anyio.Event()
        self.started = time.monotonic()
        self.finished_times: deque[float] = deque(maxlen=200)
        self.unreachable_since: float | None = None
        self._tg: TaskGroup | None = None

    # ---- entry ---------------------------------------------------------------------------------------

    async def execute(self) -> RunOutcome:
        """Run until every job is terminal (or nothing more can be done); raise on auth/API/disk failure."""
        owner = self.store.acquire_run(self.run.id)
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
                    tg.start_soon(self._heartbeat, owner)
                    tg.start_soon(self._recover)
                    tg.start_soon(self._submitter)
                    tg.start_soon(self._watchdog)
                    tg.start_soon(self._progress_loop)
                    await self._wait_until_done()
                    await settle_details(self.client, self.store, self.run.id)
                    tg.cancel_scope.cancel()
            except* (_Halt, BatchgenError) as group:
                raise _first_user_error(group) from None
        finally:
            # plain synchronous calls: nothing here can be cancelled half-way
            self.store.release_run(self.run.id, owner)
            outcome.counts = self.store.status_counts(self.run.id)
            outcome.elapsed_s = time.monotonic() - self.started
            outcome.requests = self.client.requests_sent
            outcome.stream_connections = self.listener.connections if self.listener else 0
            outcome.stopped_reason = self.halted_submits
            self._emit_progress()
        return outcome

    def _load(self) -> None:
        self.store.retry_downloads(self.run.id)
        for job in self.store.load_jobs(self.run.id, [*UNFINISHED, JobStatus.UNKNOWN]):
            if job.status is JobStatus.UNKNOWN and self.options.resubmit_unknown:
                self.store.update_job(job.id, JobStatus.PENDING, generation_id=None)
                job.status = JobStatus.PENDING
            if job.status is JobStatus.UNKNOWN:
                continue
            self.jobs[job.id] = job
            if job.generation_id:
                self.by_generation[job.generation_id] = job
            if job.status is JobStatus.PENDING:
                self.pending.append(job)
            elif job.status is not JobStatus.DOWNLOADING:
                self.committed_cost += job.estimated_cost or 0.0
                if self.limit.try_acquire(job.id):
                    self.slotted.add(job.id)
        seen: set[str] = set()
        for job in self.pending:
            key = _request_key(job)
            if key in seen:
                self.repeated.add(key)
            seen.add(key)

    async def _wait_until_done(self) -> None:
        # self.jobs holds only unfinished jobs (_set drops the others), so this check is O(1) until submitting halts
        while True:
            if not self.jobs:
                return
            if self.halted_submits and all(j.status is JobStatus.PENDING for j in self.jobs.values()):
                return  # nothing in flight, and nothing more may be submitted
            self.changed = anyio.Event()
            with anyio.move_on_after(1.0):
                await self.changed.wait()

    # ---- state transitions ----------------------------------------------------------------------------

    def _set(self, job: JobState, status: JobStatus, **fields: object) -> None:
        self.store.update_job(job.id, status, **fields)
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

    def _adopt(self, job: JobState, generation_id: str) -> None:
        job.generation_id = generation_id
        job.status = JobStatus.QUEUED
        self.by_generation[generation_id] = job
        self.last_heard[job.id] = time.monotonic()

    async def _observe(self, remote: RemoteGeneration) -> None:
        """Apply what the API says about a generation we own (from an event or a poll); duplicates are no-ops."""
        job = self.by_generation.get(remote.generation_id)
        if job is None or job.status not in ACTIVE:
            return
        self.last_heard[job.id] = time.monotonic()
        if remote.status == "processing" and job.status is JobStatus.QUEUED:
            self._set(job, JobStatus.PROCESSING, started_at=remote.started_at)
        elif remote.status == "succeeded":
            job.download_url = remote.download_url or job.download_url
            job.result_url = remote.result_url or job.result_url
            downloading = self.options.download and self._tg is not None
            # with downloads off the job is done now: one commit instead of two on the path that frees a slot
            self._set(
                job,
                JobStatus.DOWNLOADING if downloading else JobStatus.SUCCEEDED,
                result_url=job.result_url,
                download_url=job.download_url,
                completed_at=remote.completed_at or datetime.now(UTC),
                **({"started_at": remote.started_at} if remote.started_at else {}),
            )
            if downloading and self._tg is not None:
                self._tg.start_soon(self._download, job)
        elif remote.status == "failed":
            error = remote.error or "failed without a message"
            klass = failure_class(error)
            if klass == "insufficient_credits":
                self.halted_submits = f"the account ran out of credits ({error}); add credits, then `batchgen resume`"
            self._set(
                job,
                JobStatus.FAILED,
                error=error,
                error_class=klass,
                completed_at=remote.completed_at or datetime.now(UTC),
            )
        elif remote.status == "cancelled":
            self._set(
                job,
                JobStatus.CANCELLED,
                error="cancelled remotely",
                error_class="cancelled",
                completed_at=remote.completed_at,
            )

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
                batch = await self._take_batch()
                if not batch:
                    break
                # one durable commit (one fsync) for every intent of the batch, not one per enqueue
                jobs = [job for group in batch for job in group]
                intent = self.store.record_intent([j.id for j in jobs])
                for job in jobs:
                    job.status, job.intent_at = JobStatus.SUBMITTING, intent
                    job.attempts += 1
                for index, group in enumerate(batch):
                    await self.gate.wait_turn()
                    if self.halted_submits:
                        for unsent in batch[index:]:
                            self._unsend(unsent)
                        break
                    tg.start_soon(self._enqueue, group)
            self.submitter_running = False  # from here on a requeue must start a new one
        self.changed.set()

    async def _take_batch(self) -> list[list[JobState]]:
        """The next group (waiting for room), then every further group that fits in the slots free right now,
        within the budget. Each group becomes one enqueue."""
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
            cost = sum(j.estimated_cost or 0.0 for j in held)
            if self.options.max_cost is not None and self.committed_cost + cost > self.options.max_cost + 1e-9:
                for job in reversed(held):
                    self._free_slot(job)
                    self.pending.appendleft(job)
                if not batch:
                    self.halted_submits = (
                        f"the budget of ${self.options.max_cost:.2f} would be exceeded "
                        f"(${self.committed_cost:.2f} committed)"
                    )
                break
            self.committed_cost += cost
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
        for job in reversed(group):
            self.committed_cost -= job.estimated_cost or 0.0
            self._set(job, JobStatus.PENDING)
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
            await self._reconcile_submitting(group)
            return
        except (RateLimitedError, ApiUnreachableError, InsufficientCreditsError, ServerError) as exc:
            self._requeue(group, exc)
            return
        except AuthError as exc:
            self._requeue(group, exc)
            raise _Halt(exc) from exc
        except RequestRejectedError as exc:
            for job in group:
                self.committed_cost -= job.estimated_cost or 0.0
                self._set(job, JobStatus.FAILED, error=str(exc), error_class="rejected")
            return
        self.unreachable_since = None
        self.limit.succeeded()
        self.store.record_enqueued(list(zip([j.id for j in group], ids, strict=True)))
        for job, generation_id in zip(group, ids, strict=True):
            self._adopt(job, generation_id)
            early = self.early.pop(generation_id, None)
            if early is not None:
                await self._observe(early)
        self.changed.set()

    def _requeue(self, group: list[JobState], exc: ApiError) -> None:
        """Nothing was created: the jobs go back to the front of the line, and submitting pauses."""
        for job in reversed(group):
            self.committed_cost -= job.estimated_cost or 0.0
            self._set(job, JobStatus.PENDING, error=str(exc), error_class=type(exc).__name__)
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

    async def _reconcile_submitting(self, group: list[JobState]) -> None:
        """An enqueue may or may not have created generations: find them in the queue before anything is resent."""
        for attempt in range(1, self.options.reconcile_tries + 1):
            await anyio.sleep(self.options.reconcile_grace * attempt)
            try:
                found = await find_orphans(
                    self.client, group, self.store.owned_generation_ids() | set(self.by_generation)
                )
            except AuthError:
                raise
            except ApiError:
                continue
            if found:
                self.store.record_enqueued([(job_id, gen.generation_id) for job_id, gen in found.items()])
            for job in group:
                if job.id in found:
                    self._adopt(job, found[job.id].generation_id)
                    await self._observe(found[job.id])
                    early = self.early.pop(found[job.id].generation_id, None)
                    if early is not None:
                        await self._observe(early)
                else:
                    # the queue, read after the failed POST, has no such generation: it was never created
                    self._requeue([job], ServerError("enqueue was not created; sending it again"))
            self.changed.set()
            return
        for job in group:
            self._set(
                job,
                JobStatus.UNKNOWN,
                error="the enqueue reply was lost and the queue could not be read to check whether it was created",
                error_class="enqueue_unknown",
            )

    # ---- recovery, polling, the safety net ------------------------------------------------------------

    async def _recover(self) -> None:
        """Pick up what a previous runner left between two steps."""
        leftovers = [j for j in self.jobs.values() if j.status is JobStatus.SUBMITTING]
        by_request: dict[tuple[str, str], list[JobState]] = {}
        for job in leftovers:
            by_request.setdefault((job.model, repr(sorted(job.params.items()))), []).append(job)
        async with anyio.create_task_group() as tg:
            for group in by_request.values():
                tg.start_soon(self._reconcile_submitting, group)
            for job in [j for j in self.jobs.values() if j.status is JobStatus.DOWNLOADING]:
                if self.options.download:
                    tg.start_soon(self._download, job)
                else:
                    self._set(job, JobStatus.SUCCEEDED)
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
            except AuthError:
                raise
            except ApiError:
                continue
            if remote is None:
                self._set(job, JobStatus.FAILED, error="the generation vanished from the API", error_class="lost")
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
                self._tg.start_soon(self._give_up, job)

    async def _give_up(self, job: JobState) -> None:
        if job.status not in ACTIVE:
            return
        try:
            await self.client.cancel(job.generation_id or "")
        except ApiError:
            pass
        self._set(
            job,
            JobStatus.FAILED,
            error=f"no result after {self.options.job_timeout:.0f} s; cancelled",
            error_class="timeout",
        )

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
                    refresh=lambda: refresh_result_url(self.client, self.store, job),
                )
            except OutputError as exc:
                raise _Halt(exc) from exc
        if fetched is None:
            self._set(
                job,
                JobStatus.FAILED,
                error="the result could not be downloaded (it is paid for: resume retries it)",
                error_class="download",
            )
            return
        digest, size = fetched
        self._set(job, JobStatus.SUCCEEDED, output_path=str(dest), sha256=digest, bytes=size)

    # ---- bookkeeping ----------------------------------------------------------------------------------

    async def _heartbeat(self, owner: str) -> None:
        while True:
            await anyio.sleep(5.0)
            self.store.heartbeat(self.run.id, owner)

    async def _progress_loop(self) -> None:
        while True:
            self._emit_progress()
            await anyio.sleep(0.5)

    def _emit_progress(self) -> None:
        if self.on_progress is None:
            return
        estimated, spent = self.store.cost_totals(self.run.id)
        self.on_progress(
            Progress.measure(
                run=self.run.name,
                counts=self.store.status_counts(self.run.id),
                elapsed_s=time.monotonic() - self.started,
                finish_times=list(self.finished_times),
                cost_so_far=spent,
                estimated_total=estimated,
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
