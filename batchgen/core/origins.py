"""Where the API key may go: the one rule, used by every request batchgen makes."""

from __future__ import annotations

from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return ("", "", None)
    return (scheme, (parts.hostname or "").lower(), port if port is not None else DEFAULT_PORTS.get(scheme))


def same_origin(url: str, base_url: str) -> bool:
    """Same scheme, host and port (an explicit default port equals none)."""
    return _origin(url) == _origin(base_url) and _origin(url)[0] != ""


def key_may_go_to(url: str, base_url: str) -> bool:
    """The API key is sent only to the API's own origin, and only over https (or to this machine, where the
    traffic never leaves it: the built-in emulator)."""
    if not same_origin(url, base_url):
        return False
    scheme, host, _ = _origin(url)
    return scheme == "https" or (scheme == "http" and host in LOOPBACK_HOSTS)
