"""The model registry: `GET {base_url}/api/ai/models/{id}`, cached under `<state>/models/<id>.json`.

The fresh answer wins when there is one (prices and schemas change); the cache answers when the registry
cannot, so `plan` works offline after one fetch. No key is needed; a given key is sent only to `base_url`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from batchgen.core.models import ModelInfo
from batchgen.core.plan import RegistryView
from batchgen.engine.outputs import write_atomically
from batchgen.errors import OutputError

REGISTRY_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def cache_path(state_dir: Path, model_id: str) -> Path:
    """Where the cached entry of `model_id` lives (ids are quoted so `ns/model` stays one file)."""
    return state_dir / "models" / f"{quote(model_id, safe='')}.json"


class ModelRegistry:
    """Looks up model entries over HTTP, falling back to (and refreshing) the on-disk cache."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | None,
        state_dir: Path,
        offline: bool = False,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.state_dir = state_dir
        self.offline = offline
        self._known_ids: tuple[str, ...] | None = None

    async def lookup(self, model_ids: Iterable[str]) -> RegistryView:
        """Find every model; unknown ones get suggestions, unreachable ones a reason."""
        models: dict[str, ModelInfo] = {}
        unknown: dict[str, tuple[str, ...]] = {}
        unavailable: dict[str, str] = {}
        for model_id in dict.fromkeys(model_ids):
            outcome = await self._fetch(model_id)
            if isinstance(outcome, ModelInfo):
                models[model_id] = outcome
            elif outcome is None:
                unknown[model_id] = await self.known_ids()
            else:
                unavailable[model_id] = outcome
        return RegistryView(models, unknown, unavailable)

    async def _fetch(self, model_id: str) -> ModelInfo | str | None:
        """The entry, None when the registry says there is no such model, or why neither could be found."""
        cached = self.read_cache(model_id)
        if self.offline:
            return cached or "offline and not in the model cache"
        url = f"{self.base_url}/api/ai/models/{quote(model_id, safe='')}"
        try:
            response = await self.http.get(url, headers=self.headers, timeout=REGISTRY_TIMEOUT)
        except httpx.HTTPError as error:
            return cached or f"the registry at {self.base_url} is unreachable ({type(error).__name__}) and no cache"
        if response.status_code == 404:
            return None
        data = _json_object(response)
        if response.status_code != 200 or data is None:
            return cached or f"the registry answered HTTP {response.status_code} and there is no cache"
        enveloped = data.get("data")
        entry: dict[str, Any] = enveloped if isinstance(enveloped, dict) else data  # tolerate {"data": {...}}
        entry = {**entry, "id": entry.get("id") or model_id}
        self.write_cache(model_id, entry)
        return ModelInfo.from_api(entry)

    async def known_ids(self) -> tuple[str, ...]:
        """Every model id the registry lists (for did-you-mean), or the cached ids when it cannot say."""
        if self._known_ids is None:
            ids: list[str] = []
            if not self.offline:
                try:
                    response = await self.http.get(
                        f"{self.base_url}/api/ai/models", headers=self.headers, timeout=REGISTRY_TIMEOUT
                    )
                    data = _json_object(response)
                    listed = data.get("data") if data is not None else None
                    if isinstance(listed, list):
                        ids = [str(item["id"]) for item in listed if isinstance(item, dict) and "id" in item]
                except httpx.HTTPError:
                    ids = []
            if not ids:
                ids = [path.stem for path in sorted((self.state_dir / "models").glob("*.json"))]
            self._known_ids = tuple(ids)
        return self._known_ids

    def read_cache(self, model_id: str) -> ModelInfo | None:
        """The cached entry, or None when there is none (or it is unreadable: the cache is only a cache)."""
        try:
            data = json.loads(cache_path(self.state_dir, model_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return ModelInfo.from_api(data) if isinstance(data, dict) else None

    def write_cache(self, model_id: str, entry: dict[str, Any]) -> None:
        """Store an entry atomically, so a crash never leaves half a file; a read-only state dir is not fatal."""
        try:
            write_atomically(
                cache_path(self.state_dir, model_id), lambda handle: json.dump(entry, handle, indent=2, sort_keys=True)
            )
        except OutputError:
            return


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
