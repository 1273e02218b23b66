"""Result files (E9: plain and presigned) and the synchronous generate endpoints (E10)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from batchgen.core.jobs import canonical_json
from batchgen.emulator import media, replies, transfer
from batchgen.emulator.catalog import QUEUE_LAYER_PARAMS, VALUE_ERROR
from batchgen.emulator.ledger import DownloadRecord
from batchgen.emulator.media import ResultFile
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
    """The bytes of a result (all, or the part a Range asks for), through the download fault knobs, recorded in
    the ledger. A transient failure answers before the Range is looked at, as a proxy or rate limiter would."""
    gid = row.generation_id
    stable = f"{gid}#{svc.ledger.download_attempt(gid)}"
    file = media.result_file(gid, row.media_type, svc.faults.result_size_bytes, media.shape_of(row.params))
    total = len(file.data)
    asked = request.headers.get("range")
    wanted = transfer.requested_range(asked, total)
    range_start = wanted.start if isinstance(wanted, transfer.ByteRange) else _asked_start(asked)
    reply: Response
    body: transfer.FileBody | None = None
    if svc.fault("download_429_rate", stable):
        reply = replies.rate_limited(svc.faults.retry_after)
    elif svc.fault("download_5xx_rate", stable):
        reply = replies.server_error(503)
    else:
        if asked is not None and svc.faults.download_ignores_range:
            svc.ledger.record_fault("download_ignores_range", gid, asked)
            wanted = None
        if isinstance(wanted, str):  # transfer.UNSATISFIABLE
            reply = Response(b"", status_code=416, headers={**ACCEPT_RANGES, "Content-Range": f"bytes */{total}"})
        else:
            reply = body = _file_body(svc, file, wanted, gid, stable)
    cut = body is not None and body.cut_after is not None
    record = DownloadRecord(
        time=time.time(),
        generation_id=gid,
        authorized="authorization" in request.headers,
        host=request.headers.get("host", ""),
        status=0 if cut else reply.status_code,
        presigned=presigned,
        range_start=range_start,
        bytes_sent=0 if body is None else body.bytes_to_send,
    )
    # served_sha256 is always the whole file's: a client that resumed proves with it that its pieces add up
    reaches_end = (
        body is not None and not cut and (not isinstance(wanted, transfer.ByteRange) or wanted.end == total - 1)
    )
    svc.ledger.record_download(record, file.sha256 if reaches_end else None)
    return reply


ACCEPT_RANGES = {"Accept-Ranges": "bytes"}  # sent even when download_ignores_range: the worst case, a wrong advert


def _asked_start(header: str | None) -> int | None:
    """The first byte a Range header names, even one this server cannot satisfy (for the ledger)."""
    unit, _, spec = (header or "").partition("=")
    start = spec.partition("-")[0].strip()
    return int(start) if unit.strip().lower() == "bytes" and start.isdigit() else None


def _file_body(
    svc: Services, file: ResultFile, part: transfer.ByteRange | None, gid: str, stable: str
) -> transfer.FileBody:
    """A 200 with the whole file, or a 206 with `part`, through the knobs that spoil a body."""
    headers = dict(ACCEPT_RANGES)
    body: bytes | memoryview = file.data
    if part is not None:
        headers["Content-Range"] = part.content_range
        body = memoryview(file.data)[part.start : part.end + 1]
    content_type = file.content_type
    cut_after: int | None = None
    if svc.fault("truncated_download_rate", stable):
        cut_after = len(body) // 2
    elif svc.fault("download_cut_rate", stable):
        cut_after = transfer.cut_point(len(body), svc.faults.download_cut_at)
        svc.ledger.record_fault("download_cut_rate", gid, f"{cut_after} of {len(body)} bytes")
    elif svc.fault("wrong_content_type_rate", f"download:{stable}"):
        content_type = "text/plain"
    if svc.faults.result_size_bytes is not None:
        svc.ledger.record_fault("result_size_bytes", gid, f"{len(file.data)} bytes")
    bandwidth = svc.faults.download_bandwidth_bps
    if bandwidth is not None:
        svc.ledger.record_fault("download_bandwidth_bps", gid, f"{bandwidth:g}")
    return transfer.FileBody(
        body,
        status_code=200 if part is None else 206,
        media_type=content_type,
        headers=headers,
        cut_after=cut_after,
        bandwidth_bps=bandwidth,
    )


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
    if not svc.catalog.knows(model):
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
        return replies.insufficient_credits(svc.config.insufficient_credits_status)
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
        file = media.result_file(
            row.generation_id, row.media_type, svc.faults.result_size_bytes, media.shape_of(row.params)
        )
        item = {"b64_json": base64.b64encode(file.data).decode("ascii")}
    else:
        item = {"url": svc.state.presigned_url(row.generation_id, svc.config.presign_ttl_s)}
    key = "videos" if row.media_type == "video" else "images"
    return {"model": row.model, "created": int(svc.clock.now()), key: [item]}
