"""Replies: the documented JSON envelopes (oxen-api.md §10, E1-E8), and the broken replies faults need.

Cutting a connection without a reply is not expressible in ASGI; the app marks the scope with ABORT and
the outermost wrapper (app.py) returns a non-None value, on which uvicorn closes the transport.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

JSON_TYPE = "application/json; charset=utf-8"
ABORT = "batchgen.emulator.abort"
INVALID_PARAMS_TITLE = "Invalid parameters supplied, please check your request and try again."

HTML_502 = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON as the hub sends it: UTF-8, with an explicit charset."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")  # Phoenix sends compact JSON
    return Response(body, status_code=status, headers=headers, media_type=JSON_TYPE)


def envelope(kind: str, title: str, detail: str | None = None) -> dict[str, Any]:
    """The `{"error":{type,title[,detail]},"status":"error","status_message":kind}` envelope."""
    error: dict[str, Any] = {"type": kind, "title": title}
    if detail is not None:
        error["detail"] = detail
    return {"error": error, "status": "error", "status_message": kind}


def unauthenticated() -> Response:
    """E1: 401 for a missing or refused key."""
    return json_reply(envelope("unauthenticated", "Unauthenticated"), 401)


def not_found() -> Response:
    """§4: 404 for an unknown (or someone else's, or malformed) generation id."""
    return json_reply(envelope("resource_not_found", "The requested resource could not be found"), 404)


def invalid_params(detail: str) -> Response:
    """400 invalid_params with a detail text."""
    return json_reply(envelope("invalid_params", INVALID_PARAMS_TITLE, detail), 400)


def model_not_found(name: str) -> Response:
    """The short `{"error":{"message": ...}}` format the docs show for unknown models."""
    return json_reply({"error": {"message": f"Model not found: {name}"}}, 404)


OUT_OF_CREDITS_TITLE = "You have run out of credits."


def insufficient_credits(status: int = 402) -> Response:
    """402 at enqueue once the account's credits are gone, in the body the API sends (no detail)."""
    return json_reply(envelope("insufficient_credits", OUT_OF_CREDITS_TITLE), status)


def rate_limited(retry_after: float | None) -> Response:
    """E8: 429, with Retry-After only when asked (production's behaviour is unknown)."""
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    body = {"error": {"message": "Rate limit exceeded"}, "status": "error", "status_message": "rate_limited"}
    return json_reply(body, 429, headers)


def server_error(status: int = 500) -> Response:
    """A transient 5xx with the unknown_error envelope."""
    return json_reply(envelope("unknown_error", "An unknown error occurred"), status)


def html_502() -> Response:
    """What a proxy in front of the hub answers when the app behind it is down."""
    return Response(HTML_502, status_code=502, media_type="text/html")


def malformed_json(data: Any, status: int = 200) -> Response:
    """A JSON reply cut in half: declared as JSON, unparseable."""
    body = json.dumps(data, separators=(",", ":")).encode()
    return Response(body[: max(1, len(body) // 2)], status_code=status, media_type=JSON_TYPE)


class AbortConnection(Response):
    """Send nothing and cut the connection (a reply lost in transit)."""

    def __init__(self) -> None:
        super().__init__(b"", status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ABORT] = True


class TokenBucket:
    """E8: per-key token bucket. Not thread-safe: used only on the server's event loop."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill monotonic time)

    def take(self, key: str) -> float | None:
        """Take a token: None when allowed, else seconds until the next token."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
