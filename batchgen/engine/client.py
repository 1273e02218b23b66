"""The Oxen API client: one httpx.AsyncClient, typed errors, bounded retries for what is safe to retry.

Only idempotent requests (GETs, DELETE) are retried here. An enqueue is never resent blindly: when its outcome
is unknown the client says so (EnqueueUnknownError) and the runner reconciles against the queue listing.
The Bearer key is sent only to the API's own origin, never to a result URL on another host.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import anyio
import anyio.to_thread
import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base

from batchgen.core.backoff import backoff
from batchgen.core.origins import key_may_go_to
from batchgen.core.remote import (
    RemoteGeneration,
    error_kind,
    error_text,
    parse_enqueue_reply,
    parse_generation,
    parse_json,
)
from batchgen.engine.kept_sockets import keep_sockets
from batchgen.engine.partial import PartialFile, open_partial
from batchgen.errors import (
    ApiError,
    ApiUnreachableError,
    AuthError,
    EnqueueUnknownError,
    InsufficientCreditsError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)

T = TypeVar("T")
USER_AGENT = "batchgen/0.1"
MEDIA_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"\x1aE\xdf\xa3")  # png, jpeg, gif, webp, webm
RETRYABLE = (ServerError, RateLimitedError, ApiUnreachableError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How idempotent requests are retried: bounded attempts, jittered exponential waits, Retry-After honoured."""

    attempts: int = 5
    initial: float = 0.5
    maximum: float = 30.0


class _WaitHonouringRetryAfter(wait_base):
    """The server's Retry-After when it gave one (bounded), else the core backoff plus up to `initial` of jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return float(min(exc.retry_after, max(self.policy.maximum, 1.0) * 10))
        wait = backoff(retry_state.attempt_number, initial=self.policy.initial, maximum=self.policy.maximum)
        return wait + random.uniform(0.0, self.policy.initial)


class OxenClient:
    """Typed access to the endpoints batchgen uses."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.retry = retry or RetryPolicy()
        self.http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout or httpx.Timeout(60.0, connect=15.0),
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
        )
        keep_sockets(self.http)  # the pool's check of idle connections without anyio's attribute dict
        self.requests_sent = 0
        self.clock_offset: timedelta | None = None  # the server's clock minus ours, from its Date header

    async def __aenter__(self) -> OxenClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def auth_headers(self, url: str) -> dict[str, str]:
        """The Authorization header for `url`: only to the API's own origin, over https (or loopback)."""
        if self._api_key and key_may_go_to(url, self.base_url):
            return {"Authorization": f"Bearer {self._api_key}"}
        return {}

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def server_now(self) -> datetime | None:
        """The server's time now, by its last Date header (None when it never sent one)."""
        return None if self.clock_offset is None else datetime.now(UTC) + self.clock_offset

    def _note_server_clock(self, response: httpx.Response, sent_at: datetime) -> None:
        value = response.headers.get("date")
        if not value:
            return
        try:
            server = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return
        if server.tzinfo is None:
            return
        # the header has 1 s resolution, truncated: the server's time was in [server, server + 1 s)
        midpoint = sent_at + (datetime.now(UTC) - sent_at) / 2
        self.clock_offset = server + timedelta(seconds=0.5) - midpoint

    # ---- plumbing --------------------------------------------------------------------------------------

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.url(path)
        self.requests_sent += 1
        sent_at = datetime.now(UTC)
        try:
            response = await self.http.request(method, url, headers=self.auth_headers(url), **kwargs)
            self._note_server_clock(response, sent_at)
            return response
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise unreachable(self.base_url, exc) from exc
        except httpx.TransportError as exc:
            raise ServerError(f"{method} {path}: connection failed mid-request ({type(exc).__name__})") from exc

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=_WaitHonouringRetryAfter(self.retry),
            retry=retry_if_exception_type(RETRYABLE),
            reraise=True,
        ):
            with attempt:
                return await call()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_json(self, path: str, params: dict[str, str] | None = None, *, allow_404: bool = False) -> Any:
        async def once() -> Any:
            response = await self._send("GET", path, params=params)
            if allow_404 and response.status_code == 404:
                return None
            return _json_or_raise(response, f"GET {path}")

        return await self._retrying(once)

    # ---- endpoints -------------------------------------------------------------------------------------

    async def check_access(self) -> None:
        """Fail fast (AuthError / ApiUnreachableError) before anything is enqueued."""
        await self._get_json("/api/ai/queue")

    async def enqueue(self, body: dict[str, Any]) -> list[str]:
        """POST /api/ai/queue once. Definite refusals raise their error; an unknown outcome raises
        EnqueueUnknownError (the generations may exist); success returns the generation ids in order."""
        try:
            response = await self._send("POST", "/api/ai/queue", json=body)
        except ServerError as exc:
            raise EnqueueUnknownError(f"enqueue reply lost: {exc}") from exc
        if response.status_code >= 500:
            raise EnqueueUnknownError(f"enqueue answered HTTP {response.status_code}; it may still have been created")
        if response.is_success and parse_json(response.text) is None:
            # a 2xx cut short: the generations exist, only their ids were lost; resending would pay twice
            raise EnqueueUnknownError(f"enqueue answered HTTP {response.status_code} with a body that is not JSON")
        data = _json_or_raise(response, "POST /api/ai/queue")
        ids = parse_enqueue_reply(data)
        expected = int(body.get("num_generations", 1) or 1)
        if len(ids) != expected:
            detail = error_text(data)
            if not ids and detail:
                raise RequestRejectedError(f"enqueue refused: {detail}", status=response.status_code)
            raise EnqueueUnknownError(f"enqueue reply has {len(ids)} generation ids, expected {expected}")
        return ids

    async def get_generation(self, generation_id: str) -> RemoteGeneration | None:
        """GET /api/ai/queue/{id}; None on 404 (unknown id, or finished under the legacy behaviour)."""
        data = await self._get_json(f"/api/ai/queue/{generation_id}", allow_404=True)
        return None if data is None else parse_generation(data)

    async def current_state(self, generation_id: str) -> RemoteGeneration | None:
        """The generation's row; under the legacy API (404 once finished) its history row; None when the API
        knows nothing of it. Raises ApiError when it cannot be read."""
        remote = await self.get_generation(generation_id)
        if remote is None:
            details = await self.get_generation_details(generation_id)
            remote = details[0] if details else None
        return remote

    async def get_generation_details(self, generation_id: str) -> tuple[RemoteGeneration, float | None] | None:
        """GET /api/ai/generations/{id}: the full row with its cost; None on 404."""
        data = await self._get_json(f"/api/ai/generations/{generation_id}", allow_404=True)
        if not isinstance(data, dict):
            return None
        row = data.get("generation", data)
        generation = parse_generation(row)
        return None if generation is None else (generation, _cost(row))

    async def list_queue(
        self, *, model: str | None = None, status: str | None = None, namespace: str | None = None
    ) -> list[RemoteGeneration]:
        """GET /api/ai/queue (active rows by default; `status` for terminal ones; `namespace` for an org's)."""
        params = {k: v for k, v in {"model": model, "status": status, "namespace": namespace}.items() if v}
        data = await self._get_json("/api/ai/queue", params or None)
        rows = data.get("generations", []) if isinstance(data, dict) else []
        return [g for g in (parse_generation(r) for r in rows if isinstance(rows, list)) if g is not None]

    async def history_page(
        self, *, page: int, page_size: int = 1000
    ) -> tuple[list[tuple[RemoteGeneration, float | None]], int]:
        """One page of GET /api/ai/generations: [(row, cost)], total_pages."""
        data = await self._get_json("/api/ai/generations", {"page": str(page), "page_size": str(page_size)})
        if not isinstance(data, dict):
            return [], 0
        rows = data.get("generations")
        found = []
        for row in rows if isinstance(rows, list) else []:
            generation = parse_generation(row)
            if generation is not None:
                found.append((generation, _cost(row)))
        pages = data.get("total_pages")
        return found, pages if isinstance(pages, int) else 0

    async def cancel(self, generation_id: str) -> bool:
        """DELETE /api/ai/queue/{id}; False when the server does not know the id."""

        async def once() -> bool:
            response = await self._send("DELETE", f"/api/ai/queue/{generation_id}")
            if response.status_code == 404:
                return False
            _json_or_raise(response, "DELETE /api/ai/queue")
            return True

        return await self._retrying(once)

    async def get_model(self, model_id: str) -> dict[str, Any] | None:
        data = await self._get_json(f"/api/ai/models/{model_id}", allow_404=True)
        return data if isinstance(data, dict) else None

    # ---- downloads -------------------------------------------------------------------------------------

    async def download(
        self, url: str, dest: Path, *, generation_id: str, on_bytes: Callable[[int], None] | None = None
    ) -> tuple[str, int]:
        """Fetch `url` into `dest` through a part file that survives a cut; return (sha256, bytes).

        A part left by an earlier attempt (this process or a dead one) is continued with `Range: bytes=N-`; a
        server that answers 200 instead sends the whole file again. The sha256 covers the whole file. Redirects
        are followed by hand (at most 5) so the key is re-decided per host. A 403/404/410 raises
        RequestRejectedError (an expired presigned URL: fetch a fresh one and continue); a cut, a stall, an
        error page in place of media, 5xx and 429 raise retryable errors. The transfer may take as long as its
        size needs at MIN_DOWNLOAD_RATE, never a fixed time.
        """
        partial = open_partial(dest, generation_id)
        async with partial:
            for _hop in range(6):
                self.requests_sent += 1
                # identity: a compressed body would make Content-Length and Range count other bytes than the file's
                headers = {"Accept-Encoding": "identity", **self.auth_headers(url)}
                if partial.size:
                    headers["Range"] = f"bytes={partial.size}-"
                try:
                    async with self.http.stream("GET", url, headers=headers) as response:
                        if response.is_redirect and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        if response.status_code == 416:
                            await response.aread()
                            _, total = _content_range(response.headers.get("content-range", ""))
                            if total is None or total != partial.size:
                                await partial.restart()  # our part is not a prefix of this file: start again
                                raise ServerError(f"download of {dest.name}: range not satisfiable; starting over")
                            # the part is the whole file already (its writer died before the rename): finish it
                        else:
                            if response.status_code >= 400:
                                await response.aread()
                                _raise_for(response, "download")
                            await _receive(response, partial, on_bytes)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    raise unreachable(url, exc, what="for a download") from exc
                except httpx.TransportError as exc:
                    raise ServerError(
                        f"download cut short at {partial.size} bytes ({type(exc).__name__}); it continues from there"
                    ) from exc
                if not _looks_like_media(await partial.head()):
                    await partial.discard()
                    raise ServerError("download returned something that is not a media file")
                size = partial.size
                return await partial.finish(dest), size
        raise ServerError("download: too many redirects")


def unreachable(url: str, exc: Exception, *, what: str = "") -> ApiUnreachableError:
    """A connection that could not be made, in words: an untrusted certificate says how to trust it."""
    host = urlsplit(url).netloc or url
    if "CERTIFICATE_VERIFY_FAILED" in str(exc) or isinstance(exc.__context__, ssl.SSLCertVerificationError):
        return ApiUnreachableError(
            f"the certificate of {host} is not trusted ({exc}); if a proxy or a corporate CA signs it, set "
            "SSL_CERT_FILE to that CA's bundle (a PEM file)"
        )
    return ApiUnreachableError(
        f"cannot reach {url.rstrip('/')}{' ' + what if what else ''}: {exc or type(exc).__name__}"
    )


MIN_DOWNLOAD_RATE = 32 * 1024  # bytes/s: a transfer slower than this over its whole length is cut and resumed
DOWNLOAD_GRACE_S = 60.0


async def _receive(response: httpx.Response, partial: PartialFile, on_bytes: Callable[[int], None] | None) -> None:
    """Append the body to `partial`: after its prefix on a 206 that starts there, from zero on a 200."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("text/html", "application/json"):
        await response.aread()
        raise ServerError(f"download returned {kind} instead of a media file")
    offset = partial.size
    if response.status_code == 206:
        start, total = _content_range(response.headers.get("content-range", ""))
        if start != offset:
            await partial.restart()
            raise ServerError(f"download: asked for bytes from {offset}, got a range starting at {start}")
    else:
        total = None
        if offset:
            await partial.restart()  # the server ignored Range: it is sending the whole file again
    declared = response.headers.get("content-length")
    expected = int(declared) if declared is not None and declared.isdigit() else None
    if total is None and expected is not None:
        total = partial.size + expected
    budget = DOWNLOAD_GRACE_S + (expected or 0) / MIN_DOWNLOAD_RATE
    with anyio.move_on_after(budget) as scope:
        async for chunk in response.aiter_bytes():
            await partial.append(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    if scope.cancelled_caught:
        raise ServerError(f"download slower than {MIN_DOWNLOAD_RATE // 1024} KiB/s; it continues from {partial.size}")
    if total is not None and partial.size != total:
        raise ServerError(f"download cut short: {partial.size} of {total} bytes")


def _content_range(value: str) -> tuple[int | None, int | None]:
    """`bytes START-END/TOTAL` -> (START, TOTAL), `bytes */TOTAL` -> (None, TOTAL); None for what is missing."""
    unit, _, spec = value.strip().partition(" ")
    span, _, total = spec.partition("/")
    first = span.partition("-")[0]
    if unit.lower() != "bytes":
        return None, None
    return int(first) if first.isdigit() else None, int(total) if total.isdigit() else None


def _looks_like_media(head: bytes) -> bool:
    return head[4:8] == b"ftyp" or head.startswith(MEDIA_SIGNATURES)


def _cost(row: Any) -> float | None:
    value = row.get("cost") if isinstance(row, dict) else None
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _json_or_raise(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        _raise_for(response, what)
    data = parse_json(response.text)
    if data is None:
        kind = response.headers.get("content-type", "?")
        raise ServerError(f"{what}: HTTP {response.status_code} with a body that is not JSON ({kind})")
    return data


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _raise_for(response: httpx.Response, what: str) -> None:
    body = parse_json(response.text) if response.text else None
    detail = error_text(body) or response.reason_phrase or "no detail"
    status = response.status_code
    message = f"{what}: HTTP {status}: {detail}"
    match error_kind(status, body):
        case "auth":
            raise AuthError(
                f"the API refused the key (HTTP {status}: {detail}); check OXEN_API_KEY (or the key `oxen config --auth` stored)",
                status=status,
            )
        case "rate_limited":
            raise RateLimitedError(message, status=status, retry_after=_retry_after(response))
        case "credits":
            raise InsufficientCreditsError(message, status=status)  # the submitter says what to do (api.py)
        case "server":
            raise ServerError(message, status=status)
        case _:
            raise RequestRejectedError(message, status=status)


__all__ = ["ApiError", "OxenClient", "RetryPolicy"]
