"""httpcore's connection pool, with each connection's raw socket kept at hand.

Before every request, and after every response, httpcore's pool walks all its connections and asks each idle
one whether its socket is readable (a server that closed it). Through anyio's stream each question builds the
stream's whole dict of extra attributes and calls getpeername(): with the 60-odd connections a run at C = 64
keeps open, that was a tenth of the runner's CPU (issue 15). Here the raw socket is read once, when the
connection is made, and the question is a poll(2) of it with no timeout, as httpcore's own check does.

`keep_sockets` wraps the network backend of the client's pools (the direct one and any proxy's), whatever it
was; where httpx or httpcore no longer has the attributes it reaches for, it changes nothing (the pool is only
slower). Nothing else about a connection changes: reads, writes, TLS and closing go to anyio's stream.
"""

# ruff: noqa: ASYNC109  (the `timeout` parameters are httpcore's interface, passed through as they are)

from __future__ import annotations

import select
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["keep_sockets"]


def keep_sockets(client: httpx.AsyncClient) -> int:
    """Wrap the network backend of each of the client's connection pools; returns how many were wrapped."""
    wrapped = 0
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(pool, httpcore.AsyncConnectionPool) and isinstance(backend, httpcore.AsyncNetworkBackend):
            if not isinstance(backend, KeptSocketBackend):
                pool._network_backend = KeptSocketBackend(backend)
            wrapped += 1
    return wrapped


def is_readable(sock: socket.socket | None) -> bool:
    """Whether reading `sock` would not block now (for an idle connection: the server closed it). A socket
    already closed (or none) counts as readable, so the pool drops its connection."""
    if sock is None or sock.fileno() == -1:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class KeptSocketStream(httpcore.AsyncNetworkStream):
    """A stream of the wrapped backend, its raw socket read once."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return KeptSocketStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return is_readable(self._socket)
        return self._stream.get_extra_info(info)


class KeptSocketBackend(httpcore.AsyncNetworkBackend):
    """Connects with `backend`, and keeps each stream's raw socket at hand (`KeptSocketStream`)."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return KeptSocketStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return KeptSocketStream(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)
