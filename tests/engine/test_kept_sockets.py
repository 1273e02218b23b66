"""The pool's check of idle connections through the kept raw socket: a connection the server closed is noticed
and replaced, one still open is reused, and every pool of the client (direct and through a proxy) is wrapped."""

from __future__ import annotations

import anyio
import httpx
from anyio.abc import SocketStream

from batchgen.engine.kept_sockets import KeptSocketBackend, keep_sockets

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


async def _one_server(close_after_reply: bool, requests: int) -> tuple[int, int]:
    """Serve `requests` GETs over loopback; returns (connections accepted, replies sent)."""
    accepted = 0
    replies = 0
    replied = anyio.Event()
    closed = anyio.Event()

    async def handle(stream: SocketStream) -> None:
        nonlocal accepted, replies
        accepted += 1
        async with stream:
            buffer = b""
            while True:
                try:
                    chunk = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    _, buffer = buffer.split(b"\r\n\r\n", 1)
                    await stream.send(RESPONSE)
                    replies += 1
                    replied.set()
                    if close_after_reply:
                        await stream.aclose()
                        closed.set()
                        return

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert keep_sockets(client) == 1
            for _ in range(requests):
                response = await client.get("/")
                assert response.text == "ok"
                if close_after_reply:
                    with anyio.fail_after(10):
                        await closed.wait()  # the server closed that connection before the next request
                    closed = anyio.Event()
        tg.cancel_scope.cancel()
    return accepted, replies


async def test_a_connection_the_server_closed_is_replaced_not_reused() -> None:
    accepted, replies = await _one_server(close_after_reply=True, requests=3)
    assert (accepted, replies) == (3, 3)


async def test_an_open_idle_connection_is_reused() -> None:
    accepted, replies = await _one_server(close_after_reply=False, requests=3)
    assert (accepted, replies) == (1, 3)


async def test_every_pool_of_the_client_is_wrapped_once() -> None:
    async with httpx.AsyncClient(proxy="http://127.0.0.1:9") as client:
        assert keep_sockets(client) == 2  # the direct pool and the proxy's
        assert keep_sockets(client) == 2  # wrapping again changes nothing
        pools = [client._transport, *client._mounts.values()]
        backends = [getattr(getattr(t, "_pool", None), "_network_backend", None) for t in pools]
        assert all(isinstance(b, KeptSocketBackend) for b in backends)
        assert not any(isinstance(getattr(b, "_backend", None), KeptSocketBackend) for b in backends)
