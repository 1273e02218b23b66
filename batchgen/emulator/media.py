"""Result files: a real, playable MP4 and a real PNG whose bytes differ per generation.

The MP4 is a 1 s 128x72 H.264 (baseline, yuv420p, faststart) clip made once with ffmpeg and shipped as
package data, so the runtime needs no ffmpeg. Per generation we append a top-level `free` box carrying the
generation id: players skip `free` boxes, and since `moov` precedes `mdat` no offset moves, so the file stays
playable while its sha256 is unique. The PNG is drawn in pure Python (zlib) with colours from the id.

`result_size_bytes` pads a file to a real download's size inside the same kind of container the player already
skips (a bigger `free` box; a private ancillary PNG chunk before IEND), filled with bytes drawn from the id, so
the media stays valid, a misplaced chunk cannot go unnoticed, and the sha256 is stable.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from dataclasses import dataclass
from importlib import resources

VIDEO_CONTENT_TYPE = "video/mp4"
IMAGE_CONTENT_TYPE = "image/png"


@functools.cache
def _mp4_template() -> bytes:
    return resources.files("batchgen.emulator").joinpath("sample.mp4").read_bytes()


def _filler(generation_id: str, size: int) -> bytes:
    """`size` bytes that depend on the id alone and never repeat in a pattern."""
    return hashlib.shake_256(f"batchgen-emulator padding {generation_id}".encode()).digest(size) if size > 0 else b""


def mp4_bytes(generation_id: str, size: int | None = None) -> bytes:
    """The sample clip plus a `free` box naming the generation (filled up to `size` bytes in all when given)."""
    payload = f"batchgen-emulator generation_id={generation_id}".encode()
    natural = len(_mp4_template()) + 8 + len(payload)
    payload += _filler(generation_id, (size or 0) - natural)
    return _mp4_template() + struct.pack(">I4s", 8 + len(payload), b"free") + payload


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


PADDING_CHUNK = b"bgPd"  # ancillary, private, safe to copy: every decoder skips it


def png_bytes(generation_id: str, width: int = 64, height: int = 64, size: int | None = None) -> bytes:
    """An RGB PNG: a diagonal gradient between two colours taken from the id's hash (with a padding chunk before
    IEND that brings it to `size` bytes, when given and larger than the picture)."""
    digest = hashlib.sha256(generation_id.encode()).digest()
    start, end = digest[0:3], digest[3:6]
    rows = bytearray()
    span = max(1, width + height - 2)
    for y in range(height):
        rows.append(0)  # filter type "none" for this scanline
        for x in range(width):
            t = (x + y) / span
            rows.extend(round(a + (b - a) * t) for a, b in zip(start, end, strict=True))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    text = b"Comment\x00batchgen-emulator generation_id=" + generation_id.encode()
    head = b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"tEXt", text),
            _chunk(b"IDAT", zlib.compress(bytes(rows), 9)),
        ]
    )
    end = _chunk(b"IEND", b"")
    overhead = 12  # a chunk's length, type and CRC
    padding = (size or 0) - len(head) - len(end) - overhead
    if padding >= 0:
        head += _chunk(PADDING_CHUNK, _filler(generation_id, padding))
    return head + end


@dataclass(frozen=True, slots=True)
class ResultFile:
    """A generation's file, its content type, and the sha256 of the whole of it."""

    data: bytes
    content_type: str
    sha256: str


@functools.lru_cache(maxsize=8)  # a few files of several MiB each: the ones being downloaded right now
def result_file(generation_id: str, media_type: str, size: int | None = None) -> ResultFile:
    """The file for a generation, padded to `size` bytes when given (never shorter than the media itself)."""
    data, content_type = result_bytes(generation_id, media_type, size)
    return ResultFile(data, content_type, hashlib.sha256(data).hexdigest())


def result_bytes(generation_id: str, media_type: str, size: int | None = None) -> tuple[bytes, str]:
    """The file for a generation and its content type (padded to `size` bytes when given)."""
    if media_type == "image":
        return png_bytes(generation_id, size=size), IMAGE_CONTENT_TYPE
    return mp4_bytes(generation_id, size), VIDEO_CONTENT_TYPE


def extension_for(media_type: str) -> str:
    """File extension of a generation's result."""
    return "png" if media_type == "image" else "mp4"
