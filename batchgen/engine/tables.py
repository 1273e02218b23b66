"""The SQLModel tables of the state database. Their DDL history lives in migrations.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel


class RunTable(SQLModel, table=True):
    """One batch: a manifest run against one API, with its settings and its lease."""

    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    manifest_path: str = ""
    manifest_sha256: str = ""
    base_url: str = ""
    out_dir: str = ""
    settings_json: str = "{}"  # concurrency, budget, download flag: what resume needs without the manifest
    created_at: datetime
    updated_at: datetime
    owner: str | None = None  # "host:pid:token:pid-namespace:start-time" of the runner holding the run
    heartbeat_at: datetime | None = None
    epoch: int = 0  # the fencing token: every taking of the run increments it; writes of older epochs are refused
    lease_until: datetime | None = None  # the holder's lease ends here unless its heartbeat extends it
    budget: float | None = None  # USD: spent + reserved may never pass it (None: no budget)
    stream_mode: str | None = None  # the holder's event stream: live, unproven, buffered, connecting, polling
    stream_note: str | None = None  # why it is not live, when it is not


class RunnerTable(SQLModel, table=True):
    """One runner of a run: its fencing token, its lease, and why it ended (left, taken over, lease expired)."""

    __tablename__ = "runners"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    token: int  # the run's epoch when it joined: every write proves this row is live with this token
    identity: str  # host:pid:token:pid-namespace:start-time
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    lease_until: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None
    stream_mode: str | None = None
    stream_note: str | None = None


class JobTable(SQLModel, table=True):
    """One job of a run, with everything that happened to it."""

    __tablename__ = "jobs"
    # status's aggregates read this index alone (engine/overview.py); it serves every read by run (and status)
    __table_args__ = (Index("ix_jobs_run_status", "run_id", "status", "error_class", "estimated_cost", "runner_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id")
    key: str
    model: str
    params_json: str
    variables_json: str = "{}"
    repeat: int = 0
    origin: str = ""
    media_type: str = "video"
    status: str = "pending"
    generation_id: str | None = Field(default=None, index=True)
    attempts: int = 0
    intent_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    result_url: str | None = None
    download_url: str | None = None  # the presigned URL from the event, tried before result_url
    output_path: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    estimated_cost: float | None = None
    cost: float | None = None
    error: str | None = None
    error_class: str | None = None
    runner_id: int | None = Field(default=None, index=True)  # the runner holding the job (None: nobody)
    downloaded_by: str | None = None  # the host whose output directory holds the file
    updated_at: datetime


class GenerationTable(SQLModel, table=True):
    """The ledger: one row per generation the run caused or adopted. Rows are never deleted or cleared."""

    __tablename__ = "generations"
    # status's money and paid-but-unused reads use this index alone (engine/overview.py); it serves every read by run
    __table_args__ = (
        Index(
            "ix_generations_run_money", "run_id", "generation_id", "job_id", "remote_status", "cost", "estimated_cost"
        ),
    )

    generation_id: str = Field(primary_key=True)  # unique across the database: no two jobs can own one
    run_id: int = Field(foreign_key="runs.id")
    job_id: int | None = Field(default=None, foreign_key="jobs.id", index=True)  # None: paid, unused
    model: str
    request_json: str  # the parameters asked for (canonical JSON)
    how: str  # enqueued (from the reply) | adopted (reconciled after a lost reply) | orphan (found, not needed)
    seen_at: datetime
    enqueued_at: datetime | None = None  # the server's time
    remote_status: str  # queued, processing, succeeded, failed, cancelled, lost: as last read
    estimated_cost: float | None = None
    cost: float | None = None  # what the API charged, once the history says
    result_url: str | None = None
    updated_at: datetime
