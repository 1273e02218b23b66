"""What batchgen knows about a model: its id, its output media type, its request schema and its pricing.

Built from the registry's model object (`GET /api/ai/models/{id}`, oxen-api.md §12), which is also what the
cache stores verbatim, so a cached entry and a fresh one give the same ModelInfo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MediaType = Literal["video", "image"]

# Accepted by the queue itself for every model (oxen-api.md §3), so they are never "unknown parameters".
QUEUE_PARAMS = frozenset({"target_namespace", "target_repo", "target_directory"})


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One registry entry, reduced to what planning needs; `raw` keeps the whole object for the cache."""

    id: str
    media_type: MediaType
    request_schema: Mapping[str, Any] | None
    pricing: Mapping[str, Any] | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # Looked up once per field of every job: precomputed, not derived from the schema each time.
    param_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_names", QUEUE_PARAMS | frozenset(self.properties))

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Read a registry model object; tolerant of missing fields (the hub's shape moves fast)."""
        model_id = str(data.get("id") or data.get("name") or "")
        schema = data.get("request_schema")
        pricing = data.get("pricing")
        return cls(
            id=model_id,
            media_type=_media_type_of(data),
            request_schema=schema if isinstance(schema, Mapping) else None,
            pricing=pricing if isinstance(pricing, Mapping) else None,
            raw=dict(data),
        )

    @property
    def properties(self) -> Mapping[str, Any]:
        """The schema's `properties` (empty when the schema is unknown)."""
        if self.request_schema is None:
            return {}
        props = self.request_schema.get("properties")
        return props if isinstance(props, Mapping) else {}

    def is_param(self, name: str) -> bool:
        """True when `name` is sent to the API for this model (a schema property or a queue-level field)."""
        return name in self.param_names

    def default_of(self, name: str) -> Any:
        """The schema's `default` for a parameter, or None."""
        prop = self.properties.get(name)
        return prop.get("default") if isinstance(prop, Mapping) else None


def _media_type_of(data: Mapping[str, Any]) -> MediaType:
    capabilities = data.get("capabilities")
    outputs = capabilities.get("output") if isinstance(capabilities, Mapping) else None
    if isinstance(outputs, list):
        if "video" in outputs:
            return "video"
        if "image" in outputs:
            return "image"
    endpoint = str(data.get("endpoint") or "")
    if "image" in endpoint:
        return "image"
    pricing = data.get("pricing")
    if isinstance(pricing, Mapping) and pricing.get("method") == "per_image":
        return "image"
    return "video"
