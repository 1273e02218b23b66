"""The one shared SSE listener: connects before the first enqueue, reconnects with backoff, and asks the runner
to reconcile after every (re)connect, because the stream has no replay and anything sent while we were away is lost.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import anyio
import httpx
from anyio.abc import TaskStatus
from httpx_sse import SSEError, aconnect_sse

from batchgen.core.remote import RemoteGeneration, parse_event
from batchgen.engine.client import OxenClient
from batchgen.errors import ApiError, AuthError

OnEvent = Callable[[RemoteGeneration], Awaitable[None]]
OnConnect = Callable[[int], None]

# Keep-alives arrive every 15 s: 45 s of silence means the connection is dead (e.g. the laptop slept).
STREAM_TIMEOUT = httpx.Timeout(15.0, read=45.0)


class EventListener:
    """Reads `GET /api/events` forever; hands completion events to `on_event` and reports each connect."""

    def __init__(
        self,
        client: OxenClient,
        on_event: OnEvent,
        on_connect: OnConnect,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        initial_attempts: int = 3,
    ) -> None:
        self.client = client
        self.on_event = on_event
        self.on_connect = on_connect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.initial_attempts = initial_attempts
        self.connections = 0
        self.connected = False

    async def listen(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Signals `started` once connected (or, if the stream stays unavailable after a few
        tries, started anyway: the runner then relies on polling until the stream comes back)."""
        started = False
        failures = 0
        while True:
            try:
                async with aconnect_sse(
                    self.client.http,
                    "GET",
                    self.client.url("/api/events"),
                    headers=self.client.auth_headers(self.client.url("/api/events")),
                    timeout=STREAM_TIMEOUT,
                ) as source:
                    status = source.response.status_code
                    if status == 401:
                        raise AuthError("the API refused the key on the event stream; check OXEN_API_KEY", status=401)
                    if status != 200:
                        raise ApiError(f"event stream answered HTTP {status}", status=status)
                    self.connections += 1
                    self.connected = True
                    failures = 0
                    self.on_connect(self.connections)
                    if not started:
                        task_status.started()
                        started = True
                    async for sse in source.aiter_sse():
                        generation = parse_event(sse.event, sse.data)
                        if generation is not None:
                            await self.on_event(generation)
            except AuthError:
                raise
            except (httpx.TransportError, SSEError, ApiError, UnicodeDecodeError):
                pass  # any broken or refused stream: reconnect below, then reconcile
            self.connected = False
            failures += 1
            if not started and failures >= self.initial_attempts:
                task_status.started()
                started = True
            delay = min(self.backoff_max, self.backoff_initial * 2 ** min(failures - 1, 10))
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
