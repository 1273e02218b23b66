"""How a result file's bytes travel: which of them a Range asks for, and a body that is paced or cut short.

`requested_range` is a pure function of the header and the file's size. `FileBody` sends a reply's bytes in
chunks, no faster than a bandwidth when one is given, and can stop after a prefix and cut the connection (the app
marks the scope with replies.ABORT, as for every reply that must not complete).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from batchgen.emulator.replies import ABORT

CHUNK_BYTES = 16 * 1024
PACE_STEP_S = 0.05  # a paced body sends at least every 50 ms, so a slow link trickles instead of bursting
_SPEC = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable range of a file: `start` and `end` inclusive, as Content-Range writes them."""

    start: int
    end: int
    total: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.total}"


UNSATISFIABLE = "unsatisfiable"


def requested_range(header: str | None, total: int) -> ByteRange | str | None:
    """The part of a `total`-byte file that a Range header asks for.

    None means "send the whole file": no header, or one this server does not take (several ranges, a unit other
    than bytes, a malformed or reversed spec), which RFC 9110 lets a server ignore. UNSATISFIABLE means a start at
    or beyond the end (416). `bytes=N-`, `bytes=N-M` (M clamped to the last byte) and `bytes=-K` (the last K) are
    understood.
    """
    if header is None:
        return None
    match = _SPEC.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # a suffix: the last K bytes
        suffix = int(last)
        if suffix == 0:
            return UNSATISFIABLE
        return ByteRange(max(0, total - suffix), total - 1, total)
    start = int(first)
    if start >= total:
        return UNSATISFIABLE
    end = total - 1 if not last else min(int(last), total - 1)
    if end < start:
        return None
    return ByteRange(start, end, total)


def cut_point(length: int, fraction: float) -> int:
    """How many of a reply's `length` bytes it carries when cut at `fraction`: at least one byte short of all,
    or the cut would be a complete reply."""
    return max(0, min(length - 1, int(length * fraction)))


class FileBody(Response):
    """Bytes of a file with their true Content-Length, sent in chunks, paced to `bandwidth_bps` when given; with
    `cut_after`, only that many bytes are sent, then the connection is cut."""

    def __init__(
        self,
        body: bytes | memoryview,
        *,
        status_code: int,
        media_type: str,
        headers: dict[str, str],
        cut_after: int | None = None,
        bandwidth_bps: float | None = None,
    ) -> None:
        super().__init__(body, status_code=status_code, headers=headers, media_type=media_type)
        self.cut_after = cut_after
        self.bandwidth_bps = bandwidth_bps

    @property
    def bytes_to_send(self) -> int:
        """How many bytes of the body this reply carries."""
        return len(self.body) if self.cut_after is None else min(self.cut_after, len(self.body))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async with anyio.create_task_group() as tasks:

            async def listen_for_disconnect() -> None:
                # A paced body must stop when the client hangs up, not trickle into a closed socket for minutes.
                while (await receive())["type"] != "http.disconnect":
                    pass
                tasks.cancel_scope.cancel()

            tasks.start_soon(listen_for_disconnect)
            await self._send_body(send)
            tasks.cancel_scope.cancel()
        if self.cut_after is not None:
            scope[ABORT] = True
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_body(self, send: Send) -> None:
        view = memoryview(self.body)[: self.bytes_to_send]
        if self.bandwidth_bps is None:
            if len(view):
                await send({"type": "http.response.body", "body": bytes(view), "more_body": True})
            return
        step = max(1, min(CHUNK_BYTES, int(self.bandwidth_bps * PACE_STEP_S)))
        started = time.monotonic()
        for offset in range(0, len(view), step):
            # the bytes sent so far may not have left faster than the bandwidth allows
            ahead = started + offset / self.bandwidth_bps - time.monotonic()
            if ahead > 0:
                await anyio.sleep(ahead)
            await send({"type": "http.response.body", "body": bytes(view[offset : offset + step]), "more_body": True})
