"""The values the store hands out and takes in: a run, the lease that proves holding it, a job to add, a job's
working copy, a run at a glance."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from batchgen.core.jobs import JobSpec, JobStatus
from batchgen.core.money import LedgerRow, Money
from batchgen.engine.holders import runner_is_live
from batchgen.engine.utc import as_utc


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: int
    name: str
    manifest_path: str
    base_url: str
    out_dir: str
    settings: Mapping[str, Any]
    created_at: datetime
    owner: str | None
    budget: float | None = None
    stream_mode: str | None = None  # while held: the holder's event stream (live, buffered, polling, ...)
    stream_note: str | None = None  # why it is not live


def run_info(row: Any, owner: str | None) -> RunInfo:
    """A `runs` row as the store hands it out (times aware, settings parsed); `owner` the live holder, if any."""
    return RunInfo(
        id=row.id,
        name=row.name,
        manifest_path=row.manifest_path,
        base_url=row.base_url,
        out_dir=row.out_dir,
        settings=json.loads(row.settings_json),
        created_at=as_utc(row.created_at) or row.created_at,
        owner=owner,
        budget=row.budget,
        stream_mode=row.stream_mode if owner else None,
        stream_note=row.stream_note,
    )


@dataclass(frozen=True, slots=True)
class RunnerInfo:
    """One runner of a run, for `status`."""

    id: int
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    live: bool
    jobs_held: int
    end_reason: str | None


def runner_info(row: Any, now: datetime, held: Mapping[int, int]) -> RunnerInfo:
    """A `runners` row for `status`, live or not at `now`, with the unfinished jobs it holds (`held`, by runner)."""
    return RunnerInfo(
        id=row.id, host=row.host, pid=row.pid, started_at=as_utc(row.started_at) or row.started_at,
        heartbeat_at=as_utc(row.heartbeat_at) or row.heartbeat_at, live=runner_is_live(row, now),
        jobs_held=int(held.get(row.id, 0)), end_reason=row.end_reason,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof that this process is one of the run's runners: `epoch` is its fencing token, `runner_id` its row in
    `runners`; every write proves that row is still live with that token."""

    run_id: int
    epoch: int
    owner: str
    seconds: float
    runner_id: int | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to add to a run: the planned spec plus what planning knew about it."""

    spec: JobSpec
    estimated_cost: float | None = None
    media_type: str = "video"


@dataclass(slots=True)
class JobState:
    """The runner's working copy of one job row (mutable; the store is the truth)."""

    id: int
    key: str
    model: str
    params: dict[str, Any]
    repeat: int
    media_type: str
    status: JobStatus
    generation_id: str | None
    attempts: int
    intent_at: datetime | None
    result_url: str | None
    download_url: str | None
    estimated_cost: float | None
    prompt_slug_source: str

    @property
    def namespace(self) -> str | None:
        """The organisation the job bills to (target_namespace), when it names one."""
        value = self.params.get("target_namespace")
        return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class RunOverview:
    """What `status` shows of a run's jobs and money (engine/overview.py)."""

    counts: Mapping[JobStatus, int]  # jobs per status, without the ones the manifest no longer has
    estimated_total: float
    money: Money
    unused: list[LedgerRow]  # paid (or running) generations no job uses, oldest first


@dataclass(frozen=True, slots=True)
class Fetched:
    """A job's result, on disk: where, its SHA-256 and its size (what `mark_downloaded` records)."""

    job: JobState
    path: str
    sha256: str
    size: int
