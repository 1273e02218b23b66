"""The ASGI application: routes, the event stream, the model catalogue, and the request recorder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchgen.emulator import media_routes, proxy, queue_routes, replies
from batchgen.emulator.queue_routes import services
from batchgen.emulator.services import Services

SSE_HEADERS = {"Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"}


async def events(request: Request) -> Response:
    """E7: GET /api/events, user-scoped, no replay, keep-alive comments while idle."""
    svc = services(request)
    caller = svc.authenticate(request)
    if caller is None or isinstance(caller, Response):
        return caller or replies.unauthenticated()
    subscriber = svc.hub.subscribe(caller.account.username)
    faults = svc.faults
    body = svc.hub.stream(
        subscriber,
        keepalive_s=svc.config.keepalive_s,
        disconnect_after_events=faults.sse_disconnect_after_events,
        disconnect_after_s=faults.sse_disconnect_after_s,
    )
    headers = dict(SSE_HEADERS)
    stream = str(subscriber.number)
    if faults.sse_buffering != "off":
        body = proxy.buffered(body, faults.sse_buffering, faults.sse_buffer_bytes)
        held = f"bulk {faults.sse_buffer_bytes}" if faults.sse_buffering == "bulk" else faults.sse_buffering
        svc.ledger.record_fault("sse_buffering", stream, held)
    if faults.sse_gzip:
        body = proxy.gzipped(body)
        headers["Content-Encoding"] = "gzip"
        svc.ledger.record_fault("sse_gzip", stream)
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


def _models_caller(request: Request) -> Response | None:
    """Models need no key (3P-SC saw that), but a wrong key is still refused."""
    caller = services(request).authenticate(request, optional=True)
    return caller if isinstance(caller, Response) else None


async def list_models(request: Request) -> Response:
    """GET /api/ai/models: `{"object":"list","data":[...]}`."""
    refused = _models_caller(request)
    return refused or replies.json_reply({"object": "list", "data": services(request).catalog.all()})


async def search_models(request: Request) -> Response:
    """GET /api/ai/models/search?search=..."""
    refused = _models_caller(request)
    found = services(request).catalog.search(request.query_params.get("search", ""))
    return refused or replies.json_reply({"object": "list", "data": found})


async def get_model(request: Request) -> Response:
    """GET /api/ai/models/{id}."""
    refused = _models_caller(request)
    if refused is not None:
        return refused
    model_id = request.path_params["model_id"]
    model = services(request).catalog.get(model_id)
    return replies.json_reply(model) if model is not None else replies.model_not_found(model_id)


ROUTES = [
    Route("/api/ai/queue", queue_routes.enqueue, methods=["POST"]),
    Route("/api/ai/queue", queue_routes.list_queue, methods=["GET"]),
    Route("/api/ai/queue/{generation_id}", queue_routes.get_status, methods=["GET"]),
    Route("/api/ai/queue/{generation_id}", queue_routes.cancel, methods=["DELETE"]),
    Route("/api/ai/generations", queue_routes.list_generations, methods=["GET"]),
    Route("/api/ai/generations/{generation_id}", queue_routes.get_generation, methods=["GET"]),
    Route("/api/events", events, methods=["GET"]),
    Route("/api/ai/models", list_models, methods=["GET"]),
    Route("/api/ai/models/search", search_models, methods=["GET"]),
    Route("/api/ai/models/{model_id}", get_model, methods=["GET"]),
    Route("/api/ai/videos/generate", media_routes.generate_video, methods=["POST"]),
    Route("/api/ai/images/generate", media_routes.generate_image, methods=["POST"]),
    Route("/api/repos/{namespace}/{repo}/file/main/{path:path}", media_routes.result_file, methods=["GET"]),
    Route("/presigned/{token}", media_routes.presigned_file, methods=["GET"]),
]


class RecordingApp:
    """Outermost layer: records every request in the ledger, delays /api/ai/ requests by `latency_s`, stamps
    every reply with a `Date` header from the emulator's clock (uvicorn's own is off), and cuts connections
    the app asked to cut.

    Returning a non-None value from an ASGI app makes uvicorn close the transport at once; that is the only
    way ASGI lets us drop a connection without an answer (a reply lost in transit, a truncated download).
    """

    def __init__(self, app: ASGIApp, svc: Services) -> None:
        self.app = app
        self.services = svc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return None
        status = 0
        clock = self.services.clock
        skewed = clock.offset_s != 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                date = clock.http_date()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                message = {**message, "headers": [*headers, (b"date", date.encode("latin-1"))]}
                if skewed:
                    self.services.ledger.record_fault("clock_offset_s", scope["path"], date)
            await send(message)

        latency = self.services.faults.latency_s
        if latency > 0 and scope["path"].startswith("/api/ai/"):
            self.services.ledger.record_fault("latency_s", scope["path"], f"{latency:g}")
            await anyio.sleep(latency)
        try:
            await self.app(scope, receive, recording_send)
        finally:
            aborted = bool(scope.get(replies.ABORT))
            self.services.ledger.record_request(scope["method"], scope["path"], 0 if aborted else status)
        return "abort" if aborted else None


def build_app(svc: Services) -> RecordingApp:
    """The emulator's ASGI app over the given services."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc.loop = asyncio.get_running_loop()
        async with anyio.create_task_group() as tasks:
            svc.worker.tasks = tasks
            try:
                yield
            finally:
                svc.hub.close()
                tasks.cancel_scope.cancel()

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.services = svc
    return RecordingApp(app, svc)
