"""Result files that tell generations apart: a PNG's pixels come from its generation id, its shape from the request."""

from __future__ import annotations

import struct
import zlib

import pytest

from batchgen.emulator import EmulatorConfig, Faults, running_emulator
from batchgen.emulator.media import LONG_SIDE, png_bytes, result_bytes, shape_of

from .clients import FLUX, authed, wait_terminal


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which follows the 8-byte signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_pixels(data: bytes) -> bytes:
    """The decompressed scanlines (all filter type 0) of a PNG with one IDAT chunk."""
    start = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[start - 4 : start])
    return zlib.decompress(data[start + 4 : start + 4 + length])


def test_two_generations_draw_different_pictures_and_each_the_same_every_time() -> None:
    first, second = png_bytes("gen-a"), png_bytes("gen-b")
    assert png_pixels(first) != png_pixels(second), "the pictures differ, not only a text chunk"
    assert png_bytes("gen-a") == first
    assert len(first) < 20_000


@pytest.mark.parametrize(
    ("params", "portrait"),
    [
        ({"aspect_ratio": "9:16"}, True),
        ({"aspect_ratio": "3:4"}, True),
        ({"aspect_ratio": "portrait"}, True),
        ({"image_size": "portrait_16_9"}, True),
        ({"size": "1024x1536"}, True),
        ({"width": 512, "height": 768}, True),
        ({"aspect_ratio": "16:9"}, False),
        ({"aspect_ratio": "landscape"}, False),
        ({"image_size": "landscape_4_3"}, False),
    ],
)
def test_the_shape_follows_the_request(params: dict[str, object], portrait: bool) -> None:
    width, height = shape_of(params)
    assert max(width, height) == LONG_SIDE
    assert (height > width) is portrait


def test_square_unless_said_otherwise() -> None:
    assert shape_of({"aspect_ratio": "1:1"}) == shape_of({}) == shape_of({"aspect_ratio": "nonsense"}) == (96, 96)
    assert shape_of({"aspect_ratio": "16:9"}) == (96, 54)


def test_padding_keeps_the_picture_and_reaches_the_size() -> None:
    plain, _ = result_bytes("g", "image", None, (54, 96))
    padded, _ = result_bytes("g", "image", 50_000, (54, 96))
    assert len(padded) == 50_000 and png_size(padded) == (54, 96)
    assert png_pixels(padded) == png_pixels(plain)


def test_served_images_over_loopback_are_portrait_or_landscape_as_asked() -> None:
    with running_emulator(EmulatorConfig(duration_s=0.0, faults=Faults(result_size_bytes=4096))) as emu:
        with authed(emu) as client:
            files = {}
            for ratio in ("9:16", "16:9"):
                reply = client.post("/api/ai/queue", json={**FLUX, "aspect_ratio": ratio, "prompt": ratio})
                gid = reply.json()["generations"][0]["generation_id"]
                row = wait_terminal(client, gid)
                assert row["status"] == "succeeded", row
                files[ratio] = client.get(row["result_url"]).content
    assert png_size(files["9:16"]) == (54, 96)
    assert png_size(files["16:9"]) == (96, 54)
    assert len(files["9:16"]) == len(files["16:9"]) == 4096
    assert png_pixels(files["9:16"]) != png_pixels(files["16:9"])
