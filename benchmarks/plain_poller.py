"""The baseline: the client Oxen's docs suggest, written straightforwardly.

An asyncio semaphore of C; each job is enqueued, then polled every 5 s until it is terminal, then its file is
downloaded. No retries, no state, no event stream: what a user would otherwise write.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class PlainResult:
    noticed: dict[str, float] = field(default_factory=dict)  # generation id -> time.time() it was seen terminal
    failed: int = 0
    elapsed_s: float = 0.0


async def run_plain(
    base_url: str,
    api_key: str,
    bodies: list[dict[str, Any]],
    *,
    concurrency: int,
    poll_every: float = 5.0,
    out_dir: Path | None = None,
) -> PlainResult:
    """Run every body to its end; download results into `out_dir` (None: no downloads)."""
    result = PlainResult()
    started = time.monotonic()
    slots = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {api_key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:

        async def one(index: int, body: dict[str, Any]) -> None:
            async with slots:
                reply = await http.post("/api/ai/queue", json=body)
                reply.raise_for_status()
                generation_id = reply.json()["generations"][0]["generation_id"]
                while True:
                    await asyncio.sleep(poll_every)
                    row = (await http.get(f"/api/ai/queue/{generation_id}")).json()
                    if row["status"] in TERMINAL:
                        break
                result.noticed[generation_id] = time.time()
                if row["status"] != "succeeded":
                    result.failed += 1
                    return
                if out_dir is not None:
                    media = await http.get(row["result_url"])
                    media.raise_for_status()
                    (out_dir / f"{index}.mp4").write_bytes(media.content)

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    result.elapsed_s = time.monotonic() - started
    return result
