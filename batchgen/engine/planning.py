"""Planning with I/O: load the manifest, fetch model entries and image headers, then build the plan (pure).

`make_plan` is what both `batchgen plan` and the runner call. It never enqueues anything.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx

from batchgen.core.images import HEAD_BYTES, image_size
from batchgen.core.manifest import Manifest
from batchgen.core.origins import key_may_go_to
from batchgen.core.plan import Plan, RegistryView, draft_plan
from batchgen.core.validation import ImageProbe
from batchgen.engine.manifests import load_manifest
from batchgen.engine.registry import ModelRegistry

PROBE_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
PROBE_CONCURRENCY = 8


async def make_plan(
    manifest_path: Path | str,
    *,
    base_url: str,
    api_key: str | None,
    state_dir: Path,
    http: httpx.AsyncClient | None = None,
    max_cost: float | None = None,
    offline: bool = False,
) -> Plan:
    """Expand, validate and price a manifest.

    Raises ManifestError when the manifest itself cannot be read; problems with individual jobs are collected
    in `Plan.problems` instead (call `Plan.check()` to raise them, and the budget verdict, as errors).
    With `offline`, only cached model entries are used and no image is fetched.
    """
    with collector_paused():
        manifest = load_manifest(manifest_path)
    if http is None:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            return await _plan(manifest, client, base_url, api_key, state_dir, max_cost, offline)
    return await _plan(manifest, http, base_url, api_key, state_dir, max_cost, offline)


async def _plan(
    manifest: Manifest,
    http: httpx.AsyncClient,
    base_url: str,
    api_key: str | None,
    state_dir: Path,
    max_cost: float | None,
    offline: bool,
) -> Plan:
    registry = ModelRegistry(http, base_url=base_url, api_key=api_key, state_dir=state_dir, offline=offline)
    view: RegistryView = await registry.lookup(manifest.model_names())
    with collector_paused():
        draft = draft_plan(manifest, view)
    urls = draft.images_to_probe
    if offline:
        probes = {url: ImageProbe(None, "offline") for url in urls}
    else:
        probes = await probe_images(http, urls, base_url=base_url, api_key=api_key)
    with collector_paused():
        return draft.finish(probes, max_cost=max_cost)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a plan is made.

    A plan makes a few objects per job, none of them in a cycle, and keeps them all: each collection would
    walk every one kept so far, for nothing (a fifth of planning a million jobs). Collection resumes after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def probe_images(
    http: httpx.AsyncClient, urls: Iterable[str], *, base_url: str, api_key: str | None
) -> dict[str, ImageProbe]:
    """Fetch the first HEAD_BYTES of each http(s) URL and read its image size; failures say why."""
    results: dict[str, ImageProbe] = {}
    limiter = anyio.CapacityLimiter(PROBE_CONCURRENCY)

    async def probe(url: str) -> None:
        async with limiter:
            results[url] = await _probe_one(http, url, api_key if key_may_go_to(url, base_url) else None)

    async with anyio.create_task_group() as group:
        for url in urls:
            group.start_soon(probe, url)
    return results


async def _probe_one(http: httpx.AsyncClient, url: str, api_key: str | None) -> ImageProbe:
    if urlsplit(url).scheme not in ("http", "https"):
        return ImageProbe(None, "not an http(s) URL")
    headers = {"Range": f"bytes=0-{HEAD_BYTES - 1}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    head = bytearray()
    try:
        # httpx drops the Authorization header on a redirect to any other scheme, host or port
        async with http.stream("GET", url, headers=headers, timeout=PROBE_TIMEOUT, follow_redirects=True) as response:
            if response.status_code not in (200, 206):
                return ImageProbe(None, f"HTTP {response.status_code}")
            # Servers may ignore Range and send the whole file: stop reading once the header is in hand.
            async for chunk in response.aiter_bytes():
                head.extend(chunk)
                if len(head) >= HEAD_BYTES:
                    break
    except httpx.HTTPError as error:
        return ImageProbe(None, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
    size = image_size(bytes(head))
    return ImageProbe(size, "" if size else "not a PNG, JPEG, WebP or GIF image (or its header is too far in)")
