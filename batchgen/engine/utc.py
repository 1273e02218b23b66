"""Times as the store keeps them: aware UTC. A module of its own, importing nothing but the standard library, so
that `status`'s light read of a SQLite file (engine/glance.py) judges leases with the same code as the store."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc", "utcnow"]


def utcnow() -> datetime:
    """Aware UTC: SQLModel's column type refuses naive datetimes and gives aware ones back."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
