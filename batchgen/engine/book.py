"""The runner's working copy of a run: the unfinished jobs, who holds a concurrency slot, the line of jobs waiting
to be sent, and why submitting stopped. Memory only: the store is the truth, and every change here follows a
committed transition there."""

from __future__ import annotations

import time
from collections import deque

import anyio

from batchgen.core.jobs import JobStatus, canonical_json
from batchgen.engine.scheduler import AdaptiveLimit
from batchgen.engine.store import JobState

ACTIVE = (JobStatus.QUEUED, JobStatus.PROCESSING)


OUT_OF_CREDITS = "the account ran out of credits"  # how a stop for want of credits begins (api.py completes it)


class Halt(Exception):
    """Stop the run now (auth refused, API gone, disk unusable, lease lost): the state stays resumable."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def request_key(job: JobState) -> str:
    """Jobs with the same key make the very same request (repeats)."""
    return canonical_json([job.model, job.params])


class JobBook:
    """Unfinished jobs by id and by generation, slots, the pending line, and the run's progress signals."""

    def __init__(self, concurrency: int) -> None:
        self.limit = AdaptiveLimit(concurrency)
        self.jobs: dict[int, JobState] = {}
        self.by_generation: dict[str, JobState] = {}
        self.pending: deque[JobState] = deque()
        self.repeated: set[str] = set()  # requests more than one pending job makes: only these are grouped
        self.slotted: set[int] = set()
        self.last_heard: dict[int, float] = {}
        self.halted_submits: str | None = None  # why submitting stopped (credits, budget, lease), if it did
        self.changed = anyio.Event()
        self.finished_times: deque[float] = deque(maxlen=200)
        self.bytes_received = 0  # result bytes downloaded by this runner (progress for large files)
        self.downloading: set[int] = set()  # paid results this runner has still to fetch
        self.download_done = anyio.Event()  # set when a job leaves `downloading` (the submitter may wait on it)

    def received(self, n: int) -> None:
        self.bytes_received += n

    def load(self, jobs: list[JobState]) -> None:
        """Take in the unfinished jobs of the run; jobs already in flight take a slot while one is free."""
        for job in jobs:
            self.jobs[job.id] = job
            if job.generation_id:
                self.by_generation[job.generation_id] = job
            if job.status is JobStatus.PENDING:
                self.pending.append(job)
            elif job.status is JobStatus.DOWNLOADING:
                self.downloading.add(job.id)
            elif self.limit.try_acquire(job.id):
                self.slotted.add(job.id)
        seen: set[str] = set()
        for job in self.pending:
            key = request_key(job)
            if key in seen:
                self.repeated.add(key)
            seen.add(key)

    @property
    def done(self) -> bool:
        """Nothing left that this runner can move: every job finished, or only pending ones after a halt."""
        # self.jobs holds only unfinished jobs (moved() drops the others), so this is O(1) until submitting halts
        if not self.jobs:
            return True
        return self.halted_submits is not None and all(j.status is JobStatus.PENDING for j in self.jobs.values())

    def moved(self, job: JobState, status: JobStatus) -> None:
        """The store moved `job` to `status`: follow in memory (slots, what is left to do)."""
        job.status = status
        if status.is_terminal or status in (JobStatus.DOWNLOADING, JobStatus.PENDING, JobStatus.UNKNOWN):
            self.free_slot(job)
        if status is JobStatus.DOWNLOADING:
            self.downloading.add(job.id)
        elif job.id in self.downloading:
            self.downloading.discard(job.id)
            self.download_done.set()
        if status.is_terminal:
            self.finished_times.append(time.monotonic())
        if status.is_terminal or status is JobStatus.UNKNOWN:  # nothing more this run can do for it
            self.jobs.pop(job.id, None)  # nor kept: the book holds what is unfinished, whatever the run's size
            self.by_generation.pop(job.generation_id or "", None)
            self.last_heard.pop(job.id, None)
        self.changed.set()

    def adopted(self, job: JobState, generation_id: str) -> None:
        """The store gave `job` its generation (an enqueue reply, or reconciliation)."""
        job.generation_id = generation_id
        self.by_generation[generation_id] = job
        self.last_heard[job.id] = time.monotonic()
        self.moved(job, JobStatus.QUEUED)

    def back_in_line(self, jobs: list[JobState]) -> None:
        """Jobs the store sent back to pending go to the front of the line, in their order."""
        for job in reversed(jobs):
            self.moved(job, JobStatus.PENDING)
            self.pending.appendleft(job)

    def free_slot(self, job: JobState) -> None:
        if job.id in self.slotted:
            self.slotted.discard(job.id)
            self.limit.release(job.id)
