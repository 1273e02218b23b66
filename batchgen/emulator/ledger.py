"""The Ledger: what the emulator received and sent, for tests to read.

The server writes from its own thread while a test reads from another, so every access takes one lock and
every reader gets a copy.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request. `status` is 0 when the connection was cut without a reply."""

    time: float
    method: str
    path: str
    status: int


@dataclass(slots=True)
class EnqueueRecord:
    """One POST /api/ai/queue: the parsed body (or raw text), what it created, and whether it was answered."""

    time: float
    body: Any
    canonical_body: str
    attempt: int  # 0 for the first time this canonical body was seen
    generation_ids: list[str] = field(default_factory=list)
    replied: bool = True
    status: int = 200


@dataclass(frozen=True, slots=True)
class DownloadRecord:
    """One GET of a result file (plain or presigned). `status` is 0 when the body was cut short (truncated_download_rate,
    download_cut_rate)."""

    time: float
    generation_id: str
    authorized: bool  # the request carried an Authorization header
    host: str  # the Host header, to tell 127.0.0.1 from localhost
    status: int
    presigned: bool
    range_start: int | None = None  # the first byte a Range header asked for; None without one
    bytes_sent: int = 0  # bytes of the file the body carried (the prefix when cut; 0 for an error reply). Set as
    # the reply is made: a client that hangs up early received fewer


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """A knob that acted: `knob` is its name ("latency_s", "hold"), `subject` what it acted on (a path,
    a generation id, a query), `detail` how (the Date header sent, the rows hidden)."""

    time: float
    knob: str
    subject: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One SSE frame written to one stream (keep-alives excluded)."""

    time: float
    stream: int
    event: str
    generation_id: str | None
    data: str


class Ledger:
    """Thread-safe record of traffic. Readers get copies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._enqueues: list[EnqueueRecord] = []
        self._bodies_seen: Counter[str] = Counter()
        self._created: list[str] = []
        self._polls: Counter[str] = Counter()
        self._list_calls: list[str] = []
        self._downloads: list[DownloadRecord] = []
        self._served_sha256: dict[str, str] = {}
        self._streams = 0
        self._events: list[EventRecord] = []
        self._dropped: list[str] = []
        self._terminal_times: dict[str, float] = {}
        self._faults: list[FaultRecord] = []

    # -- writers (server side)

    def record_request(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._requests.append(RequestRecord(time.time(), method, path, status))

    def begin_enqueue(self, body: Any, canonical_body: str) -> EnqueueRecord:
        """Record an enqueue as it arrives; its attempt number is how often this body was seen before.

        Counting and appending under one lock keeps attempt numbers (and so generation ids) unique even when
        identical bodies arrive concurrently.
        """
        with self._lock:
            attempt = self._bodies_seen[canonical_body]  # counted as they come: a scan of every enqueue was O(N)
            self._bodies_seen[canonical_body] = attempt + 1
            record = EnqueueRecord(time.time(), body, canonical_body, attempt)
            self._enqueues.append(record)
            return record

    def end_enqueue(self, record: EnqueueRecord, *, status: int, generation_ids: list[str], replied: bool) -> None:
        """Say how an enqueue ended: its status (0 = no reply), the rows it created, whether a reply was sent."""
        with self._lock:
            record.status = status
            record.generation_ids = list(generation_ids)
            record.replied = replied

    def record_created(self, generation_id: str) -> None:
        """A generation row was created by a client request (enqueue or sync), not by a fault."""
        with self._lock:
            self._created.append(generation_id)

    def record_poll(self, generation_id: str) -> int:
        """Count a status poll; returns the 0-based attempt number of this poll."""
        with self._lock:
            attempt = self._polls[generation_id]
            self._polls[generation_id] += 1
            return attempt

    def record_list(self, query: str) -> None:
        with self._lock:
            self._list_calls.append(query)

    def download_attempt(self, generation_id: str) -> int:
        """The 0-based number of the download about to be served for this generation."""
        with self._lock:
            return sum(1 for d in self._downloads if d.generation_id == generation_id)

    def record_download(self, record: DownloadRecord, sha256: str | None) -> None:
        with self._lock:
            self._downloads.append(record)
            if sha256 is not None:
                self._served_sha256[record.generation_id] = sha256

    def open_stream(self) -> int:
        """Count a stream connection; returns its number (1-based)."""
        with self._lock:
            self._streams += 1
            return self._streams

    def record_event(self, record: EventRecord) -> None:
        with self._lock:
            self._events.append(record)

    def record_dropped(self, generation_id: str) -> None:
        with self._lock:
            self._dropped.append(generation_id)

    def record_terminal(self, generation_id: str, at: float) -> None:
        with self._lock:
            self._terminal_times[generation_id] = at

    def record_fault(self, knob: str, subject: str, detail: str = "") -> None:
        """A knob that has no record of its own acted (see FaultRecord)."""
        with self._lock:
            self._faults.append(FaultRecord(time.time(), knob, subject, detail))

    # -- readers (test side)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def enqueues(self) -> list[EnqueueRecord]:
        with self._lock:
            return [replace(e, generation_ids=list(e.generation_ids)) for e in self._enqueues]

    @property
    def generations_created(self) -> int:
        """How many generation rows client requests created (a duplicate submit counts twice)."""
        with self._lock:
            return len(self._created)

    @property
    def created_ids(self) -> list[str]:
        with self._lock:
            return list(self._created)

    def duplicate_bodies(self) -> dict[str, int]:
        """Bodies that were enqueued more than once (num_generations counted as one submission each)."""
        with self._lock:
            seen: Counter[str] = Counter(e.canonical_body for e in self._enqueues if e.generation_ids)
            return {body: n for body, n in seen.items() if n > 1}

    @property
    def polls(self) -> dict[str, int]:
        """Status polls per generation id."""
        with self._lock:
            return dict(self._polls)

    @property
    def list_calls(self) -> list[str]:
        """The query string of every GET /api/ai/queue (list) call."""
        with self._lock:
            return list(self._list_calls)

    @property
    def downloads(self) -> list[DownloadRecord]:
        with self._lock:
            return list(self._downloads)

    def downloads_of(self, generation_id: str) -> list[DownloadRecord]:
        with self._lock:
            return [d for d in self._downloads if d.generation_id == generation_id]

    @property
    def served_sha256(self) -> dict[str, str]:
        """sha256 of the whole file per generation id whose bytes were served through to the end at least once
        (by a 200, or a 206 that ends at the last byte): what a client that resumed must have in the end."""
        with self._lock:
            return dict(self._served_sha256)

    @property
    def stream_connections(self) -> int:
        with self._lock:
            return self._streams

    @property
    def events(self) -> list[EventRecord]:
        with self._lock:
            return list(self._events)

    @property
    def dropped_events(self) -> list[str]:
        """Generation ids whose completion event the `sse_drop_rate` knob swallowed."""
        with self._lock:
            return list(self._dropped)

    @property
    def terminal_times(self) -> dict[str, float]:
        """generation id -> `time.time()` when it turned terminal (succeeded, failed or cancelled)."""
        with self._lock:
            return dict(self._terminal_times)

    @property
    def faults(self) -> list[FaultRecord]:
        """Every FaultRecord, oldest first."""
        with self._lock:
            return list(self._faults)

    def fired(self, knob: str) -> list[FaultRecord]:
        """The FaultRecords of one knob, oldest first."""
        with self._lock:
            return [f for f in self._faults if f.knob == knob]
