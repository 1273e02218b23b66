"""The one shared SSE listener: connects before the first enqueue, reconnects with backoff, and asks the runner
to reconcile after every (re)connect, because the stream has no replay and anything sent while we were away is lost.

It reports every line it reads, keep-alive comments included, to the run's StreamHealth: a stream that is
connected but delivers nothing (a buffering proxy) is told apart from one that is merely quiet.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable

import anyio
import httpx

from batchgen.core.remote import RemoteGeneration, parse_event
from batchgen.core.sse import SSEDecoder
from batchgen.core.stream_health import StreamHealth
from batchgen.engine.client import OxenClient
from batchgen.errors import ApiError, AuthError

OnEvent = Callable[[RemoteGeneration], Awaitable[None]]
OnConnect = Callable[[int], None]

# Keep-alives arrive every 15 s: 45 s without a line means the connection is dead (or buffered: reconnect and see).
STREAM_TIMEOUT = httpx.Timeout(15.0, read=45.0)


class EventListener:
    """Reads `GET /api/events` until cancelled; hands completion events to `on_event` and reports each connect."""

    def __init__(
        self,
        client: OxenClient,
        on_event: OnEvent,
        on_connect: OnConnect,
        health: StreamHealth,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        initial_attempts: int = 3,
    ) -> None:
        self.client = client
        self.on_event = on_event
        self.on_connect = on_connect
        self.health = health
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.initial_attempts = initial_attempts
        self.connections = 0
        self.connected = False
        self.ready = anyio.Event()  # set once connected, or once the first tries failed
        self._connection = anyio.CancelScope()

    def reconnect(self) -> None:
        """Drop the current connection (a probe, or after a pause) and connect again at once."""
        self._connection.cancel()

    async def listen(self) -> None:
        """Run until cancelled. Sets `ready` once connected, or after a few failed tries: the runner then relies
        on polling until the stream comes back. A proxy that holds even the stream's headers back never connects
        it: the runner waits on `ready` only briefly."""
        failures = 0
        while True:
            with anyio.CancelScope() as self._connection:
                try:
                    async with self.client.http.stream(
                        "GET",
                        self.client.url("/api/events"),
                        headers={
                            "Accept": "text/event-stream",
                            **self.client.auth_headers(self.client.url("/api/events")),
                        },
                        timeout=STREAM_TIMEOUT,
                    ) as response:
                        if response.status_code == 401:
                            raise AuthError(
                                "the API refused the key on the event stream; check OXEN_API_KEY (or the key `oxen config --auth` stored)",
                                status=401,
                            )
                        if response.status_code != 200:
                            raise ApiError(
                                f"event stream answered HTTP {response.status_code}", status=response.status_code
                            )
                        self.connections += 1
                        self.connected = True
                        failures = 0
                        self.health.connected(time.monotonic())
                        self.on_connect(self.connections)
                        self.ready.set()
                        await self._read(response)
                except AuthError:
                    raise
                except (httpx.TransportError, httpx.StreamError, ApiError, UnicodeDecodeError):
                    pass  # any broken or refused stream: reconnect below, then reconcile
            dropped_by_us = self._connection.cancelled_caught
            if self.connected:
                self.connected = False
                self.health.disconnected(time.monotonic())
            if dropped_by_us:
                continue
            failures += 1
            if failures >= self.initial_attempts:
                self.ready.set()
            delay = min(self.backoff_max, self.backoff_initial * 2 ** min(failures - 1, 10))
            await anyio.sleep(delay * random.uniform(0.5, 1.0))

    async def _read(self, response: httpx.Response) -> None:
        decoder = SSEDecoder()
        async for line in response.aiter_lines():
            self.health.received(time.monotonic())
            dispatched = decoder.feed(line.rstrip("\r"))
            if dispatched is None:
                continue
            generation = parse_event(*dispatched)
            if generation is not None:
                await self.on_event(generation)
