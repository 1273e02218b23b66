"""Sending jobs: slots, groups of identical requests, the intent (fenced and budget-checked, committed durably
before the POST), the enqueue, and what follows when its answer is a refusal or never comes."""

from __future__ import annotations

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from batchgen.core.backoff import backoff
from batchgen.core.jobs import JobStatus
from batchgen.engine.book import OUT_OF_CREDITS, Halt, JobBook, request_key
from batchgen.engine.client import OxenClient
from batchgen.engine.heartbeat import LeaseKeeper
from batchgen.engine.options import RunOptions
from batchgen.engine.per_turn import PerTurn
from batchgen.engine.reconcile import Reconciler
from batchgen.engine.scheduler import SubmitGate
from batchgen.engine.store import JobState, Lease, Store
from batchgen.engine.tracker import Tracker
from batchgen.engine.transitions import ConcurrencyFullError
from batchgen.errors import (
    ApiError,
    ApiUnreachableError,
    AuthError,
    BudgetExceededError,
    EnqueueUnknownError,
    InsufficientCreditsError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)

INTENT_BATCH = 64  # at most this many intents share one durable commit
FULL_WAIT_S = 0.25  # the run's concurrency is full (other runners): look again this soon


class Submitter:
    """Moves pending jobs to the API under the concurrency limit, the submit rate and the run's budget."""

    def __init__(
        self,
        store: Store,
        lease: LeaseKeeper,
        client: OxenClient,
        book: JobBook,
        tracker: Tracker,
        reconciler: Reconciler,
        options: RunOptions,
    ) -> None:
        self.store, self.lease_keeper, self.client, self.book = store, lease, client, book
        self.tracker, self.reconciler, self.options = tracker, reconciler, options
        self.lease: Lease = lease.lease
        self.gate = SubmitGate(options.submit_rate)
        self.running = False
        self.full = False  # the last intents found the run's concurrency full (other runners hold the places)
        self.tg: TaskGroup | None = None
        self._replies = PerTurn(
            self._commit_replies, lambda: self.tg
        )  # enqueue replies read, their ids not yet committed

    def wake(self) -> None:
        """Start submitting again if jobs wait and nothing stopped it (a requeue after the loop had ended)."""
        if self.tg is not None and self.book.pending and not self.book.halted_submits and not self.running:
            self.running = True  # now, not when it starts: a second wake before then must not start another
            self.tg.start_soon(self.run)

    async def run(self) -> None:
        # One submitter at a time: two of them, each holding part of a group's slots while waiting for the rest,
        # can take every slot between them and wait for each other forever.
        self.running = True
        async with anyio.create_task_group() as tg:
            while self.book.pending and not self.book.halted_submits:
                self.full = False
                batch = self._commit_intents(await self._take_batch())
                if not batch and self.full:
                    await anyio.sleep(FULL_WAIT_S)  # other runners' jobs hold the run's places: look again soon
                    continue
                if not batch:
                    break
                for index, group in enumerate(batch):
                    await self.gate.wait_turn()
                    if not self.book.halted_submits:
                        self.lease_keeper.ensure()  # a runner paused past its lease sends nothing
                    if self.book.halted_submits:
                        for unsent in batch[index:]:
                            self.store.mark_unsent(self.lease, [j.id for j in unsent])
                            self.book.back_in_line(unsent)
                        break
                    tg.start_soon(self._enqueue, group)
            self.running = False  # from here on a requeue must start a new one
        self.book.changed.set()

    # ---- intents -----------------------------------------------------------------------------------------

    def _commit_intents(self, batch: list[list[JobState]]) -> list[list[JobState]]:
        """Commit the intents of the batch: one durable, fenced, budget-checked transaction when the whole batch
        fits; when the run's other runners hold some of its places, the groups that fit the places left, in one
        transaction too (each attempt is a write under the run's lock, which every runner waits for); otherwise
        group by group until one does not fit (the budget: which stops submitting)."""
        if not batch:
            return []
        for _ in range(2):
            try:
                self._record_intents([job for group in batch for job in group])
                return batch
            except BudgetExceededError:
                break
            except ConcurrencyFullError as full:
                fits = _prefix_within(batch, full.free)
                self._give_back(batch[len(fits) :])
                self.full = True  # the run's other runners hold the places: these wait, nothing stops
                batch = fits
                if not batch:
                    return []
        committed: list[list[JobState]] = []
        for index, group in enumerate(batch):
            try:
                self._record_intents(group)
            except (BudgetExceededError, ConcurrencyFullError) as exc:
                if isinstance(exc, BudgetExceededError):
                    self.book.halted_submits = str(exc)
                else:
                    self.full = True
                self._give_back(batch[index:])
                break
            committed.append(group)
        return committed

    def _give_back(self, groups: list[list[JobState]]) -> None:
        """Groups whose intents were not committed: their slots freed, their jobs first in line again."""
        for job in reversed([j for g in groups for j in g]):
            self.book.free_slot(job)
            self.book.pending.appendleft(job)

    def _record_intents(self, jobs: list[JobState]) -> None:
        intent = self.store.record_intents(self.lease, jobs, concurrency=self.options.concurrency)
        for job in jobs:
            job.status, job.intent_at = JobStatus.SUBMITTING, intent
            job.attempts += 1

    # ---- slots and groups ----------------------------------------------------------------------------------

    def _next_group(self) -> list[JobState]:
        """The next pending job plus, when allowed, its later repeats of the very same request (up to 4)."""
        pending = self.book.pending
        first = pending.popleft()
        group = [first]
        # scanning the line for every job was quadratic (15 min of a blocked loop at 100,000 distinct jobs)
        if self.options.batch_repeats and request_key(first) in self.book.repeated:
            for other in pending:  # no copy of the whole line: stop as soon as the group is full
                if len(group) >= self.options.max_per_enqueue:
                    break
                if other.model == first.model and other.params == first.params:
                    group.append(other)
            for other in group[1:]:
                pending.remove(other)
        return group

    async def _take_batch(self) -> list[list[JobState]]:
        """The next group (waiting for room), then every further group that fits in the slots free right now.
        Each group becomes one enqueue. While the downloads are behind (the backlog is full), nothing: paid
        results come first. The backlog is looked at again once the slots are taken: the jobs in flight that
        freed them may have filled it meanwhile."""
        while True:
            await self._downloads_caught_up()
            batch = await self._take_groups()
            if not batch or not self._backlog_full():
                return batch
            self._give_back(batch)

    async def _take_groups(self) -> list[list[JobState]]:
        batch: list[list[JobState]] = []
        taken = 0
        while self.book.pending and taken < INTENT_BATCH:
            group = self._next_group()
            while len(group) > self.book.limit.limit:
                self.book.pending.appendleft(group.pop())
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

    async def _downloads_caught_up(self) -> None:
        """Wait while as many paid results as `download_backlog` wait for their download: sending more would only
        pile up paid work (whose presigned URLs expire) behind a link slower than the generations."""
        while self._backlog_full():
            self.book.download_done = anyio.Event()
            await self.book.download_done.wait()

    def _backlog_full(self) -> bool:
        return len(self.book.downloading) >= max(1, self.options.download_backlog)

    def _take_slots_now(self, group: list[JobState]) -> list[JobState]:
        """Slots for the whole group if they are free now; otherwise none, and the group goes back in line."""
        limit = self.book.limit
        got: list[JobState] = []
        for job in group:
            if not limit.try_acquire(job.id):
                for held in got:
                    limit.release(held.id)
                self.book.pending.extendleft(reversed(group))
                return []
            got.append(job)
        self.book.slotted.update(j.id for j in group)
        return got

    async def _take_slots(self, group: list[JobState]) -> list[JobState]:
        """Slots for the whole group, waiting for room (one enqueue is cheaper than several), but never for more
        than the limit: a 429 can shrink it below what the group already holds, and then no slot would ever come.
        The jobs left out go back to the front of the line."""
        limit = self.book.limit
        held: list[JobState] = []
        for index, job in enumerate(group):
            while not limit.try_acquire(job.id):
                if held and len(held) >= limit.limit:
                    self.book.pending.extendleft(reversed(group[index:]))
                    return held
                with anyio.move_on_after(0.5):  # then look at the limit again
                    await limit.acquire(job.id)
                    break
            self.book.slotted.add(job.id)
            held.append(job)
        return held

    # ---- the enqueue -------------------------------------------------------------------------------------

    async def _enqueue(self, group: list[JobState]) -> None:
        body = {"model": group[0].model, **group[0].params}
        if len(group) > 1:
            body["num_generations"] = len(group)
        try:
            ids = await self.client.enqueue(body)
        except EnqueueUnknownError:
            if await self.reconciler.reconcile(group):
                self.gate.pause(self._backoff(group[0].attempts))
                self.wake()
            return
        except (RateLimitedError, ApiUnreachableError, InsufficientCreditsError, ServerError) as exc:
            self.requeue(group, exc)
            return
        except AuthError as exc:
            self.requeue(group, exc)
            raise Halt(exc) from exc
        except RequestRejectedError as exc:
            self.store.mark_rejected(self.lease, [j.id for j in group], error=str(exc))
            for job in group:
                self.book.moved(job, JobStatus.FAILED)
            return
        self.tracker.unreachable_since = None
        self.book.limit.succeeded()
        self._adopt(list(zip(group, ids, strict=True)))

    def _adopt(self, pairs: list[tuple[JobState, str]]) -> None:
        """Commit generation ids as their replies come in, the replies read in the same turn of the loop in one
        transaction (engine/per_turn.py): until its commit a job is `submitting`, as it was between the reply and
        its own commit before (a runner lost meanwhile leaves it to reconciliation)."""
        self._replies.add(*pairs)

    async def _commit_replies(self, batch: list[tuple[JobState, str]]) -> None:
        self.store.record_enqueued(self.lease, batch)
        for job, generation_id in batch:
            self.book.adopted(job, generation_id)
            await self.tracker.adopted(job)

    def requeue(self, group: list[JobState], exc: ApiError) -> None:
        """Nothing was created: the jobs go back to the front of the line, and submitting pauses."""
        self.store.mark_not_created(self.lease, [j.id for j in group], error=str(exc), error_class=type(exc).__name__)
        self.book.back_in_line(group)
        if isinstance(exc, RateLimitedError):
            self.book.limit.shrink()
            self.gate.pause(exc.retry_after if exc.retry_after is not None else self._backoff(group[0].attempts))
        elif isinstance(exc, InsufficientCreditsError):
            self.book.halted_submits = self.book.halted_submits or f"{OUT_OF_CREDITS} ({exc})"
        else:
            if isinstance(exc, ApiUnreachableError):
                self.tracker.unreachable()
            self.gate.pause(self._backoff(group[0].attempts))
        self.wake()

    def _backoff(self, attempt: int) -> float:
        return backoff(attempt, initial=self.options.backoff_initial, maximum=self.options.backoff_max)


def _prefix_within(batch: list[list[JobState]], places: int) -> list[list[JobState]]:
    """The first groups of `batch` whose jobs together take at most `places`."""
    taken: list[list[JobState]] = []
    for group in batch:
        if len(group) > places:
            break
        taken.append(group)
        places -= len(group)
    return taken
