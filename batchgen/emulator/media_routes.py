"""Result files (E9: plain and presigned) and the synchronous generate endpoints (E10)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from batchgen.core.jobs import canonical_json
from batchgen.emulator import replies
from batchgen.emulator.catalog import QUEUE_LAYER_PARAMS, VALUE_ERROR
from batchgen.emulator.ledger import DownloadRecord
from batchgen.emulator.media import result_bytes
from batchgen.emulator.queue_routes import caller_or_reply, optional_str, services
from batchgen.emulator.services import Services
from batchgen.emulator.state import Generation, Status, make_generation_id

SYNC_ONLY_PARAMS = ("response_format", "n")


async def result_file(request: Request) -> Response:
    """GET /api/repos/{ns}/{repo}/file/main/{dir}/{id}.{ext}: with or without a key (a wrong key is refused)."""
    svc = services(request)
    caller = svc.authenticate(request, optional=True)
    if isinstance(caller, Response):
        return caller
    row = svc.state.by_file_name(request.url.path.rsplit("/", 1)[-1])
    if row is None or row.status != Status.SUCCEEDED or row.file_path != request.url.path:
        return replies.not_found()
    if svc.config.redirect_presigned:
        return RedirectResponse(svc.state.presigned_url(row.generation_id, svc.config.presign_ttl_s), status_code=302)
    return _serve(svc, request, row, presigned=False)


async def presigned_file(request: Request) -> Response:
    """GET /presigned/{token}?expires=...: no key needed; 403 once expired (presign_ttl_s)."""
    svc = services(request)
    target = svc.state.presigned_target(request.path_params["token"])
    if target is None:
        return Response("Forbidden: unknown signature", status_code=403, media_type="text/plain")
    generation_id, expires = target
    if svc.clock.now() > expires:
        return Response("Forbidden: request has expired", status_code=403, media_type="text/plain")
    row = svc.state.get(generation_id)
    if row is None:
        return replies.not_found()
    return _serve(svc, request, row, presigned=True)


def _serve(svc: Services, request: Request, row: Generation, *, presigned: bool) -> Response:
    """The bytes of a result, through the download fault knobs, recorded in the ledger."""
    gid = row.generation_id
    stable = f"{gid}#{svc.ledger.download_attempt(gid)}"
    data, content_type = result_bytes(gid, row.media_type)
    reply: Response
    complete = False
    if svc.fault("download_429_rate", stable):
        reply = replies.rate_limited(svc.faults.retry_after)
    elif svc.fault("download_5xx_rate", stable):
        reply = replies.server_error(503)
    elif svc.fault("truncated_download_rate", stable):
        reply = replies.TruncatedBody(data, content_type)
    elif svc.fault("wrong_content_type_rate", f"download:{stable}"):
        reply, complete = Response(data, media_type="text/plain"), True
    else:
        reply, complete = Response(data, media_type=content_type), True
    record = DownloadRecord(
        time=time.time(),
        generation_id=gid,
        authorized="authorization" in request.headers,
        host=request.headers.get("host", ""),
        status=reply.status_code if not isinstance(reply, replies.TruncatedBody) else 0,
        presigned=presigned,
    )
    svc.ledger.record_download(record, hashlib.sha256(data).hexdigest() if complete else None)
    return reply


async def generate_video(request: Request) -> Response:
    """POST /api/ai/videos/generate."""
    return await _generate(request, "video")


async def generate_image(request: Request) -> Response:
    """POST /api/ai/images/generate."""
    return await _generate(request, "image")


def _message(text: str, status: int = 400) -> Response:
    return replies.json_reply({"error": {"message": text}}, status)


async def _generate(request: Request, media_type: str) -> Response:
    """E10: validate now, hold the connection for the run time, answer with the file's URL (or bytes)."""
    svc = services(request)
    caller = caller_or_reply(svc, request)
    if isinstance(caller, Response):
        return caller
    try:
        body: Any = json.loads(await request.body())
    except ValueError:
        return replies.invalid_params("Request body must be a JSON object")
    if not isinstance(body, dict):
        return replies.invalid_params("Request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _message("You must specify a model to call")
    if svc.catalog.get(model) is None:
        return replies.model_not_found(model)
    if svc.catalog.media_type(model) != media_type:
        return replies.invalid_params(":unsupported_media_type")
    if media_type == "image" and not str(body.get("prompt") or "").strip():
        return _message("Prompt cannot be empty")
    if media_type == "video" and "prompt" not in body and "multi_prompt" not in body:
        return _message(VALUE_ERROR + "Either 'prompt' or 'multi_prompt' must be provided.")
    params = {k: v for k, v in body.items() if k not in QUEUE_LAYER_PARAMS and k not in SYNC_ONLY_PARAMS}
    _, error = svc.catalog.validate(model, params, lenient_types=svc.config.lenient_types)
    if error:
        return _message(error)
    if svc.state.balance(caller.account.username) <= 0:
        kind = "insufficient_credits"
        body_out = replies.envelope(kind, "Insufficient credits", "Insufficient credits")
        return replies.json_reply(body_out, svc.config.insufficient_credits_status)
    canonical = canonical_json(body)
    record = svc.ledger.begin_enqueue(body, canonical)
    row = Generation(
        generation_id=_sync_id(svc, canonical, record.attempt),
        username=caller.account.username,
        model=model,
        media_type=media_type,
        params=params,
        enqueued_at=svc.clock.now(),
        source="sync",
        target_namespace=optional_str(body.get("target_namespace")),
    )
    svc.state.add(row)
    svc.ledger.record_created(row.generation_id)
    svc.ledger.end_enqueue(record, status=200, generation_ids=[row.generation_id], replied=True)
    started = svc.worker.start(row.generation_id)
    if started is not None and not started.status.is_terminal:
        await svc.worker.hold.wait(started.generation_id)  # the connection stays open while a test holds it
        await anyio.sleep(svc.worker.run_time(started))
        started = svc.worker.finish(row.generation_id)
    if started is None or started.status != Status.SUCCEEDED:
        return _message(started.error_message if started and started.error_message else "Generation failed", 500)
    return replies.json_reply(_sync_reply(svc, started, body.get("response_format")))


def _sync_id(svc: Services, canonical: str, attempt: int) -> str:
    return make_generation_id(svc.seed, f"sync:{canonical}", attempt, 0)


def _sync_reply(svc: Services, row: Generation, response_format: Any) -> dict[str, Any]:
    """§9: `{"model", "created", "videos"|"images": [{"url"}|{"b64_json"}]}`."""
    if response_format == "b64_json":
        data, _ = result_bytes(row.generation_id, row.media_type)
        item = {"b64_json": base64.b64encode(data).decode("ascii")}
    else:
        item = {"url": svc.state.presigned_url(row.generation_id, svc.config.presign_ttl_s)}
    key = "videos" if row.media_type == "video" else "images"
    return {"model": row.model, "created": int(svc.clock.now()), key: [item]}
