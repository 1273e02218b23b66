"""Where state lives: a SQLite file's path, or a PostgreSQL URL. The one rule that tells them apart."""

from __future__ import annotations

DATABASE_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def is_database_url(text: str) -> bool:
    """A PostgreSQL URL (`postgresql://user@host:5432/db`), as opposed to a SQLite file's path."""
    return "://" in text and text.split("://", 1)[0].lower() in DATABASE_SCHEMES
