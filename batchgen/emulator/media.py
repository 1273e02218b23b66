"""Result files: a real, playable MP4 and a real PNG whose bytes differ per generation.

The MP4 is a 1 s 128x72 H.264 (baseline, yuv420p, faststart) clip made once with ffmpeg and shipped as
package data, so the runtime needs no ffmpeg. Per generation we append a top-level `free` box carrying the
generation id: players skip `free` boxes, and since `moov` precedes `mdat` no offset moves, so the file stays
playable while its sha256 is unique (its picture is the same for every generation: varying it needs an encoder).
The PNG is drawn in pure Python (zlib): a gradient between two colours and a pattern (stripes, checks, rings or
diagonals, in a third colour and a cell size) all taken from the id, so two generations look different at a glance;
its shape follows the request (`aspect_ratio`, `image_size`, `size`, `width`/`height`), the long side LONG_SIDE px.

`result_size_bytes` pads a file to a real download's size inside the same kind of container the player already
skips (a bigger `free` box; a private ancillary PNG chunk before IEND), filled with bytes drawn from the id, so
the media stays valid, a misplaced chunk cannot go unnoticed, and the sha256 is stable.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

VIDEO_CONTENT_TYPE = "video/mp4"
IMAGE_CONTENT_TYPE = "image/png"


LONG_SIDE = 96  # pixels of a PNG's longer side: small files, still a visible picture
_NAMED_RATIOS = {"square": (1, 1), "square_hd": (1, 1), "portrait": (9, 16), "landscape": (16, 9)}


def _ratio(text: str) -> tuple[int, int] | None:
    """ "16:9", "9x16", "1024x1536", "portrait", "landscape_4_3", "portrait_16_9" to (width, height) parts."""
    text = text.strip().lower()
    if text in _NAMED_RATIOS:
        return _NAMED_RATIOS[text]
    for orientation in ("portrait", "landscape"):
        if text.startswith(orientation + "_"):
            parts = text.removeprefix(orientation + "_").split("_")
            if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
                long, short = max(int(p) for p in parts), min(int(p) for p in parts)
                return (short, long) if orientation == "portrait" else (long, short)
    for sep in (":", "x", "*", "/"):
        if sep in text:
            parts = [p.strip() for p in text.split(sep)]
            if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
                return int(parts[0]), int(parts[1])
    return None


def shape_of(params: Mapping[str, Any]) -> tuple[int, int]:
    """A PNG's (width, height) for a request: its shape scaled so the longer side is LONG_SIDE (square by default)."""
    ratio: tuple[int, int] | None = None
    width, height = params.get("width"), params.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        ratio = (width, height)
    for key in ("aspect_ratio", "image_size", "size", "resolution"):
        if ratio is None and isinstance(params.get(key), str):
            ratio = _ratio(params[key])
    w, h = ratio or (1, 1)
    scale = LONG_SIDE / max(w, h)
    return max(8, round(w * scale)), max(8, round(h * scale))


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


def _in_pattern(kind: int, x: int, y: int, cell: int, width: int, height: int) -> bool:
    """Whether pixel (x, y) carries the pattern's colour: stripes across, stripes down, checks, rings, diagonals."""
    if kind == 0:
        return (y // cell) % 2 == 0
    if kind == 1:
        return (x // cell) % 2 == 0
    if kind == 2:
        return (x // cell + y // cell) % 2 == 0
    if kind == 3:
        dx, dy = x - width // 2, y - height // 2
        return int((dx * dx + dy * dy) ** 0.5) // cell % 2 == 0
    return ((x + y) // cell) % 2 == 0


def png_bytes(generation_id: str, width: int = 64, height: int = 64, size: int | None = None) -> bytes:
    """An RGB PNG: a diagonal gradient between two colours from the id's hash, overlaid with a pattern in a third
    colour (kind and cell size from the hash too); a padding chunk before IEND brings it to `size` bytes, when given
    and larger than the picture."""
    digest = hashlib.sha256(generation_id.encode()).digest()
    start, end, ink = digest[0:3], digest[3:6], bytes(digest[6:9])
    kind, cell = digest[9] % 5, 3 + digest[10] % 10
    rows = bytearray()
    span = max(1, width + height - 2)
    for y in range(height):
        rows.append(0)  # filter type "none" for this scanline
        for x in range(width):
            if _in_pattern(kind, x, y, cell, width, height):
                rows.extend(ink)
                continue
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
def result_file(
    generation_id: str, media_type: str, size: int | None = None, shape: tuple[int, int] = (64, 64)
) -> ResultFile:
    """The file for a generation, padded to `size` bytes when given (never shorter than the media itself); an
    image is `shape` (width, height) pixels (`shape_of` the request)."""
    data, content_type = result_bytes(generation_id, media_type, size, shape)
    return ResultFile(data, content_type, hashlib.sha256(data).hexdigest())


def result_bytes(
    generation_id: str, media_type: str, size: int | None = None, shape: tuple[int, int] = (64, 64)
) -> tuple[bytes, str]:
    """The file for a generation and its content type (padded to `size` bytes when given)."""
    if media_type == "image":
        return png_bytes(generation_id, *shape, size=size), IMAGE_CONTENT_TYPE
    return mp4_bytes(generation_id, size), VIDEO_CONTENT_TYPE


def extension_for(media_type: str) -> str:
    """File extension of a generation's result."""
    return "png" if media_type == "image" else "mp4"
