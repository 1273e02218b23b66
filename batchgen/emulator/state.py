"""The generations the emulator holds, the users' credits, and how rows are rendered on the wire.

Mutated on the server's event loop, read from test threads: one lock, and readers get copies.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from batchgen.emulator.catalog import format_cost
from batchgen.emulator.clock import Clock
from batchgen.emulator.media import extension_for

DEFAULT_REPO = "ai-generations"
DEFAULT_DIRECTORY = "generations"


class Status(StrEnum):
    """A generation's status as the API spells it."""

    QUEUED = "queued"  # accepted, waiting for a worker
    PROCESSING = "processing"  # a worker runs it; started_at is set
    SUCCEEDED = "succeeded"  # result_url is set
    FAILED = "failed"  # error_message is set
    CANCELLED = "cancelled"  # by DELETE; no event, no charge

    @property
    def is_terminal(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


@dataclass(slots=True)
class Generation:
    """One row of the queue."""

    generation_id: str
    username: str
    model: str
    media_type: str  # "video" | "image"
    params: dict[str, Any]  # the request minus queue-layer keys; includes prompt
    enqueued_at: float
    source: str = "queue"  # "queue" | "sync" | "elsewhere" (made by a fault, not by the client)
    target_namespace: str | None = None
    target_repo: str | None = None
    target_directory: str | None = None
    status: Status = Status.QUEUED
    started_at: float | None = None
    completed_at: float | None = None
    result_url: str | None = None
    error_message: str | None = None
    cost: Decimal | None = None  # charged amount; None unless succeeded
    reserved: Decimal = field(default_factory=Decimal)  # held from the balance while processing
    # the estimate promised at enqueue, counted against the balance until the row starts (or is cancelled), so
    # that whether an enqueue is refused for want of credits depends on the enqueues before it, not on timing
    pledged: Decimal = field(default_factory=Decimal)

    @property
    def file_path(self) -> str:
        """E9: where the result lives on the emulator."""
        namespace = self.target_namespace or self.username
        repo = self.target_repo or DEFAULT_REPO
        directory = (self.target_directory or DEFAULT_DIRECTORY).strip("/")
        return (
            f"/api/repos/{namespace}/{repo}/file/main/{directory}/{self.generation_id}.{extension_for(self.media_type)}"
        )


def make_generation_id(seed: int, canonical_body: str, attempt: int, index: int) -> str:
    """A lowercase uuid4-shaped id fixed by the seed and the request, so faults keyed on it replay exactly."""
    digest = hashlib.sha256(f"{seed}\x00gen\x00{canonical_body}\x00{attempt}\x00{index}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def user_id_for(username: str) -> str:
    """A stable uuid for a username (the full row carries one)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"emulator-user:{username}"))


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


class EmulatorState:
    """All generations, balances and presigned tokens of one emulator."""

    def __init__(
        self, credits: dict[str, float], *, result_host: str | None = None, clock: Clock | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, Generation] = {}
        self._credits = {user: Decimal(str(amount)) for user, amount in credits.items()}
        self._pledged: dict[str, Decimal] = {}  # user -> sum of the pledges of their queued rows
        self._tokens: dict[str, tuple[str, int]] = {}  # presign token -> (generation id, expires)
        self.base_url = "http://127.0.0.1"  # set once the port is bound
        self.result_host = result_host
        self.clock = clock or Clock()

    # -- rows

    def add(self, generation: Generation) -> None:
        with self._lock:
            self._rows[generation.generation_id] = generation
            if generation.pledged:
                user = generation.username
                self._pledged[user] = self._pledged.get(user, Decimal(0)) + generation.pledged

    def get(self, generation_id: str) -> Generation | None:
        """A copy of the row, or None."""
        with self._lock:
            row = self._rows.get(generation_id)
            return None if row is None else replace(row, params=dict(row.params))

    def update(self, generation_id: str, **changes: Any) -> Generation:
        """Change fields of a row under the lock; returns a copy of the new row."""
        with self._lock:
            row = self._rows[generation_id]
            for name, value in changes.items():
                setattr(row, name, value)
            return replace(row, params=dict(row.params))

    def all(self) -> list[Generation]:
        """Copies of every row, in creation order."""
        with self._lock:
            return [replace(r, params=dict(r.params)) for r in self._rows.values()]

    def of_user(self, username: str) -> list[Generation]:
        """Copies of the user's rows, in creation order."""
        return [r for r in self.all() if r.username == username]

    def count_active(self, username: str) -> int:
        with self._lock:
            return sum(1 for r in self._rows.values() if r.username == username and not r.status.is_terminal)

    def by_file_name(self, name: str) -> Generation | None:
        """The row whose result file is called `name` (`<generation_id>.<ext>`)."""
        return self.get(name.rsplit(".", 1)[0])

    # -- credits

    def balance(self, username: str) -> Decimal:
        with self._lock:
            return self._credits.get(username, Decimal(0))

    def available(self, username: str) -> Decimal:
        """The balance less what queued rows have pledged: what a new enqueue may still count on."""
        with self._lock:
            return self._credits.get(username, Decimal(0)) - self._pledged.get(username, Decimal(0))

    def top_up(self, username: str, amount: float) -> Decimal:
        """Add credits to a user's balance (a test's "the user paid"); the new balance."""
        with self._lock:
            self._credits[username] = self._credits.get(username, Decimal(0)) + Decimal(str(amount))
            return self._credits[username]

    def unpledge(self, generation_id: str) -> None:
        """The row started or was cancelled: its pledge no longer counts against the balance."""
        with self._lock:
            self._unpledge(self._rows[generation_id])

    def _unpledge(self, row: Generation) -> None:
        if row.pledged:
            self._pledged[row.username] = self._pledged.get(row.username, Decimal(0)) - row.pledged
            row.pledged = Decimal(0)

    def reserve(self, generation_id: str, amount: Decimal) -> bool:
        """Hold `amount` from the owner's balance; False (nothing held) when the balance is short."""
        with self._lock:
            row = self._rows[generation_id]
            if self._credits.get(row.username, Decimal(0)) < amount:
                return False
            self._credits[row.username] = self._credits.get(row.username, Decimal(0)) - amount
            row.reserved = amount
            return True

    def release(self, generation_id: str) -> None:
        """Give a reservation (or a pledge) back: failure, cancel."""
        with self._lock:
            row = self._rows[generation_id]
            self._unpledge(row)
            self._credits[row.username] = self._credits.get(row.username, Decimal(0)) + row.reserved
            row.reserved = Decimal(0)

    # -- URLs

    def result_url(self, generation: Generation) -> str:
        """The absolute result URL, under `result_host` when a fault asks for another host name."""
        return self._on_result_host(self.base_url + generation.file_path)

    def presigned_url(self, generation_id: str, ttl_s: float) -> str:
        """A fresh presigned URL (E9) that 403s `ttl_s` from now (the URL shows whole unix seconds, server clock)."""
        expires = math.ceil(self.clock.now() + ttl_s)
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._tokens[token] = (generation_id, expires)
        return self._on_result_host(f"{self.base_url}/presigned/{token}?expires={expires}")

    def presigned_target(self, token: str) -> tuple[str, int] | None:
        """(generation id, expiry) of a presign token; the expiry is ours, whatever the URL claims."""
        with self._lock:
            return self._tokens.get(token)

    def _on_result_host(self, url: str) -> str:
        if not self.result_host:
            return url
        parts = urlsplit(url)
        netloc = self.result_host if parts.port is None else f"{self.result_host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))


def status_row(row: Generation, *, legacy: bool = False, status_override: str | None = None) -> dict[str, Any]:
    """E4: the GET /api/ai/queue/{id} object, keys in documented order, request params merged last."""
    out: dict[str, Any] = {
        "generation_id": row.generation_id,
        ("model" if legacy else "model_name"): row.model,
        "prompt": row.params.get("prompt"),
        "media_type": row.media_type,
        "status": status_override or str(row.status),
        "result_url": row.result_url,
        "error_message": row.error_message,
        "enqueued_at": _ts(row.enqueued_at),
        "started_at": _ts(row.started_at),
        "completed_at": _ts(row.completed_at),
        "target_namespace": row.target_namespace,
        "target_repo": row.target_repo,
        "target_directory": row.target_directory,
    }
    for name, value in row.params.items():
        if name not in out:
            out[name] = value
    return out


def full_row(row: Generation) -> dict[str, Any]:
    """§6: the GET /api/ai/generations/{id} object (with cost and user)."""
    out: dict[str, Any] = {
        "generation_id": row.generation_id,
        "model_name": row.model,
        "media_type": row.media_type,
        "status": str(row.status),
        "enqueued_at": _ts(row.enqueued_at),
        "started_at": _ts(row.started_at),
        "completed_at": _ts(row.completed_at),
        "result_url": row.result_url,
        "error_message": row.error_message,
        "cost": format_cost(row.cost),
        "target_namespace": row.target_namespace,
        "target_repo": row.target_repo,
        "target_directory": row.target_directory,
        "user_id": user_id_for(row.username),
        "username": row.username,
        "user_image": None,
    }
    for name, value in row.params.items():
        if name not in out:
            out[name] = value
    return out


def event_payload(row: Generation, url: str | None) -> dict[str, Any]:
    """§8: the data of a media_generation_completed event, keys in documented order."""
    if row.status == Status.SUCCEEDED:
        return {
            "generation_id": row.generation_id,
            "status": "succeeded",
            "media_type": row.media_type,
            "model": row.model,
            "url": url,
        }
    return {
        "generation_id": row.generation_id,
        "status": "failed",
        "media_type": row.media_type,
        "error": row.error_message,
    }
