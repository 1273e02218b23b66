"""Image dimensions from the first bytes of a file: PNG, JPEG, WebP and GIF, with no imaging library.

`image_size(head)` needs only a prefix of the file (64 KB is plenty for every format here unless a JPEG
carries a huge EXIF block before its frame header, in which case it answers None: "could not tell").
"""

from __future__ import annotations

import struct

HEAD_BYTES = 64 * 1024  # how much of a file the engine fetches to find its dimensions

# JPEG markers that start a frame (SOF0..SOF15 minus DHT, JPG and DAC), whose header holds height and width.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_format(head: bytes) -> str | None:
    """The format named by the magic bytes ("png", "jpeg", "webp", "gif"), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header in `head`, or None when the bytes are not a readable image."""
    kind = image_format(head)
    try:
        if kind == "png":
            return _png_size(head)
        if kind == "jpeg":
            return _jpeg_size(head)
        if kind == "webp":
            return _webp_size(head)
        if kind == "gif":
            width, height = struct.unpack("<HH", head[6:10])
            return width, height
    except struct.error:
        return None  # truncated header
    return None


def _png_size(head: bytes) -> tuple[int, int] | None:
    # The IHDR chunk must come first: 8 signature bytes, 4 length, "IHDR", then width and height.
    if head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    index = 2
    length = len(head)
    while index + 4 <= length:
        if head[index] != 0xFF:
            return None  # lost sync: not a JPEG we can walk
        marker = head[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            index += 2
            continue
        (segment_length,) = struct.unpack(">H", head[index + 2 : index + 4])
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", head[index + 5 : index + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        index += 2 + segment_length
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 ":
        # Lossy: a 3-byte frame tag, the start code 9d 01 2a, then 14-bit width and height.
        if head[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        # Lossless: signature 0x2f, then 14 bits width-1 and 14 bits height-1, little-endian.
        if head[20] != 0x2F:
            return None
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        # Extended: 24-bit canvas width-1 and height-1 after 4 bytes of flags.
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        if len(head) < 30:
            return None
        return width, height
    return None
