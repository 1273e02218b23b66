"""`batchgen doctor`: what a first real run needs, checked one thing at a time; values back, the CLI renders them.

Nothing here raises for a problem it finds: every problem is a failing `Check` that says what to fix. The key is
never part of a check, only where it came from.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import httpx
from sqlalchemy import text

from batchgen.core.credentials import MissingKeyError
from batchgen.core.jobs import JobStatus
from batchgen.core.manifest import Manifest
from batchgen.core.plan import Plan
from batchgen.engine.client import OxenClient, RetryPolicy
from batchgen.engine.manifests import load_manifest
from batchgen.engine.migrations import MIGRATIONS
from batchgen.engine.planning import make_plan
from batchgen.engine.store import Store
from batchgen.errors import ApiError, ApiUnreachableError, AuthError, BatchgenError, ManifestError

Mark = Literal["ok", "warn", "fail"]
CLOCK_WARN_AFTER = timedelta(seconds=30)
MB = 1_000_000
RESULT_SIZE = {"video": 10 * MB, "image": 2 * MB}  # a rough size of one result, for the free-space estimate
QUICK_RETRY = RetryPolicy(attempts=2, initial=0.2, maximum=1.0)  # a doctor answers in seconds, not minutes


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict: `name` (what was checked), its mark, one line saying what was found, and any lines below it."""

    name: str
    mark: Mark
    message: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Key:
    """Where the key comes from, never the key itself in anything shown; `problem`: why the auth file was unusable."""

    value: str | None
    source: str | None
    problem: str | None = None


async def diagnose(
    *,
    base_url: str,
    key: Key,
    db: Path | str,
    state_dir: Path,
    manifest_path: Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Check]:
    """Every check, in the order a user fixes them: the key, the API, the manifest and its models, the clock, the
    free space, the state database."""
    checks = [_key_check(key, base_url)]
    timeout = httpx.Timeout(15.0, connect=5.0)
    async with OxenClient(base_url, key.value, transport=transport, retry=QUICK_RETRY, timeout=timeout) as client:
        reachable = await _api_check(client, key, checks)
        if manifest_path is not None:
            await _manifest_checks(client, manifest_path, key, state_dir, reachable, checks)
        if reachable:
            checks.append(_clock_check(client.clock_offset))
    checks.append(_database_check(db))
    return checks


def _key_check(key: Key, base_url: str) -> Check:
    if key.value:
        return Check("API key", "ok", f"from {key.source}")
    if key.problem:
        return Check("API key", "fail", key.problem)
    return Check("API key", "fail", str(MissingKeyError(base_url)))


async def _api_check(client: OxenClient, key: Key, checks: list[Check]) -> bool:
    """GET /api/ai/queue; whether the API answered at all."""
    url = client.base_url
    try:
        await client.check_access()
    except ApiUnreachableError as exc:
        checks.append(Check("API", "fail", f"{url} does not answer: {exc} (check --base-url and the network)"))
        return False
    except AuthError:
        said = f"the API at {url} refused the key from {key.source}" if key.value else f"{url} answers, but needs a key"
        checks.append(Check("API", "fail", said))
        return True
    except ApiError as exc:
        checks.append(Check("API", "fail", f"{url} answered something unusable: {exc}"))
        return True
    checks.append(Check("API", "ok", f"{url} answers and accepts the key"))
    return True


async def _manifest_checks(
    client: OxenClient, path: Path, key: Key, state_dir: Path, reachable: bool, checks: list[Check]
) -> None:
    """The manifest reads, its models exist, its jobs plan; then the free space its results need."""
    try:
        manifest = load_manifest(path)
    except ManifestError as error:
        checks.append(_problems(path, error))
        return
    if not reachable:
        checks.append(Check("models", "warn", "not checked: the API does not answer"))
        return
    if not await _models_check(client, manifest, checks):
        return
    try:
        plan = await make_plan(path, base_url=client.base_url, api_key=key.value, state_dir=state_dir)
        plan.check()
    except ManifestError as error:
        checks.append(_problems(path, error))
        return
    except BatchgenError as error:  # over budget, or the API failed while planning
        checks.append(Check("manifest", "fail", str(error)))
        return
    checks.append(Check("manifest", "ok", f"{path}: {len(plan.jobs)} job(s) plan without a problem"))
    checks.append(_space_check(manifest.settings.out_dir, plan))


def _problems(path: Path, error: ManifestError) -> Check:
    """A manifest's problems as `plan` reports them: one line each, with its file:line."""
    return Check("manifest", "fail", f"{len(error.problems)} problem(s) in {path}", tuple(map(str, error.problems)))


async def _models_check(client: OxenClient, manifest: Manifest, checks: list[Check]) -> bool:
    names = manifest.model_names()
    missing = []
    try:
        for name in names:
            if await client.get_model(name) is None:
                missing.append(name)
    except ApiError as exc:
        checks.append(Check("models", "fail", f"cannot read the models: {exc}"))
        return False
    if missing:
        listed = ", ".join(missing)
        checks.append(Check("models", "fail", f"no such model at {client.base_url}: {listed} (see GET /api/ai/models)"))
        return False
    checks.append(Check("models", "ok", f"{', '.join(names)} exist"))
    return True


def _clock_check(offset: timedelta | None) -> Check:
    if offset is None:
        return Check("clock", "warn", "the API sent no Date header: the clocks could not be compared")
    seconds = offset.total_seconds()
    way = "ahead of" if seconds > 0 else "behind"
    if abs(offset) > CLOCK_WARN_AFTER:
        return Check(
            "clock",
            "warn",
            f"the server's clock is {abs(seconds):.0f} s {way} this machine's; only a warning: reconciling lost "
            "enqueues uses the server's clock, but fix this machine's time (NTP) if it is the wrong one",
        )
    return Check("clock", "ok", f"within {abs(seconds):.0f} s of the server's")


def _space_check(out_dir: Path, plan: Plan) -> Check:
    """Free space at the nearest existing folder of `out_dir` against a rough size of every result."""
    needed = sum(RESULT_SIZE.get(job.media_type, 2 * MB) for job in plan.jobs)
    where = out_dir.absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    said = (
        f"{_size(free)} free at {where}; the results need about {_size(needed)} "
        "(an estimate: 10 MB a video, 2 MB an image)"
    )
    return Check("free space", "ok" if free >= needed else "fail", said)


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _database_check(db: Path | str) -> Check:
    if isinstance(db, Path) and not db.exists():
        return Check("state database", "ok", f"will be created at {db}")
    try:
        store = Store.open(db, create=False)
    except BatchgenError as error:
        return Check("state database", "fail", str(error))
    try:
        with store.engine.connect() as conn:
            applied = conn.execute(text("SELECT count(*) FROM schema_migrations")).scalar_one()
        runs = store.list_runs()
        details = []
        for run in runs:
            unknown = store.status_counts(run.id).get(JobStatus.UNKNOWN, 0)
            if unknown:
                details.append(
                    f"run {run.name}: {unknown} job(s) unknown (their enqueue could not be checked): "
                    f"`batchgen resume {run.name} --resubmit-unknown` sends them again"
                )
            if run.owner is not None:
                details.append(f"run {run.name} is being run now by {run.owner}")
        said = f"{store.where}: schema {applied}/{len(MIGRATIONS)} migrations, {len(runs)} run(s)"
        return Check("state database", "warn" if details else "ok", said, tuple(details))
    finally:
        store.close()
