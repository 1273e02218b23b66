"""Paid-but-unused generations: listed loudly, and downloadable, since they are paid for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchgen.engine.client import OxenClient
from batchgen.engine.store import LedgerRow, RunInfo, Store
from batchgen.errors import ApiError, AuthError, OutputError, RequestRejectedError, ServerError

SIGNATURES = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"RIFF", ".webp"))


@dataclass(frozen=True, slots=True)
class FetchedUnused:
    generation_id: str
    path: Path | None  # None: it could not be fetched
    reason: str = ""


async def fetch_unused(
    store: Store, run: RunInfo, base_url: str, api_key: str | None, dest_dir: Path
) -> list[FetchedUnused]:
    """Download every succeeded generation of the run that no job uses into `dest_dir` as <generation_id>.<ext>."""
    rows: list[LedgerRow] = store.unused_generations(run.id)
    fetched: list[FetchedUnused] = []
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any request
    except OSError as exc:
        raise OutputError(f"cannot create {dest_dir}: {exc.strerror}") from exc
    async with OxenClient(base_url, api_key) as client:
        for row in rows:
            try:
                remote = await client.current_state(row.generation_id)
            except AuthError:
                raise
            except ApiError as exc:
                fetched.append(FetchedUnused(row.generation_id, None, str(exc)))
                continue
            url = (remote.result_url if remote else None) or row.result_url
            if remote is None or remote.status != "succeeded" or not url:
                status = remote.status if remote else "unknown to the API"
                fetched.append(FetchedUnused(row.generation_id, None, f"not downloadable ({status})"))
                continue
            dest = dest_dir / row.generation_id
            try:
                await client.download(url, dest, generation_id=row.generation_id)
                dest = dest.rename(dest.with_suffix(_extension(dest)))
            except (RequestRejectedError, ServerError) as exc:
                fetched.append(FetchedUnused(row.generation_id, None, str(exc)))
                continue
            except OSError as exc:
                raise OutputError(f"cannot write {dest}: {exc.strerror}") from exc
            fetched.append(FetchedUnused(row.generation_id, dest))
    return fetched


def _extension(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(16)
    return next((ext for magic, ext in SIGNATURES if head.startswith(magic)), ".mp4")
