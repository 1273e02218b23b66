"""Oxen's own auth file, read the way `oxen config --auth HOST TOKEN` (and the `oxenai` package) write it:

    [[host_configs]]
    host = "hub.oxen.ai"          # a host, maybe with a port: "localhost:3000"
    auth_token = "..."

Pure: where the file is (from an environment mapping) and which token in its text belongs to an API's base URL.
Reading the file is the caller's job (`batchgen.settings`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from batchgen.errors import AuthError, BatchgenError

AUTH_FILE_NAME = "auth_config.toml"
DEFAULT_PORTS = {"http": 80, "https": 443}


class CredentialsError(BatchgenError):
    """Oxen's auth file exists but cannot be read or parsed (the message names the file and the line)."""


class MissingKeyError(AuthError):
    """No key anywhere (no OXEN_API_KEY, no entry for the API's host in the auth file): said before any request."""

    def __init__(self, base_url: str) -> None:
        host = api_host(base_url) or "HOST"
        super().__init__(f"no API key: set OXEN_API_KEY or run `oxen config --auth {host} TOKEN`")


def auth_file_path(env: Mapping[str, str]) -> Path | None:
    """`$OXEN_CONFIG_DIR/auth_config.toml`, else `$HOME/.config/oxen/auth_config.toml`; None with neither set."""
    if env.get("OXEN_CONFIG_DIR"):
        return Path(env["OXEN_CONFIG_DIR"]) / AUTH_FILE_NAME
    if env.get("HOME"):
        return Path(env["HOME"]) / ".config" / "oxen" / AUTH_FILE_NAME
    return None


def api_host(base_url: str) -> str:
    """The host an auth file names for `base_url`: `host`, or `host:port` when the port is not the scheme's default."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return host
    if port is None or port == DEFAULT_PORTS.get(parts.scheme.lower()):
        return host
    return f"{host}:{port}"


def _normalised(entry_host: str, scheme: str) -> str:
    """An entry's host as `api_host` spells it: lower case, a default port (or a stray scheme or slash) dropped."""
    text = entry_host.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and "]" not in port and int(port) == DEFAULT_PORTS.get(scheme):
        return host
    return text


def token_for(text: str, base_url: str, where: str) -> str | None:
    """The `auth_token` of the `[[host_configs]]` entry whose host is `base_url`'s host[:port], or None.

    `where` names the file in the CredentialsError raised for text that is not TOML (tomllib's message carries the
    line and column) or a `host_configs` that is not a list of tables."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CredentialsError(f"{where}: not valid TOML: {exc} (fix it, or set OXEN_API_KEY)") from None
    entries = doc.get("host_configs", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CredentialsError(f"{where}: host_configs must be a list of [[host_configs]] tables (or set OXEN_API_KEY)")
    wanted = api_host(base_url)
    scheme = urlsplit(base_url).scheme.lower()
    for entry in entries:
        host, token = entry.get("host"), entry.get("auth_token")
        if isinstance(host, str) and _normalised(host, scheme) == wanted and isinstance(token, str) and token:
            return token
    return None
