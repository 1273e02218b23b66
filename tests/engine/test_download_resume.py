"""Downloads that resume: a cut transfer continues from its part file with `Range`, on the same URL or another, in
this process or the next; a server that ignores Range or refuses the part's offset makes the client start over.

Over real loopback HTTP against the emulator. Every fault test proves from the emulator's ledger that its fault
fired, and reads what was sent per generation (range_start, bytes_sent) from the ledger, so no assertion depends on
the speed of the machine. Fault decisions are pure functions of the seed, so each run replays exactly.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from batchgen.core.progress import Progress
from batchgen.emulator import DownloadRecord, EmulatorConfig, Faults, RunningEmulator, running_emulator
from batchgen.engine.client import OxenClient
from batchgen.engine.partial import partial_path
from batchgen.errors import ServerError
from tests.kit import IMAGE_MODEL, assert_exactly_once, run_against, write_manifest
from tests.kit_faults import assert_fired

pytestmark = pytest.mark.timeout(60)

SIZE = 512 * 1024  # every result file, padded (result_size_bytes)
JOBS = 6
CUT = {"result_size_bytes": SIZE, "download_cut_rate": 0.5, "download_cut_at": 0.5}


def config(**faults: object) -> EmulatorConfig:
    return EmulatorConfig(seed=3, time_scale=0.0002, faults=Faults(**faults))  # type: ignore[arg-type]


def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "batchgen.db"


def part_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def by_generation(emu: RunningEmulator) -> dict[str, list[DownloadRecord]]:
    """Each generation's downloads in the order the emulator served them."""
    found: dict[str, list[DownloadRecord]] = {}
    for record in emu.ledger.downloads:
        found.setdefault(record.generation_id, []).append(record)
    return found


async def run_images(emu: RunningEmulator, tmp_path: Path, **kwargs: object) -> None:
    """A run of JOBS images; it waits for the event stream first, so each result comes with its presigned URL."""
    manifest = write_manifest(tmp_path, JOBS, model=IMAGE_MODEL, concurrency=JOBS)
    summary = await run_against(emu, manifest, tmp_path, options={"stream_connect_wait": 10.0}, **kwargs)
    assert summary.exit_code == 0


# ---- through a run ---------------------------------------------------------------------------------------------------


async def test_cut_downloads_continue_where_they_stopped_and_fetch_no_byte_twice(tmp_path: Path) -> None:
    with running_emulator(config(**CUT)) as emu:
        await run_images(emu, tmp_path)
        rows = assert_exactly_once(emu, db(tmp_path))  # the sha256 of each whole file is the one served
        assert_fired(emu, "download_cut_rate", "result_size_bytes")
        chains = by_generation(emu)
    assert {r.generation_id for r in rows} == set(chains) and all(r.bytes == SIZE for r in rows)
    resumed = 0
    for gid, records in chains.items():
        # every request after a cut asks for the byte after the last one received, and only the last one completes
        offsets = [sum(d.bytes_sent for d in records[:i]) for i in range(len(records))]
        assert [d.range_start or 0 for d in records] == offsets, (gid, records)
        assert [d.status for d in records] == [0] * (len(records) - 1) + [200 if len(records) == 1 else 206]
        assert sum(d.bytes_sent for d in records) == SIZE, f"{gid}: some bytes were fetched twice"
        resumed += len(records) > 1
    assert resumed >= 2, "too few cut downloads to prove anything: pick another seed"
    assert part_files(tmp_path / "out") == []


async def test_a_server_that_ignores_range_sends_the_whole_file_again_and_the_client_starts_over(
    tmp_path: Path,
) -> None:
    with running_emulator(config(**CUT, download_ignores_range=True)) as emu:
        await run_images(emu, tmp_path)
        assert_exactly_once(emu, db(tmp_path))
        assert_fired(emu, "download_ignores_range", "download_cut_rate")
        chains = by_generation(emu)
    for gid, records in chains.items():
        # the client asked to continue, the server sent everything from byte 0 each time
        assert [d.range_start or 0 for d in records] == [0] + [
            records[i - 1].bytes_sent for i in range(1, len(records))
        ]
        assert all(d.status in (0, 200) for d in records) and records[-1].status == 200, (gid, records)
        assert records[-1].bytes_sent == SIZE
    assert any(len(records) > 1 for records in chains.values())
    assert part_files(tmp_path / "out") == []


async def test_a_cut_on_the_presigned_url_continues_on_result_url_at_the_same_offset(tmp_path: Path) -> None:
    with running_emulator(config(**CUT)) as emu:
        await run_images(emu, tmp_path)
        assert_exactly_once(emu, db(tmp_path))
        assert_fired(emu, "download_cut_rate")
        chains = by_generation(emu)
    switched = 0
    for gid, records in chains.items():
        assert records[0].presigned, "the event's presigned download_url is tried first"
        for i in range(1, len(records)):
            cut, after = records[i - 1], records[i]
            if cut.presigned and cut.status == 0 and not after.presigned:
                received = sum(d.bytes_sent for d in records[:i])
                assert after.range_start == received > 0, (gid, records)
                switched += 1
    assert switched >= 1, "no cut on the presigned URL was continued on result_url: pick another seed"


async def test_progress_counts_every_byte_received(tmp_path: Path) -> None:
    seen: list[Progress] = []
    with running_emulator(config(**CUT)) as emu:
        await run_images(emu, tmp_path, on_progress=seen.append)
        assert_fired(emu, "download_cut_rate")
        sent = sum(d.bytes_sent for d in emu.ledger.downloads)
    assert seen and seen[-1].bytes_downloaded == sent == JOBS * SIZE


# ---- OxenClient.download against a finished generation -----------------------------------------------------------------


@asynccontextmanager
async def finished_image(emu: RunningEmulator) -> AsyncIterator[tuple[OxenClient, str, str]]:
    """A client, and (generation id, result URL) of a generation that has succeeded."""
    async with OxenClient(emu.base_url, emu.api_key) as client:
        (gid,) = await client.enqueue({"model": IMAGE_MODEL, "prompt": "an ox", "aspect_ratio": "1:1"})
        for _ in range(1000):  # 10 s at most
            remote = await client.get_generation(gid)
            if remote is not None and remote.is_terminal:
                break
            await anyio.sleep(0.01)
        assert remote is not None and remote.status == "succeeded" and remote.result_url, remote
        yield client, gid, remote.result_url


async def prefix(url: str, n: int) -> bytes:
    """The first `n` bytes of a result, as a process killed mid-download would have left them."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(url, headers={"Range": f"bytes=0-{n - 1}"})
    assert reply.status_code == 206 and reply.headers["content-range"] == f"bytes 0-{n - 1}/{SIZE}"
    return reply.content


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_part_left_by_a_killed_process_is_continued_at_its_length(tmp_path: Path) -> None:
    with running_emulator(config(result_size_bytes=SIZE)) as emu:
        async with finished_image(emu) as (client, gid, url):
            dest = tmp_path / "ox.png"
            part = partial_path(dest, gid)
            assert part.name == f".ox.png.{gid}.part"  # the name a runner of any version looks for
            part.write_bytes(await prefix(url, 200_000))
            digest, size = await client.download(url, dest, generation_id=gid)
        last = emu.ledger.downloads_of(gid)[-1]
        served = emu.ledger.served_sha256[gid]
    assert (last.status, last.range_start, last.bytes_sent) == (206, 200_000, SIZE - 200_000)
    assert digest == sha256_of(dest) == served and size == SIZE
    assert not part.exists()


async def test_a_part_held_by_another_live_process_is_left_alone_and_the_download_uses_a_part_of_its_own(
    tmp_path: Path,
) -> None:
    # the holder may be a runner stopped for good (SIGSTOP, a frozen VM) whose jobs were taken over: waiting for it
    # would wait for ever, and writing its file would mix two writers' bytes
    with running_emulator(config(result_size_bytes=SIZE)) as emu:
        async with finished_image(emu) as (client, gid, url):
            dest = tmp_path / "ox.png"
            part = partial_path(dest, gid)
            held = await prefix(url, 100_000)
            part.write_bytes(held)
            fd = os.open(part, os.O_RDWR)  # another open file description: another holder, as far as flock goes
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                digest, size = await client.download(url, dest, generation_id=gid)
                assert part.read_bytes() == held, "the held part was not touched"
                assert part_files(tmp_path) == [part.name], "the download's own part was renamed into place"
            finally:
                os.close(fd)
        last = emu.ledger.downloads_of(gid)[-1]
        served = emu.ledger.served_sha256[gid]
    assert last.status == 200 and not last.range_start, "the own part starts from the first byte"
    assert digest == sha256_of(dest) == served and size == SIZE


async def test_after_a_download_beside_a_held_part_the_parts_nobody_holds_are_removed(tmp_path: Path) -> None:
    with running_emulator(config(result_size_bytes=SIZE)) as emu:
        async with finished_image(emu) as (client, gid, url):
            dest = tmp_path / "ox.png"
            shared = partial_path(dest, gid)
            left = shared.with_name(shared.name.replace(".part", ".4242.part"))  # a dead process's own part
            other = partial_path(tmp_path / "ox2.png", gid)  # another file's part: not this download's
            for path in (shared, left, other):
                path.write_bytes(await prefix(url, 1000))
            fd = os.open(shared, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a stopped runner's: the download uses its own part
                await client.download(url, dest, generation_id=gid)
            finally:
                os.close(fd)
    assert part_files(tmp_path) == sorted([shared.name, other.name]), "the held part stays, the dead one's went"
    assert dest.stat().st_size == SIZE


async def test_a_part_that_is_not_a_prefix_of_the_file_is_refused_and_fetched_again_from_zero(tmp_path: Path) -> None:
    with running_emulator(config(result_size_bytes=SIZE)) as emu:
        async with finished_image(emu) as (client, gid, url):
            dest = tmp_path / "ox.png"
            part = partial_path(dest, gid)
            part.write_bytes(b"\x89PNG" + b"\0" * SIZE)  # longer than the file: bytes of something else
            with pytest.raises(ServerError, match="range not satisfiable"):
                await client.download(url, dest, generation_id=gid)
            assert part.read_bytes() == b"" and not dest.exists()
            digest, size = await client.download(url, dest, generation_id=gid)
        records = emu.ledger.downloads_of(gid)
        served = emu.ledger.served_sha256[gid]
    assert [(d.status, d.range_start) for d in records] == [(416, SIZE + 4), (200, None)]
    assert digest == sha256_of(dest) == served and size == SIZE
    assert not part.exists()


async def test_a_part_that_is_already_the_whole_file_is_finished_without_fetching_it_again(tmp_path: Path) -> None:
    # its writer died between the last byte and the rename: the server says 416 with the file's size, which is ours
    with running_emulator(config(result_size_bytes=SIZE)) as emu:
        async with finished_image(emu) as (client, gid, url):
            whole = (await client.http.get(url)).content
            dest = tmp_path / "ox.png"
            part = partial_path(dest, gid)
            part.write_bytes(whole)
            before = len(emu.ledger.downloads_of(gid))
            digest, size = await client.download(url, dest, generation_id=gid)
        records = emu.ledger.downloads_of(gid)[before:]
        served = emu.ledger.served_sha256[gid]
    assert [(d.status, d.range_start) for d in records] == [(416, SIZE)]
    assert digest == sha256_of(dest) == served and size == SIZE
    assert not part.exists()
