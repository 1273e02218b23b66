"""Runner test kit: a manifest on disk, an emulator on a free loopback port, a run with fast timings, and
the exactly-once checks every fault test repeats."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.api import RunSummary, run_async
from batchgen.core.jobs import JobStatus
from batchgen.emulator import RunningEmulator
from batchgen.engine.client import RetryPolicy
from batchgen.engine.store import Store

FAST_RETRY = RetryPolicy(attempts=6, initial=0.01, maximum=0.05)
FAST = {
    "silent_after": 0.4,
    "poll_interval": 0.2,
    "reconcile_grace": 0.05,
    "backoff_initial": 0.02,
    "backoff_max": 0.2,
    "submit_rate": 1000.0,
}


def write_manifest(directory: Path, n_prompts: int = 6, repeat: int = 1, *, extra: str = "") -> Path:
    prompts = ", ".join(f'"clip {i} of an ox"' for i in range(n_prompts))
    path = directory / "batch.yaml"
    path.write_text(
        f"""name: batch
model: openai-sora-2-pro
params:
  seconds: "4"
matrix:
  prompt: [{prompts}]
repeat: {repeat}
concurrency: 4
{extra}""",
        encoding="utf-8",
    )
    return path


async def run_against(emu: RunningEmulator, manifest: Path, tmp_path: Path, **kwargs: Any) -> RunSummary:
    options = {**FAST, **kwargs.pop("options", {})}
    return await run_async(
        manifest,
        db=tmp_path / "state" / "batchgen.db",
        base_url=emu.base_url,
        api_key=kwargs.pop("api_key", emu.api_key),
        out=tmp_path / "out",
        retry=FAST_RETRY,
        **kwargs,
        **options,
    )


def assert_exactly_once(emu: RunningEmulator, db: Path, *, allow_failed: bool = False) -> list[Any]:
    """Every job ended once, no generation was created twice for a job, every file is what the emulator served."""
    store = Store.open(db, create=False)
    try:
        rows = store.job_rows(store.get_run(None).id)
    finally:
        store.close()
    statuses = {r.status for r in rows}
    allowed = {JobStatus.SUCCEEDED, JobStatus.FAILED} if allow_failed else {JobStatus.SUCCEEDED}
    assert statuses <= allowed, [(r.job_key, r.status, r.error) for r in rows if r.status not in allowed]
    ids = [r.generation_id for r in rows if r.generation_id]
    assert len(ids) == len(set(ids)), "two jobs own the same generation"
    created = emu.ledger.created_ids
    assert len(created) == len(rows), f"{len(created)} generations created for {len(rows)} jobs"
    served = emu.ledger.served_sha256
    for row in rows:
        if row.status is JobStatus.SUCCEEDED:
            assert row.output_path and Path(row.output_path).is_file()
            data = Path(row.output_path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row.sha256 == served[row.generation_id or ""]
            assert len(data) == row.bytes
    return rows


@pytest.fixture
def manifest_factory(tmp_path: Path) -> Callable[..., Path]:
    return lambda **kw: write_manifest(tmp_path, **kw)


async def wait_for(predicate: Callable[[], bool], *, within_s: float = 20.0, step: float = 0.02) -> None:
    """Poll a condition on the emulator's thread (the ledger has no async signal); bounded, fails on timeout."""
    for _ in range(int(within_s / step)):
        if predicate():
            return
        await anyio.sleep(step)
    raise AssertionError(f"condition not met within {within_s} s")


async def interrupt_when(work: Callable[[], Awaitable[object]], ready: Callable[[], bool]) -> None:
    """Start `work`, wait until `ready()`, then cancel it at its next await: what Ctrl-C does to a runner."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(work)
        await wait_for(ready)
        tg.cancel_scope.cancel()
