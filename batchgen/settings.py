"""Where batchgen talks to and keeps its state: one resolver for the CLI and the Python API.

Each setting comes from the first of these that has it (an empty environment variable counts as unset):

    setting     flag / argument     run in the database     environment          default
    base_url    --base-url          the run's base_url      BATCHGEN_BASE_URL    https://hub.oxen.ai
    api_key     api_key= (Python)                           OXEN_API_KEY         Oxen's auth file, else none
    db          --db (a path, or postgresql://...)          BATCHGEN_DB          state/batchgen.db
    state_dir                                               BATCHGEN_STATE_DIR   the database's folder (state/ for a URL)

A run remembers the API it was started on, and its generations live there only, so resuming, cancelling or
fetching from it goes back to that API even when BATCHGEN_BASE_URL now names another one; only a flag moves it.

Oxen's auth file is `$OXEN_CONFIG_DIR/auth_config.toml`, else `~/.config/oxen/auth_config.toml` (`oxen config --auth
HOST TOKEN` writes it); the token of the entry whose host is the base URL's host[:port] is used. It is only read:
never copied, and the key goes only where `core.origins` lets it. A file that cannot be parsed does not stop commands
that need no key; `Settings.require_key()` raises its error (file and line) for those that do.

The environment is a mapping passed in. Only the edges a user touches (`batchgen.cli` and
the public entry points of `batchgen.api`) pass `os.environ`; nothing else reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batchgen.core.credentials import CredentialsError, MissingKeyError, auth_file_path, token_for
from batchgen.core.locations import is_database_url

DEFAULT_BASE_URL = "https://hub.oxen.ai"
DEFAULT_DB = Path("state") / "batchgen.db"


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved settings of one command or call."""

    base_url: str
    api_key: str | None = field(repr=False)  # never printed, never written anywhere
    db: Path | str  # a SQLite file, or a PostgreSQL URL (a str)
    state_dir: Path  # the model cache lives in its `models/` folder
    key_source: str | None = None  # "OXEN_API_KEY", "api_key=", "the auth file PATH"; None: no key
    key_problem: str | None = None  # why the auth file could not be read (file and line), when it could not

    def require_key(self) -> str:
        """The key, or the error that says how to give one (or what is wrong with the auth file): before any request."""
        if self.api_key:
            return self.api_key
        if self.key_problem:
            raise CredentialsError(self.key_problem)
        raise MissingKeyError(self.base_url)

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
    url = base_url or run_base_url or env.get("BATCHGEN_BASE_URL") or DEFAULT_BASE_URL
    key, source, problem = _key(env, api_key, url)
    return Settings(
        base_url=url,
        api_key=key,
        db=location,
        state_dir=Path(env.get("BATCHGEN_STATE_DIR") or default_state),
        key_source=source,
        key_problem=problem,
    )


def _key(env: Mapping[str, str], given: str | None, base_url: str) -> tuple[str | None, str | None, str | None]:
    """(key, where it came from, why the auth file could not be used): api_key=, OXEN_API_KEY, Oxen's auth file."""
    if given is not None:  # an explicit "" means no key, and no auth file either
        return (given, "api_key=", None) if given else ("", None, None)
    if env.get("OXEN_API_KEY"):
        return env["OXEN_API_KEY"], "OXEN_API_KEY", None
    path = auth_file_path(env)
    if path is None:
        return None, None, None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, None, f"cannot read Oxen's auth file {path}: {exc} (fix it, or set OXEN_API_KEY)"
    try:
        token = token_for(text, base_url, str(path))
    except CredentialsError as exc:
        return None, None, str(exc)
    return (token, f"the auth file {path}", None) if token else (None, None, None)
