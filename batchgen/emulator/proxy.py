"""What a proxy between the API and the client does to the event stream: hold it in a buffer, gzip it.

Both wrap the body of one SSE response (events.py) without knowing about frames: like nginx, they see bytes. The
hub still records an event when it hands the frame over, so the ledger says what the API sent and the wire shows
what the proxy let through. The response itself answers 200 with its headers at once either way: the connection
"works" and delivers nothing, the symptom a client behind such a proxy meets.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncGenerator

GZIP_WBITS = 31  # zlib's gzip container, as Content-Encoding: gzip expects


async def buffered(body: AsyncGenerator[bytes, None], mode: str, size: int) -> AsyncGenerator[bytes, None]:
    """`body` as a buffering proxy passes it on: "off" at once; "bulk" in blocks of exactly `size` bytes once that
    many are held (the rest when the stream ends: a proxy buffer flushes on size, not on time); "until_close"
    everything at once when the stream ends."""
    held = bytearray()
    async with contextlib.aclosing(body):  # closing this stream closes the hub's, which unsubscribes it
        async for chunk in body:
            if mode == "off":
                yield chunk
                continue
            held += chunk
            while mode == "bulk" and len(held) >= size:
                yield bytes(held[:size])
                del held[:size]
    if held:
        yield bytes(held)


async def gzipped(body: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """`body` compressed as one gzip stream with no flush per chunk (nginx's gzip on a stream): bytes leave only
    when zlib emits them (its header at once, then whole deflate blocks), the rest when the stream ends."""
    compressor = zlib.compressobj(wbits=GZIP_WBITS)
    async with contextlib.aclosing(body):
        async for chunk in body:
            out = compressor.compress(chunk)
            if out:
                yield out
    yield compressor.flush()
