"""Where batchgen talks to and keeps its state: one resolver for the CLI and the Python API.

Each setting comes from the first of these that has it (an empty environment variable counts as unset):

    setting     flag / argument     run in the database     environment          default
    base_url    --base-url          the run's base_url      BATCHGEN_BASE_URL    https://hub.oxen.ai
    api_key     api_key= (Python)                           OXEN_API_KEY         none
    db          --db (a path, or postgresql://...)          BATCHGEN_DB          state/batchgen.db
    state_dir                                               BATCHGEN_STATE_DIR   the database's folder (state/ for a URL)

A run remembers the API it was started on, and its generations live there only, so resuming, cancelling or
fetching from it goes back to that API even when BATCHGEN_BASE_URL now names another one; only a flag moves it.

The resolver is pure: the environment is a mapping passed in. Only the edges a user touches (`batchgen.cli` and
the public entry points of `batchgen.api`) pass `os.environ`; nothing else reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from batchgen.core.locations import is_database_url

DEFAULT_BASE_URL = "https://hub.oxen.ai"
DEFAULT_DB = Path("state") / "batchgen.db"


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved settings of one command or call."""

    base_url: str
    api_key: str | None  # never printed, never written anywhere
    db: Path | str  # a SQLite file, or a PostgreSQL URL (a str)
    state_dir: Path  # the model cache lives in its `models/` folder

    def model_cache(self, *, emulated: bool) -> Path:
        """The state dir the model registry caches into: the emulator's placeholder prices never land in the real one."""
        return self.state_dir / "emulator" if emulated else self.state_dir


def resolve_settings(
    env: Mapping[str, str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    db: str | Path | None = None,
    run_base_url: str | None = None,
) -> Settings:
    """Resolve flags, the run's stored base URL and the environment `env` into Settings (see the module's table)."""
    given = str(db) if db else (env.get("BATCHGEN_DB") or str(DEFAULT_DB))
    location: Path | str = given if is_database_url(given) else Path(given)
    default_state = DEFAULT_DB.parent if isinstance(location, str) else location.parent
    return Settings(
        base_url=base_url or run_base_url or env.get("BATCHGEN_BASE_URL") or DEFAULT_BASE_URL,
        api_key=api_key if api_key is not None else (env.get("OXEN_API_KEY") or None),
        db=location,
        state_dir=Path(env.get("BATCHGEN_STATE_DIR") or default_state),
    )
