"""Image sizes from the first bytes of PNG, JPEG, WebP and GIF files."""

from __future__ import annotations

import struct

from batchgen.core.images import image_format, image_size


def png(width: int, height: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x06\0\0\0"
    )


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xda\0\x08"


def test_png() -> None:
    assert image_size(png(1280, 720)) == (1280, 720)


def test_jpeg_skips_segments_before_the_frame_header() -> None:
    assert image_format(jpeg(1, 1)) == "jpeg"
    assert image_size(jpeg(1792, 1024)) == (1792, 1024)


def test_gif() -> None:
    assert image_size(b"GIF89a" + struct.pack("<HH", 720, 1280) + b"\0" * 8) == (720, 1280)


def test_webp_lossy_lossless_and_extended() -> None:
    lossy = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0" + b"\0\0\0" + b"\x9d\x01\x2a" + struct.pack("<HH", 1280, 720)
    assert image_size(lossy) == (1280, 720)
    bits = (1024 - 1) | ((1792 - 1) << 14)
    lossless = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0" + b"\x2f" + struct.pack("<I", bits)
    assert image_size(lossless) == (1024, 1792)
    extended = (
        b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0"
        + b"\0\0\0\0"
        + (720 - 1).to_bytes(3, "little")
        + (1280 - 1).to_bytes(3, "little")
    )
    assert image_size(extended) == (720, 1280)


def test_truncated_or_foreign_bytes_give_none() -> None:
    assert image_size(png(1280, 720)[:18]) is None
    assert image_size(jpeg(10, 10)[:8]) is None
    assert image_size(b"<html>not an image</html>") is None
    assert image_size(b"") is None
