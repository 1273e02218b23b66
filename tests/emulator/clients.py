"""How emulator tests talk to it: an authorised httpx client, a poll to a terminal status, request bodies, and a
tap that records everything one GET /api/events stream carries."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

from batchgen.emulator import RunningEmulator
from tests.kit import wait_for


def authed(emu: RunningEmulator, key: str | None = None) -> httpx.Client:
    """A client with a Bearer key (the emulator's by default)."""
    headers = {"Authorization": f"Bearer {key or emu.api_key}"}
    return httpx.Client(base_url=emu.base_url, headers=headers, timeout=10.0)


def wait_terminal(client: httpx.Client, generation_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll the status endpoint until the row is terminal; returns the row."""

    def done() -> dict[str, Any] | None:
        row: dict[str, Any] = client.get(f"/api/ai/queue/{generation_id}").json()
        return row if row["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(done, timeout=timeout, what=f"{generation_id} to finish", interval=0.01)
    return result


SORA = {"model": "openai-sora-2-pro", "prompt": "An ox in a Porsche"}
FLUX = {"model": "flux-1-dev", "prompt": "A red ox"}


class StreamTap:
    """Reads GET /api/events in a thread and keeps every raw line; connected once `with` returns.

    Give the emulator a short `keepalive_s` so the reader wakes up regularly to notice `close()`.
    """

    def __init__(self, emu: RunningEmulator, key: str | None = None) -> None:
        self.emu = emu
        self.key = key or emu.api_key
        self.lines: list[str] = []
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            with authed(self.emu, self.key) as c, c.stream("GET", "/api/events") as reply:
                self.status = reply.status_code
                self.headers = dict(reply.headers)
                for line in reply.iter_lines():
                    self.lines.append(line)
                    if self._stop.is_set():
                        return
        except BaseException as error:  # a thread must not raise: pytest turns that into an error elsewhere
            self.error = error
        finally:
            self.ended.set()

    def __enter__(self) -> StreamTap:
        before = self.emu.ledger.stream_connections
        self._thread.start()
        wait_for(lambda: self.emu.ledger.stream_connections > before or self.ended.is_set(), what="the stream")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(3.0)

    def frames(self) -> list[tuple[str, str]]:
        """(event, data) of every dispatched frame, comments skipped, as an SSE client would see them."""
        out: list[tuple[str, str]] = []
        event, data = "message", list[str]()  # data: the data lines of the frame being read
        for line in list(self.lines):
            if line == "":
                if data:
                    out.append((event, "\n".join(data)))
                event, data = "message", []
            elif line.startswith(":"):
                continue
            elif line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        return out

    def completed(self) -> list[dict[str, Any]]:
        """Parsed data of every media_generation_completed frame that is valid JSON."""
        found = []
        for event, data in self.frames():
            if event == "media_generation_completed":
                try:
                    found.append(json.loads(data))
                except ValueError:
                    continue
        return found


class RawStreamTap:
    """Reads GET /api/events in a thread and keeps every piece of body as it came off the socket (still gzipped
    when the stream is), with the `time.monotonic()` it arrived; connected once `with` returns.

    Nothing is parsed, so a buffering proxy's blocks stay visible. End the stream before leaving `with`
    (`emu.end_streams()`, `sse_disconnect_after_events`): a stream that delivers nothing cannot notice a stop.
    """

    def __init__(self, emu: RunningEmulator, key: str | None = None) -> None:
        self.emu = emu
        self.key = key or emu.api_key
        self.chunks: list[tuple[float, bytes]] = []
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            with authed(self.emu, self.key) as c, c.stream("GET", "/api/events") as reply:
                self.headers = dict(reply.headers)
                self.status = reply.status_code
                for chunk in reply.iter_raw():
                    self.chunks.append((time.monotonic(), chunk))
        except BaseException as error:  # a thread must not raise: pytest turns that into an error elsewhere
            self.error = error
        finally:
            self.ended.set()

    def __enter__(self) -> RawStreamTap:
        before = self.emu.ledger.stream_connections
        self._thread.start()
        wait_for(lambda: self.emu.ledger.stream_connections > before or self.ended.is_set(), what="the stream")
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(3.0)

    @property
    def received(self) -> int:
        """Bytes of body received so far."""
        return sum(len(chunk) for _, chunk in list(self.chunks))

    @property
    def body(self) -> bytes:
        """The body received so far, as it came (compressed or not)."""
        return b"".join(chunk for _, chunk in list(self.chunks))
