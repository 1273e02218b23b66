"""A layer: some fields of a job that were all written in one place, with where each was written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Layer:
    """Fields from one place: the defaults, one matrix value, one zip position, one `jobs` entry or one row.

    A job is a stack of layers; later layers override earlier ones. Keeping the stack (instead of copying
    each field's origin into every job) is what lets a 100,000-job plan still locate each problem cheaply.
    """

    values: Mapping[str, Any]
    origin: str  # file:line of the whole layer
    field_origins: Mapping[str, str] | None = None  # file:line of each field, when finer than `origin`

    def origin_of(self, name: str) -> str:
        """Where the field `name` was written."""
        if self.field_origins is not None:
            return self.field_origins.get(name, self.origin)
        return self.origin
