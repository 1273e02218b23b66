"""What tests import: bounded waits, manifests on disk, runs against the emulator with fast timings, the
exactly-once check, and `require` for a test that needs something of the machine.

conftest.py files hold fixtures only. Tests that drive batchgen as a separate process import from
kit_processes.py; tests that turn a fault knob on prove it fired with kit_faults.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from batchgen.api import RunSummary, run_async
from batchgen.core.jobs import JobRow, JobStatus
from batchgen.emulator import RunningEmulator
from batchgen.engine.client import RetryPolicy
from batchgen.engine.store import Store

T = TypeVar("T")

# ---- the machine ------------------------------------------------------------------------------------------------


def in_ci() -> bool:
    """Whether this is CI (CI=true, as CI services and .ci/run set it): there, nothing may be skipped."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(condition: object, reason: str) -> None:
    """Skip the calling test when `condition` is false (a missing tool or privilege), except under CI, which must
    provide it (.ci/run installs it): there the test fails, so a test that never ran cannot look like a pass."""
    if condition:
        return
    import pytest  # here, not at the top: runner_entry.py imports this module in every runner process it starts

    if in_ci():
        pytest.fail(f"CI must provide this, and does not: {reason}", pytrace=False)
    pytest.skip(reason)


# ---- waiting, always bounded -------------------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = 0.005,
    process: subprocess.Popen[str] | None = None,
) -> T:
    """Poll `condition` until it is truthy and return its value; fail after `timeout` s, or as soon as `process`
    (when given) exits first, with its output."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the process exited ({process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def wait_for_async(
    condition: Callable[[], T | None], *, within: float = 20.0, what: str = "the condition", interval: float = 0.02
) -> T:
    """`wait_for` inside a running event loop: the ledger has no async signal, so this polls, yielding between."""
    try:
        with anyio.fail_after(within):
            while True:
                value = condition()
                if value:
                    return value
                await anyio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None


# ---- manifests ---------------------------------------------------------------------------------------------------

VIDEO_MODEL = "openai-sora-2-pro"  # 4 s clips at the emulator's placeholder $1.20 each
IMAGE_MODEL = "flux-1-dev"  # small PNGs: quick on the emulator
MODEL_PARAMS = {VIDEO_MODEL: {"seconds": "4"}, IMAGE_MODEL: {"aspect_ratio": "1:1"}}


def clips(n: int) -> list[str]:
    """`n` distinct prompts."""
    return [f"clip {i} of an ox" for i in range(n)]


def write_manifest(
    directory: Path,
    prompts: int | Sequence[str] = 6,
    *,
    model: str = VIDEO_MODEL,
    repeat: int = 1,
    concurrency: int = 4,
    extra: str = "",
    name: str = "batch",
) -> Path:
    """`DIRECTORY/NAME.yaml`: one job per prompt (or `clips(prompts)`) x `repeat`, then `extra` YAML lines."""
    texts = clips(prompts) if isinstance(prompts, int) else list(prompts)
    params = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in MODEL_PARAMS[model].items())
    path = directory / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nmodel: {model}\nparams:\n{params}matrix:\n  prompt: {json.dumps(texts)}\n"
        f"repeat: {repeat}\nconcurrency: {concurrency}\n{extra}",
        encoding="utf-8",
    )
    return path


# ---- runs against the emulator -------------------------------------------------------------------------------------

FAST_RETRY = RetryPolicy(attempts=6, initial=0.01, maximum=0.05)
FAST = {
    "silent_after": 0.4,
    "poll_interval": 0.2,
    "reconcile_grace": 0.05,
    "backoff_initial": 0.02,
    "backoff_max": 0.2,
    "submit_rate": 1000.0,
    "poll_first_after": 0.3,  # a stream that is not live: first poll before any job finished
    "poll_min_step": 0.05,
}


async def run_against(emu: RunningEmulator, manifest: Path, tmp_path: Path, **kwargs: Any) -> RunSummary:
    """`batchgen run MANIFEST` through the Python API on `emu`, with FAST timings (override with options={...})
    and FAST_RETRY (or retry=...); the database is TMP_PATH/state/batchgen.db (or db=, a path or a PostgreSQL
    URL), the files go to TMP_PATH/out."""
    options = {**FAST, **kwargs.pop("options", {})}
    return await run_async(
        manifest,
        db=kwargs.pop("db", tmp_path / "state" / "batchgen.db"),
        base_url=emu.base_url,
        api_key=kwargs.pop("api_key", emu.api_key),
        out=tmp_path / "out",
        retry=kwargs.pop("retry", FAST_RETRY),
        **kwargs,
        **options,
    )


async def interrupt_when(work: Callable[[], Coroutine[Any, Any, object]], ready: Callable[[], object]) -> None:
    """Start `work`, wait until `ready()`, then cancel it at its next await: what Ctrl-C does to a runner."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(work)
        await wait_for_async(ready, what="the moment to interrupt")
        tg.cancel_scope.cancel()


def job_rows(db: Path | str) -> list[JobRow]:
    """Every job of the database's latest run."""
    store = Store.open(db, create=False)
    try:
        return store.job_rows(store.get_run(None).id)
    finally:
        store.close()


def assert_exactly_once(emu: RunningEmulator, db: Path | str, *, allow_failed: bool = False) -> list[JobRow]:
    """Every job ended once, no generation was created twice for a job, every file is what the emulator served."""
    rows = job_rows(db)
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


def keys_sent_elsewhere(emu: RunningEmulator) -> list[Any]:
    """Downloads that carried the Authorization header to a host other than the API's (127.0.0.1)."""
    return [d for d in emu.ledger.downloads if d.authorized and d.host.split(":")[0] != "127.0.0.1"]
