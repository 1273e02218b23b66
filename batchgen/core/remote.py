"""What the API says, as values: generation rows, completion events and error envelopes, parsed defensively.

The real API's answers are only partly documented, so every parser here accepts the plausible variants
(current and legacy keys, unknown status values, missing fields) and never raises on a shape it did not expect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REMOTE_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
REMOTE_ACTIVE = frozenset({"queued", "processing"})
COMPLETED_EVENT = "media_generation_completed"


@dataclass(frozen=True, slots=True)
class RemoteGeneration:
    """One generation as the API reports it (REST row or SSE event)."""

    generation_id: str
    status: str  # as sent; may be a value we do not know
    model: str | None = None
    prompt: str | None = None
    result_url: str | None = None
    download_url: str | None = None  # presigned URL from the event, when there is one
    error: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    params: Mapping[str, Any] | None = None  # every other key of the row (the request's parameters)

    @property
    def is_terminal(self) -> bool:
        return self.status in REMOTE_TERMINAL

    @property
    def is_known_status(self) -> bool:
        return self.status in REMOTE_TERMINAL or self.status in REMOTE_ACTIVE


_ROW_KEYS = {
    "generation_id", "model_name", "model", "prompt", "media_type", "status", "result_url", "error_message",
    "enqueued_at", "started_at", "completed_at", "target_namespace", "target_repo", "target_directory", "url",
    "error", "cost", "user_id", "username", "user_image",
}  # fmt: skip


def unix_time(value: Any) -> datetime | None:
    """Unix seconds (int, float or numeric string) to an aware UTC datetime; anything else to None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_generation(row: Any) -> RemoteGeneration | None:
    """A REST generation row (status, list or history) to a value; None when it has no usable id."""
    if not isinstance(row, Mapping):
        return None
    gid = row.get("generation_id") or row.get("id")
    if not isinstance(gid, str) or not gid:
        return None
    status = row.get("status")
    return RemoteGeneration(
        generation_id=gid,
        status=status if isinstance(status, str) else "unknown",
        model=_str_or_none(row.get("model_name")) or _str_or_none(row.get("model")),
        prompt=row.get("prompt") if isinstance(row.get("prompt"), str) else None,
        result_url=_str_or_none(row.get("result_url")),
        download_url=_str_or_none(row.get("url")),
        error=_str_or_none(row.get("error_message")) or error_text(row.get("error")),
        enqueued_at=unix_time(row.get("enqueued_at")),
        started_at=unix_time(row.get("started_at")),
        completed_at=unix_time(row.get("completed_at")),
        params={k: v for k, v in row.items() if k not in _ROW_KEYS},
    )


def parse_event(event: str, data: str) -> RemoteGeneration | None:
    """An SSE event to a value when it is a completion event we can read; None for anything else."""
    if event != COMPLETED_EVENT:
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    generation = parse_generation(payload)
    if generation is None or generation.status not in REMOTE_TERMINAL:
        return None
    return generation


def parse_enqueue_reply(body: Any) -> list[str]:
    """The generation ids of an enqueue reply, in order; [] when there are none."""
    if not isinstance(body, Mapping):
        return []
    rows = body.get("generations")
    if not isinstance(rows, list):
        return []
    ids = [r.get("generation_id") for r in rows if isinstance(r, Mapping)]
    return [i for i in ids if isinstance(i, str) and i]


def error_text(body: Any) -> str | None:
    """The human text of an error body, trying the envelope variants in the documented order."""
    if isinstance(body, str):
        return body or None
    if not isinstance(body, Mapping):
        return None
    err = body.get("error")
    if isinstance(err, str) and err:
        return err
    if isinstance(err, Mapping):
        for key in ("detail", "message", "title"):
            value = err.get(key)
            if isinstance(value, str) and value:
                return value
    for key in ("error_message", "status_message", "message", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def error_kind(status: int, body: Any) -> str:
    """Classify an HTTP error answer: auth, rate_limited, credits, not_found, server or rejected."""
    text = (error_text(body) or "").lower()
    kind = ""
    if isinstance(body, Mapping):
        err = body.get("error")
        kind = str(err.get("type", "")) if isinstance(err, Mapping) else ""
        kind = kind or str(body.get("status_message", ""))
    if status == 401 or kind == "unauthenticated":
        return "auth"
    if status == 429 or "rate limit" in text:
        return "rate_limited"
    if status == 402 or kind == "insufficient_credits" or "insufficient credit" in text:
        return "credits"
    if status >= 500:
        return "server"
    if status == 404:
        return "not_found"
    return "rejected"


def failure_class(error: str) -> str:
    """Classify a generation's failure text: insufficient_credits, moderation, validation or remote."""
    text = error.lower()
    if "insufficient credit" in text:
        return "insufficient_credits"
    if "moderation" in text or "content policy" in text or "safety" in text:
        return "moderation"
    if "422" in text or "value error" in text or "invalid" in text:
        return "validation"
    return "remote"


def parse_json(text: str) -> Any:
    """JSON text to a value, or None when it is not JSON (an HTML error page, a truncated body)."""
    try:
        return json.loads(text)
    except ValueError:
        return None
