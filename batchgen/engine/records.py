"""The values the store hands out and takes in: a run, the lease that proves holding it, a job to add, a job's
working copy, a run at a glance."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from batchgen.core.jobs import JobSpec, JobStatus
from batchgen.core.lifecycle import RESERVING
from batchgen.core.money import LedgerRow, Money
from batchgen.engine.holders import runner_is_live
from batchgen.engine.utc import as_utc, stored_time


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


def runner_infos(rows: Iterable[Any], now: datetime, held: Mapping[int, int]) -> list[RunnerInfo]:
    """A run's `runners` rows for `status`, live or not at `now`, with the unfinished jobs each holds (`held`, by
    runner): live first, then in the rows' order."""
    found = [
        RunnerInfo(
            id=r.id, host=r.host, pid=r.pid, started_at=as_utc(r.started_at) or r.started_at,
            heartbeat_at=as_utc(r.heartbeat_at) or r.heartbeat_at, live=runner_is_live(r, now),
            jobs_held=int(held.get(r.id, 0)), end_reason=r.end_reason,
        )
        for r in rows
    ]  # fmt: skip
    return sorted(found, key=lambda r: not r.live)


def ledger_row(r: Any) -> LedgerRow:
    """A `generations` row (attributes; its time a datetime or SQLite's text of one) as a LedgerRow."""
    return LedgerRow(
        generation_id=r.generation_id,
        job_id=r.job_id,
        model=r.model,
        params=json.loads(r.request_json),
        how=r.how,
        remote_status=r.remote_status,
        estimated_cost=r.estimated_cost,
        cost=r.cost,
        result_url=r.result_url,
        seen_at=as_utc(stored_time(r.seen_at)) or r.seen_at,
    )


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


_RESERVING = frozenset(s.value for s in RESERVING)


def overview_from(
    groups: Iterable[tuple[str, str | None, int, float | None]],
    *,
    spent: float | None,
    in_flight: float | None,
    budget: float | None,
    unused: list[LedgerRow],
) -> RunOverview:
    """A run's overview from its jobs grouped by (status, error class, jobs, sum of estimates), its ledger's spent
    and in-flight money, its budget and its unused generations: the jobs the manifest no longer has (error class
    `removed`) are left out of the counts and the estimate, and still reserve what they reserve."""
    counts: dict[JobStatus, int] = {}
    estimated = intents = 0.0
    for status, error_class, n, estimate in groups:
        if status in _RESERVING:
            intents += float(estimate or 0.0)
        if error_class != "removed":
            counts[JobStatus(status)] = counts.get(JobStatus(status), 0) + n
            estimated += float(estimate or 0.0)
    money = Money(
        spent=float(spent or 0.0),
        reserved=float(in_flight or 0.0) + intents,
        budget=budget,
        unused=len(unused),
        unused_cost=sum(float(u.cost if u.cost is not None else (u.estimated_cost or 0.0)) for u in unused),
    )
    ordered = {s: counts[s] for s in sorted(counts, key=lambda s: s.value)}  # as status_counts: by status name
    return RunOverview(counts=ordered, estimated_total=estimated, money=money, unused=unused)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A job's result, on disk: where, its SHA-256 and its size (what `mark_downloaded` records)."""

    job: JobState
    path: str
    sha256: str
    size: int
