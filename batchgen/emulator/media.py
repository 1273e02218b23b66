"""Result files: a real, playable MP4 and a real PNG whose bytes differ per generation.

The MP4 is a 1 s 128x72 H.264 (baseline, yuv420p, faststart) clip made once with ffmpeg and shipped as
package data, so the runtime needs no ffmpeg. Per generation we append a top-level `free` box carrying the
generation id: players skip `free` boxes, and since `moov` precedes `mdat` no offset moves, so the file stays
playable while its sha256 is unique. The PNG is drawn in pure Python (zlib) with colours from the id.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from importlib import resources

VIDEO_CONTENT_TYPE = "video/mp4"
IMAGE_CONTENT_TYPE = "image/png"


@functools.cache
def _mp4_template() -> bytes:
    return resources.files("batchgen.emulator").joinpath("sample.mp4").read_bytes()


def mp4_bytes(generation_id: str) -> bytes:
    """The sample clip plus a `free` box naming the generation."""
    payload = f"batchgen-emulator generation_id={generation_id}".encode()
    return _mp4_template() + struct.pack(">I4s", 8 + len(payload), b"free") + payload


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(generation_id: str, width: int = 64, height: int = 64) -> bytes:
    """An RGB PNG: a diagonal gradient between two colours taken from the id's hash."""
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
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"tEXt", text),
            _chunk(b"IDAT", zlib.compress(bytes(rows), 9)),
            _chunk(b"IEND", b""),
        ]
    )


def result_bytes(generation_id: str, media_type: str) -> tuple[bytes, str]:
    """The file for a generation and its content type."""
    if media_type == "image":
        return png_bytes(generation_id), IMAGE_CONTENT_TYPE
    return mp4_bytes(generation_id), VIDEO_CONTENT_TYPE


def extension_for(media_type: str) -> str:
    """File extension of a generation's result."""
    return "png" if media_type == "image" else "mp4"
