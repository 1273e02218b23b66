"""Fault knobs, and the rule that makes them replay exactly.

Every decision hashes (seed, knob name, a stable id) instead of drawing from a shared random stream, so the
same seed gives the same faults whatever order concurrent requests arrive in. Stable ids are a generation id,
or a canonical request body plus the number of times that body was seen, plus (for polls and downloads) the
attempt number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass
from typing import Any

_SCALE = float(2**64)
SSE_BUFFERING = ("off", "bulk", "until_close")  # the values of Faults.sse_buffering


def roll(seed: int, knob: str, stable_id: str) -> float:
    """A number in [0, 1) fixed by its inputs alone."""
    digest = hashlib.sha256(f"{seed}\x00{knob}\x00{stable_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def decide(seed: int, knob: str, stable_id: str, rate: float) -> bool:
    """Whether the fault `knob` fires for `stable_id` at probability `rate`."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    return roll(seed, knob, stable_id) < rate


def uniform(seed: int, knob: str, stable_id: str, low: float, high: float) -> float:
    """A value in [low, high) fixed by its inputs alone."""
    return low + (high - low) * roll(seed, knob, stable_id)


@dataclass(frozen=True)
class Faults:
    """Everything the emulator can do wrong. All off by default. Rates are probabilities in [0, 1]."""

    seed: int | None = None  # overrides EmulatorConfig.seed for fault decisions when set
    # -- the event stream (GET /api/events)
    sse_drop_rate: float = 0.0  # a completion event is never sent
    sse_duplicate_rate: float = 0.0  # a completion event is sent twice
    sse_late_s: float = 0.0  # every completion event is sent this long after the REST row turned terminal
    sse_early_rate: float = 0.0  # per enqueue: finish at once and broadcast before the POST reply
    sse_disconnect_after_events: int | None = None  # close each stream after this many events
    sse_disconnect_after_s: float | None = None  # close each stream after this long
    sse_foreign_rate: float = 0.0  # also announce a generation of the same user made elsewhere
    sse_noise_rate: float = 0.0  # also send an unrelated `deployment_status_changed` event
    sse_garbage_rate: float = 0.0  # also send a truncated, oversized or garbage line
    # a proxy in front of the stream (see proxy.py); the reply is 200 with its headers at once either way
    sse_buffering: str = "off"  # "bulk": frames and keep-alives are held and written in blocks of sse_buffer_bytes
    # (the rest on close); "until_close": nothing is written until the stream ends
    sse_buffer_bytes: int = 4096  # the proxy's buffer in "bulk" mode (nginx's default proxy buffer)
    sse_gzip: bool = False  # Content-Encoding: gzip, one deflate stream with no flush per frame: bytes leave
    # when zlib emits them, the rest on close
    # -- transient HTTP failures, keyed by request body / generation id and attempt number
    enqueue_5xx_rate: float = 0.0
    enqueue_429_rate: float = 0.0
    status_5xx_rate: float = 0.0
    status_429_rate: float = 0.0
    download_5xx_rate: float = 0.0
    download_429_rate: float = 0.0
    retry_after: float | None = None  # Retry-After seconds on fault 429s; None sends no header
    lost_reply_rate: float = 0.0  # enqueue creates the rows, then the connection is cut with no reply
    cancel_5xx_rate: float = 0.0  # DELETE /api/ai/queue/{id} answers 503 for this generation, every time
    # -- generations
    stuck_rate: float = 0.0  # stays `processing` forever
    fail_rate: float = 0.0
    fail_messages: tuple[str, ...] = ("Content moderation flagged the prompt",)
    legacy_mode: bool = False  # pre-May-2026: status 404 once terminal, `model` instead of `model_name`;
    # implies finished_missing_from_list
    finished_missing_from_list: bool = False  # GET /api/ai/queue?status=succeeded|failed|cancelled lists nothing:
    # finished rows are only in GET /api/ai/generations (history), as some API versions do
    # -- bad answers
    malformed_json_rate: float = 0.0  # status/list: a cut-off JSON body; enqueue: rows created, body cut
    html_error_rate: float = 0.0  # a 502 HTML page from a "proxy" (enqueue: before any row exists)
    unknown_status_rate: float = 0.0  # a status poll says "running"
    wrong_content_type_rate: float = 0.0  # status: JSON labelled text/html; download: text/plain
    truncated_download_rate: float = 0.0  # Content-Length larger than the body, then the connection is cut
    result_host: str | None = None  # serve result URLs under this host name (e.g. "localhost")
    # -- result files on a real network (see transfer.py)
    result_size_bytes: int | None = None  # result files are padded to this size (the media stays valid)
    download_bandwidth_bps: float | None = None  # file bodies are paced to at most this many bytes per second
    download_cut_rate: float = 0.0  # per download: the connection is cut after download_cut_at of the body
    download_cut_at: float = 0.5  # the fraction of the bytes a reply was to carry that it carries when cut
    download_ignores_range: bool = False  # a Range request is answered 200 with the whole file
    # -- the server's clock and speed
    clock_offset_s: float = 0.0  # the server's clock is this far ahead (< 0: behind): row timestamps, Date header
    latency_s: float = 0.0  # every /api/ai/... request waits this long before it is handled (fixed, not random)

    def __post_init__(self) -> None:
        """Refuse settings that cannot mean anything, so a typo on the command line is not a silent no-op."""
        if self.sse_buffering not in SSE_BUFFERING:
            raise ValueError(f"sse_buffering must be one of {', '.join(SSE_BUFFERING)}, got {self.sse_buffering!r}")
        if self.sse_buffer_bytes < 1:
            raise ValueError(f"sse_buffer_bytes must be at least 1, got {self.sse_buffer_bytes}")
        if not 0.0 <= self.download_cut_at <= 1.0:
            raise ValueError(f"download_cut_at must be a fraction in [0, 1], got {self.download_cut_at}")
        if self.download_bandwidth_bps is not None and self.download_bandwidth_bps <= 0:
            raise ValueError(f"download_bandwidth_bps must be > 0 (or none), got {self.download_bandwidth_bps}")
        if self.result_size_bytes is not None and self.result_size_bytes < 0:
            raise ValueError(f"result_size_bytes must be >= 0 (or none), got {self.result_size_bytes}")

    @classmethod
    def chaos(cls, seed: int | None = None) -> Faults:
        """Every knob moderately on (nothing stuck, not legacy): a client that survives this survives a lot."""
        return cls(
            seed=seed,
            sse_drop_rate=0.1,
            sse_duplicate_rate=0.1,
            sse_late_s=0.2,
            sse_early_rate=0.05,
            sse_disconnect_after_events=25,
            sse_disconnect_after_s=5.0,
            sse_foreign_rate=0.1,
            sse_noise_rate=0.2,
            sse_garbage_rate=0.05,
            enqueue_5xx_rate=0.05,
            enqueue_429_rate=0.05,
            status_5xx_rate=0.05,
            status_429_rate=0.05,
            download_5xx_rate=0.05,
            download_429_rate=0.05,
            retry_after=0.05,
            lost_reply_rate=0.05,
            fail_rate=0.1,
            malformed_json_rate=0.03,
            html_error_rate=0.03,
            unknown_status_rate=0.03,
            wrong_content_type_rate=0.03,
            truncated_download_rate=0.05,
            download_cut_rate=0.05,
            result_host="localhost",
        )

    def with_overrides(self, overrides: dict[str, str]) -> Faults:
        """A copy with knobs set from text (as given on the command line: `--fault sse_drop_rate=0.2`)."""
        known = {f.name: f for f in dataclasses.fields(self)}
        hints = typing.get_type_hints(Faults)
        changes: dict[str, Any] = {}
        for name, text in overrides.items():
            if name not in known:
                raise ValueError(f"unknown fault knob {name!r}; known: {', '.join(sorted(known))}")
            changes[name] = _parse(name, hints[name], text)
        return dataclasses.replace(self, **changes)


def parse_assignment(text: str) -> tuple[str, str]:
    """Split `NAME=VALUE`, refusing anything else."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _parse(name: str, hint: Any, text: str) -> Any:
    """Turn text into the knob's declared type (int, float, bool, str, optional, tuple of str)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        if text.lower() in ("", "none", "null"):
            return None
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return tuple(part for part in text.split("|") if part)
    try:
        if hint is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes", "on")
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise ValueError(f"fault knob {name} wants a {hint.__name__}, got {text!r}") from None
    return text
