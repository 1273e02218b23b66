"""What a run is told (RunOptions) and what it reports back (RunOutcome)."""

from __future__ import annotations

from dataclasses import dataclass

from batchgen.core.jobs import JobStatus
from batchgen.engine.exports import SplitExport


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a run behaves; every default is what a user running real jobs wants."""

    concurrency: int = 4
    download: bool = True
    poll_only: bool = False
    submit_rate: float = 10.0  # enqueues per second at most
    batch_repeats: bool = True  # identical requests share one enqueue via num_generations
    max_per_enqueue: int = 4
    poll_interval: float = 10.0  # poll-only mode: how often the active list is read
    silent_after: float = 60.0  # SSE mode: a job not heard of for this long is polled (the safety net)
    stream_connect_wait: float = 1.0  # the first enqueue waits this long at most for the event stream to connect
    keepalive_period: float = 15.0  # the API's keep-alive period: a stream silent 1.5x this long is not delivering
    poll_first_after: float | None = None  # stream not live: first poll of a job (None: learned, from 5 s/30 s)
    poll_min_step: float = 1.0  # stream not live: never poll one job more often than this
    pause_after: float = 10.0  # a gap this long in the runner's own ticks was a pause (sleep, SIGSTOP): reconnect
    reconcile_grace: float = 1.0  # wait before reading the queue for an enqueue whose reply was lost
    reconcile_tries: int = 5  # then the job is marked unknown and the user decides
    # a generation still unfinished this long after its enqueue is cancelled and failed
    job_timeout: float | None = 3 * 3600.0
    unreachable_timeout: float = 600.0  # give up (exit 3, resumable) after this long without any answer
    download_concurrency: int = 8
    # paid results waiting for their download at most: past it submitting waits (downloads behind, e.g. on a slow
    # link, must not pile up paid work whose presigned URLs expire meanwhile)
    download_backlog: int = 256
    download_attempts: int = 12
    resubmit_unknown: bool = False
    lease_seconds: float = 30.0  # how long the run stays ours without a heartbeat (renewed every sixth of it)
    claim_page: int = 1000  # SQLite: jobs a runner claims (and holds in memory) at a time, at least 4x concurrency
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    # how results.csv may be written by two processes at the end of a large run (`batchgen run` gives its helper)
    results_split: SplitExport | None = None


@dataclass(slots=True)
class RunOutcome:
    """How one runner's pass over a run ended."""

    run: str
    counts: dict[JobStatus, int]
    stopped_reason: str | None = None  # why submitting stopped early (credits, budget), if it did
    elapsed_s: float = 0.0
    requests: int = 0
    stream_connections: int = 0
