"""Times as the store keeps them: aware UTC. A module of its own, importing nothing but the standard library, so
that `status`'s light read of a SQLite file (engine/glance.py) judges leases with the same code as the store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["as_utc", "stored_time", "utcnow"]


def utcnow() -> datetime:
    """Aware UTC: SQLModel's column type refuses naive datetimes and gives aware ones back."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def stored_time(value: Any) -> Any:
    """A time as SQLite's driver hands it back, its text (`YYYY-MM-DD HH:MM:SS.ffffff`, naive UTC), parsed as
    SQLAlchemy parses it; anything else (a datetime, None) as it is."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value
