"""The network between client and API: a buffering or gzipping proxy on the event stream, big, slow and cut
downloads, and HTTP Range on the result files. Over real loopback HTTP; each fault test proves from the ledger
that its fault fired. No assertion depends on how fast the machine is: a stream's close is the test's own act
(`emu.end_streams()`), and every wait is for something the ledger or the socket will show."""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from dataclasses import dataclass

import httpx
import pytest

from batchgen.emulator import EmulatorConfig, Faults, RunningEmulator, running_emulator
from batchgen.emulator.events import KEEPALIVE
from batchgen.emulator.faults import decide
from batchgen.emulator.media import result_bytes
from batchgen.emulator.transfer import cut_point
from tests.kit import wait_for
from tests.kit_faults import fired

from .clients import FLUX, SORA, RawStreamTap, StreamTap, authed, wait_terminal

SEED = 4


def _config(*, keepalive_s: float = 60.0, **faults: object) -> EmulatorConfig:
    """Instant generations; keep-alives only when a test wants them, so the stream's bytes are exactly its frames."""
    return EmulatorConfig(seed=SEED, duration_s=0, keepalive_s=keepalive_s, faults=Faults(**faults))  # type: ignore[arg-type]


# ---- the event stream behind a proxy -------------------------------------------------------------------------------


def _frame_out(c: httpx.Client, emu: RunningEmulator, n: int) -> int:
    """Finish one more generation and wait until the API has handed its frame to the stream (the n-th, 1-based);
    returns how many bytes of frames it has handed over in all."""
    c.post("/api/ai/queue", json={**FLUX, "prompt": f"frame {n}"}).raise_for_status()
    wait_for(lambda: len(emu.ledger.events) >= n, what=f"frame {n} handed to the stream")
    return len(_frames(emu))


def _frames(emu: RunningEmulator) -> bytes:
    """Every frame the API handed to the stream, in order, as bytes."""
    return "".join(e.data for e in emu.ledger.events).encode()


def _wait_received(tap: RawStreamTap, size: int) -> None:
    wait_for(lambda: tap.received >= size, what=f"the first {size} bytes of the stream")


def _end(emu: RunningEmulator, tap: RawStreamTap | StreamTap) -> float:
    """End the stream now; returns the moment it was asked to end, once the client has read it to its end."""
    closing = time.monotonic()
    emu.end_streams()
    assert tap.ended.wait(10.0), "the stream did not end"
    assert tap.error is None
    return closing


def test_until_close_answers_200_at_once_then_holds_every_byte_until_the_stream_ends() -> None:
    with (
        running_emulator(_config(sse_buffering="until_close")) as emu,
        authed(emu) as c,
        RawStreamTap(emu) as tap,
    ):
        wait_for(lambda: tap.status, what="the stream's status line")
        assert (tap.status, tap.headers["content-type"]) == (200, "text/event-stream; charset=utf-8")
        for n in (1, 2, 3):
            _frame_out(c, emu, n)
        assert tap.chunks == []  # three frames sent by the API, not one byte let through: the symptom
        closing = _end(emu, tap)
        assert [at >= closing for at, _ in tap.chunks] == [True]  # all of it in one read, after the close
        assert tap.body == _frames(emu)
        assert [(f.subject, f.detail) for f in emu.ledger.fired("sse_buffering")] == [("1", "until_close")]
        assert fired(emu, "sse_buffering") == 1


def test_bulk_writes_whole_buffers_as_they_fill_and_the_rest_on_close() -> None:
    block = 512
    with (
        running_emulator(_config(sse_buffering="bulk", sse_buffer_bytes=block)) as emu,
        authed(emu) as c,
        RawStreamTap(emu) as tap,
    ):
        handed = 0
        for n in range(1, 12):
            handed = _frame_out(c, emu, n)
            whole = handed // block * block
            _wait_received(tap, whole)
            assert tap.received == whole  # never part of a buffer while the stream is open
            if handed >= 2 * block and handed % block:
                break
        assert handed >= 2 * block and handed % block, "the frames should fill two buffers and leave a rest"
        closing = _end(emu, tap)
        assert tap.body == _frames(emu)
        assert b"".join(chunk for at, chunk in tap.chunks if at >= closing) == tap.body[whole:]  # the rest, on close
        assert [f.detail for f in emu.ledger.fired("sse_buffering")] == [f"bulk {block}"]


def test_bulk_holds_keep_alives_too() -> None:
    block = 2 * len(KEEPALIVE)
    config = _config(keepalive_s=0.01, sse_buffering="bulk", sse_buffer_bytes=block)
    with running_emulator(config) as emu, RawStreamTap(emu) as tap:
        _wait_received(tap, 2 * block)  # two buffers of keep-alives
        closing = _end(emu, tap)
        assert all(len(chunk) % block == 0 for at, chunk in tap.chunks if at < closing)
        assert tap.body == KEEPALIVE * (len(tap.body) // len(KEEPALIVE))
        assert fired(emu, "sse_buffering") == 1


def test_gzip_is_one_deflate_stream_with_no_flush_per_frame() -> None:
    with running_emulator(_config(sse_gzip=True)) as emu, authed(emu) as c, RawStreamTap(emu) as tap:
        wait_for(lambda: tap.status, what="the stream's status line")
        assert tap.headers["content-encoding"] == "gzip"
        for n in (1, 2, 3):
            _frame_out(c, emu, n)
        _wait_received(tap, 10)  # the gzip header
        assert tap.body[:3] == b"\x1f\x8b\x08" and tap.received == 10  # zlib holds three small frames back
        _end(emu, tap)
        decoder = zlib.decompressobj(wbits=31)
        assert decoder.decompress(tap.body) == _frames(emu)
        assert decoder.eof and decoder.unused_data == b""  # one complete gzip member, trailer and all
        assert fired(emu, "sse_gzip") == 1


def test_gzip_behind_a_buffer_still_decodes_for_an_sse_client() -> None:
    config = _config(sse_gzip=True, sse_buffering="bulk")  # 4096 bytes of buffer: three frames stay in it
    with running_emulator(config) as emu, authed(emu) as c, StreamTap(emu) as tap:
        for n in (1, 2, 3):
            _frame_out(c, emu, n)
        assert tap.lines == []
        _end(emu, tap)
        assert [e["generation_id"] for e in tap.completed()] == [e.generation_id for e in emu.ledger.events]
        assert (fired(emu, "sse_gzip"), fired(emu, "sse_buffering")) == (1, 1)


# ---- result files --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Got:
    """What a client read from one GET: the status line, headers, the body bytes that arrived, and whether the
    body arrived whole (False: the connection was cut first)."""

    status: int
    headers: httpx.Headers
    body: bytes
    complete: bool


def _get(url: str, range_header: str | None = None) -> Got:
    headers = {} if range_header is None else {"Range": range_header}
    body = bytearray()
    with httpx.stream("GET", url, headers=headers, timeout=10.0) as reply:
        try:
            for chunk in reply.iter_raw():
                body += chunk
        except httpx.RemoteProtocolError:
            return Got(reply.status_code, reply.headers, bytes(body), complete=False)
    return Got(reply.status_code, reply.headers, bytes(body), complete=True)


def _finished(c: httpx.Client, body: dict[str, object] = FLUX) -> tuple[str, str]:
    """Enqueue, wait for success; (generation id, result URL)."""
    gid: str = c.post("/api/ai/queue", json=body).json()["generations"][0]["generation_id"]
    url: str = wait_terminal(c, gid)["result_url"]
    return gid, url


def _png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG, every CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, content = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + content) & 0xFFFFFFFF, kind
        kinds.append(kind)
        at += 12 + length
    assert at == len(data)
    return kinds


def _mp4_boxes(data: bytes) -> list[bytes]:
    """The top-level box types of an MP4, their sizes adding up to the file."""
    kinds, at = [], 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        assert size >= 8
        kinds.append(kind)
        at += size
    assert at == len(data)
    return kinds


def test_result_size_pads_files_and_keeps_the_media_valid() -> None:
    size = 300_000
    with running_emulator(_config(result_size_bytes=size)) as emu, authed(emu) as c:
        png_id, png_url = _finished(c, FLUX)
        mp4_id, mp4_url = _finished(c, SORA)
        png, mp4 = httpx.get(png_url), httpx.get(mp4_url)
        assert (png.status_code, mp4.status_code) == (200, 200)
        assert len(png.content) == len(mp4.content) == size == int(png.headers["content-length"])
        assert _png_chunks(png.content) == [b"IHDR", b"tEXt", b"IDAT", b"bgPd", b"IEND"]
        assert _mp4_boxes(mp4.content)[0] == b"ftyp" and _mp4_boxes(mp4.content)[-1] == b"free"
        assert httpx.get(png_url).content == png.content  # the same bytes every time
        served = emu.ledger.served_sha256
        assert served[png_id] == hashlib.sha256(png.content).hexdigest()
        assert served[mp4_id] == hashlib.sha256(mp4.content).hexdigest()
        assert [f.detail for f in emu.ledger.fired("result_size_bytes")] == [f"{size} bytes"] * 3
    assert result_bytes("g", "image", 10) == result_bytes("g", "image")  # never shorter than the media itself


def test_bandwidth_paces_the_body_and_the_bytes_stay_exact() -> None:
    config = _config(result_size_bytes=100_000, download_bandwidth_bps=20e6)  # the speed is the benchmark's business
    with running_emulator(config) as emu, authed(emu) as c:
        gid, url = _finished(c)
        whole, tail = _get(url), _get(url, "bytes=60000-")
        assert (whole.status, whole.complete, tail.status, tail.complete) == (200, True, 206, True)
        assert whole.body[60000:] == tail.body and len(whole.body) == 100_000
        assert hashlib.sha256(whole.body).hexdigest() == emu.ledger.served_sha256[gid]
        assert [d.bytes_sent for d in emu.ledger.downloads_of(gid)] == [100_000, 40_000]
        assert [f.detail for f in emu.ledger.fired("download_bandwidth_bps")] == ["2e+07", "2e+07"]


def test_range_answers_206_with_exactly_the_part_on_both_routes() -> None:
    with running_emulator(_config(result_size_bytes=5000)) as emu, authed(emu) as c:
        gid, plain = _finished(c)
        for url in (plain, emu.state.presigned_url(gid, 3600)):
            full = _get(url)
            total = len(full.body)
            assert (full.status, full.headers["accept-ranges"]) == (200, "bytes")
            assert "content-range" not in full.headers
            cases = {  # Range header -> (first byte, last byte)
                "bytes=1000-": (1000, total - 1),
                "bytes=10-19": (10, 19),
                "bytes=100-99999999": (100, total - 1),
                "bytes=-100": (total - 100, total - 1),
                f"bytes={total - 1}-": (total - 1, total - 1),
                "bytes=0-": (0, total - 1),
            }
            for asked, (first, last) in cases.items():
                part = _get(url, asked)
                assert part.status == 206, asked
                assert part.headers["content-range"] == f"bytes {first}-{last}/{total}"
                assert int(part.headers["content-length"]) == last - first + 1 == len(part.body)
                assert part.body == full.body[first : last + 1] and part.headers["accept-ranges"] == "bytes"
            beyond = _get(url, f"bytes={total}-")
            assert (beyond.status, beyond.headers["content-range"], beyond.body) == (416, f"bytes */{total}", b"")
            for ignored in ("bytes=5-2", "items=0-1", "bytes=0-1,5-6"):  # what a server may ignore (RFC 9110)
                assert _get(url, ignored).status == 200
        records = emu.ledger.downloads_of(gid)
        assert [d.presigned for d in records] == [False] * 11 + [True] * 11
        first_route = [(d.status, d.range_start, d.bytes_sent) for d in records[:11]]
        assert first_route == [
            (200, None, total),
            (206, 1000, total - 1000),
            (206, 10, 10),
            (206, 100, total - 100),
            (206, total - 100, 100),
            (206, total - 1, 1),
            (206, 0, total),
            (416, total, 0),
            (200, 5, total),
            (200, None, total),
            (200, 0, total),
        ]
        assert emu.ledger.served_sha256[gid] == hashlib.sha256(full.body).hexdigest()
        middle_only, url = _finished(c, {**FLUX, "prompt": "only the middle"})
        assert _get(url, "bytes=10-19").status == 206
        assert middle_only not in emu.ledger.served_sha256  # a part that stops short proves nothing about the file


def test_ignores_range_answers_200_with_the_whole_file() -> None:
    with running_emulator(_config(download_ignores_range=True)) as emu, authed(emu) as c:
        gid, url = _finished(c)
        whole = _get(url)
        for asked in ("bytes=100-", "bytes=999999-"):
            got = _get(url, asked)
            assert (got.status, got.body, "content-range" in got.headers) == (200, whole.body, False)
        assert [d.range_start for d in emu.ledger.downloads_of(gid)] == [None, 100, 999999]
        assert [(f.subject, f.detail) for f in emu.ledger.fired("download_ignores_range")] == [
            (gid, "bytes=100-"),
            (gid, "bytes=999999-"),
        ]


def test_a_cut_download_carries_the_fraction_and_ranged_requests_complete_it() -> None:
    total, fraction = 40_000, 0.25
    config = _config(result_size_bytes=total, download_cut_rate=0.5, download_cut_at=fraction)
    with running_emulator(config) as emu, authed(emu) as c:
        c.post("/api/ai/queue", json={**FLUX, "num_generations": 4}).raise_for_status()
        # a generation whose first download is cut (the decision is a pure function of the seed and the attempt)
        gid = next(g for g in emu.ledger.created_ids if decide(SEED, "download_cut_rate", f"{g}#0", 0.5))
        url: str = wait_terminal(c, gid)["result_url"]
        have, cuts = b"", 0
        for _ in range(30):  # each attempt is cut with probability 1/2: this ends long before
            got = _get(url, f"bytes={len(have)}-" if have else None)
            assert int(got.headers["content-length"]) == total - len(have)  # the full length declared, cut or not
            if have:
                assert (got.status, got.headers["content-range"]) == (206, f"bytes {len(have)}-{total - 1}/{total}")
            if got.complete:
                have += got.body
                break
            assert len(got.body) == cut_point(total - len(have), fraction) > 0
            have, cuts = have + got.body, cuts + 1
        assert len(have) == total and cuts >= 1
        assert hashlib.sha256(have).hexdigest() == emu.ledger.served_sha256[gid]
        records = emu.ledger.downloads_of(gid)
        assert [d.status for d in records] == [0] * cuts + [206]
        assert sum(d.bytes_sent for d in records) == total
        assert records[0].range_start is None and [d.range_start for d in records[1:]] == [
            sum(d.bytes_sent for d in records[:i]) for i in range(1, len(records))
        ]
        assert fired(emu, "download_cut_rate") == cuts and fired(emu, "truncated_download_rate") == 0


@pytest.mark.parametrize(
    ("knob", "faults", "status"),
    [
        ("download_429_rate", {"download_429_rate": 1.0, "retry_after": 0.5}, 429),
        ("download_5xx_rate", {"download_5xx_rate": 1.0}, 503),
        ("truncated_download_rate", {"truncated_download_rate": 1.0}, 206),
        ("wrong_content_type_rate", {"wrong_content_type_rate": 1.0}, 206),
    ],
)
def test_download_faults_act_on_ranged_requests(knob: str, faults: dict[str, object], status: int) -> None:
    with running_emulator(_config(result_size_bytes=10_000, **faults)) as emu, authed(emu) as c:
        gid, url = _finished(c)
        before = fired(emu, knob)  # wrong_content_type_rate acts on the status polls too
        got = _get(url, "bytes=2000-")
        assert got.status == status
        (record,) = emu.ledger.downloads_of(gid)
        assert record.range_start == 2000
        if knob == "truncated_download_rate":
            assert (got.complete, len(got.body), record.status, record.bytes_sent) == (False, 4000, 0, 4000)
            assert fired(emu, "download_cut_rate") == 0
        elif knob == "wrong_content_type_rate":
            assert got.headers["content-type"].startswith("text/plain") and len(got.body) == 8000
        else:
            assert record.bytes_sent == 0
        assert fired(emu, knob) == before + 1


def test_the_new_knobs_parse_from_text_and_refuse_nonsense() -> None:
    faults = Faults().with_overrides(
        {
            "sse_buffering": "bulk",
            "sse_buffer_bytes": "8192",
            "sse_gzip": "on",
            "result_size_bytes": "8388608",
            "download_bandwidth_bps": "1e6",
            "download_cut_rate": "0.2",
            "download_cut_at": "0.75",
            "download_ignores_range": "true",
        }
    )
    assert (faults.sse_buffering, faults.sse_buffer_bytes, faults.sse_gzip, faults.result_size_bytes) == (
        "bulk",
        8192,
        True,
        8 * 1024 * 1024,
    )
    assert (faults.download_bandwidth_bps, faults.download_cut_rate, faults.download_cut_at) == (1e6, 0.2, 0.75)
    assert faults.download_ignores_range
    for name, text in [
        ("sse_buffering", "sometimes"),
        ("sse_buffer_bytes", "0"),
        ("download_cut_at", "1.5"),
        ("download_bandwidth_bps", "0"),
    ]:
        with pytest.raises(ValueError, match=name):
            Faults().with_overrides({name: text})
