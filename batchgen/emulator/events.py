"""The user-scoped event stream (GET /api/events): subscribers, broadcast without replay, and SSE framing.

Runs entirely on the server's event loop. A frame is broadcast to the streams open at that moment and to no
one else, as production documents ("anything that fires before you connect is lost").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from batchgen.emulator.ledger import EventRecord, Ledger

COMPLETED = "media_generation_completed"
NOISE = "deployment_status_changed"
KEEPALIVE = b": keep-alive\n\n"


def frame(event: str, data: dict[str, Any]) -> bytes:
    """One SSE frame: the event line, one data line of compact JSON, a blank line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(slots=True)
class Outgoing:
    """A frame queued for one stream, with what the ledger should say about it."""

    data: bytes
    event: str
    generation_id: str | None


@dataclass(eq=False)
class Subscriber:
    """One open stream."""

    username: str
    number: int
    queue: asyncio.Queue[Outgoing | None] = field(default_factory=asyncio.Queue)
    queued: int = 0
    delivered: int = 0


class EventHub:
    """Who is listening, per user."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._subscribers: list[Subscriber] = []
        self._closed = False

    def subscribe(self, username: str) -> Subscriber:
        subscriber = Subscriber(username=username, number=self._ledger.open_stream())
        if self._closed:
            subscriber.queue.put_nowait(None)
        self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def publish(self, username: str, data: bytes, event: str, generation_id: str | None) -> int:
        """Queue a frame for every open stream of `username`; returns how many streams get it."""
        targets = [s for s in self._subscribers if s.username == username]
        for subscriber in targets:
            subscriber.queued += 1
            subscriber.queue.put_nowait(Outgoing(data, event, generation_id))
        return len(targets)

    async def drain(self, username: str, limit_s: float = 1.0) -> None:
        """Wait until every stream of `username` has written what was queued (bounded by `limit_s`)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if all(s.delivered >= s.queued for s in self._subscribers if s.username == username):
                return
            await asyncio.sleep(0.005)

    def end_streams(self) -> None:
        """End every stream open now, after what was queued for it (new streams may still open)."""
        for subscriber in self._subscribers:
            subscriber.queue.put_nowait(None)

    def close(self) -> None:
        """End every stream (shutdown): without this uvicorn would wait on them forever."""
        self._closed = True
        self.end_streams()

    async def stream(
        self,
        subscriber: Subscriber,
        *,
        keepalive_s: float,
        disconnect_after_events: int | None,
        disconnect_after_s: float | None,
    ) -> AsyncGenerator[bytes, None]:
        """The body of one SSE response: frames as they come, keep-alive comments when idle."""
        opened = time.monotonic()
        sent = 0
        try:
            while True:
                wait = keepalive_s
                if disconnect_after_s is not None:
                    left = opened + disconnect_after_s - time.monotonic()
                    if left <= 0:
                        return
                    wait = min(wait, left)
                try:
                    item = await asyncio.wait_for(subscriber.queue.get(), timeout=wait)
                except TimeoutError:
                    if disconnect_after_s is not None and time.monotonic() - opened >= disconnect_after_s:
                        return
                    yield KEEPALIVE
                    continue
                if item is None:
                    return
                self._ledger.record_event(
                    EventRecord(time.time(), subscriber.number, item.event, item.generation_id, item.data.decode())
                )
                yield item.data
                subscriber.delivered += 1  # runs once the frame was handed to the server
                sent += 1
                if disconnect_after_events is not None and sent >= disconnect_after_events:
                    return
        finally:
            # Frames still queued will never be written: count them as delivered so drain() does not wait.
            subscriber.delivered = subscriber.queued
            self.unsubscribe(subscriber)
