"""The async queue: POST/GET /api/ai/queue, GET/DELETE /api/ai/queue/{id}, GET /api/ai/generations[/{id}]."""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from batchgen.core.jobs import canonical_json
from batchgen.emulator import replies
from batchgen.emulator.catalog import QUEUE_LAYER_PARAMS, format_cost
from batchgen.emulator.services import Caller, Services
from batchgen.emulator.state import Generation, Status, full_row, make_generation_id, status_row

_5XX = (500, 502, 503, 504)


def services(request: Request) -> Services:
    """The emulator behind this request."""
    svc = request.app.state.services
    assert isinstance(svc, Services)
    return svc


def caller_or_reply(svc: Services, request: Request) -> Caller | Response:
    """The authenticated caller within its rate, or the 401/429 reply."""
    caller = svc.authenticate(request)
    if caller is None:  # only with optional=True
        return replies.unauthenticated()
    if isinstance(caller, Response):
        return caller
    return svc.rate_check(caller) or caller


def _transient(svc: Services, prefix: str, stable: str) -> Response | None:
    """The 429 / 5xx / HTML-502 fault replies shared by enqueue and status, else None."""
    if svc.fault(f"{prefix}_429_rate", stable):
        return replies.rate_limited(svc.faults.retry_after)
    if svc.fault(f"{prefix}_5xx_rate", stable):
        return replies.server_error(_5XX[len(stable) % len(_5XX)])
    if svc.fault("html_error_rate", f"{prefix}:{stable}"):
        return replies.html_502()
    return None


async def enqueue(request: Request) -> Response:
    """E2: checks in documented order, N rows, `{"generations":[{generation_id, status}]}`."""
    svc = services(request)
    caller = caller_or_reply(svc, request)
    if isinstance(caller, Response):
        return caller
    raw = await request.body()
    try:
        body: Any = json.loads(raw)
        canonical = canonical_json(body)
    except ValueError:
        body, canonical = raw.decode("utf-8", "replace"), raw.decode("utf-8", "replace")
    record = svc.ledger.begin_enqueue(body, canonical)
    stable = f"{canonical}#{record.attempt}"
    reply, ids = _enqueue_reply(svc, caller, body, canonical, record.attempt, stable)
    if ids and svc.fault("lost_reply_rate", stable):
        svc.ledger.end_enqueue(record, status=0, generation_ids=ids, replied=False)
        for gid in ids:
            svc.worker.spawn(gid)
        return replies.AbortConnection()
    if ids and svc.fault("sse_early_rate", stable):
        # The generations finish before we answer, and their events go out first: a client that subscribes
        # late or matches events only against ids it already knows loses them.
        for gid in ids:
            row = svc.worker.finish_now(gid)
            if row is not None:
                await svc.worker.announce(row, allow_late=False)
        await svc.hub.drain(caller.account.username)
    else:
        for gid in ids:
            svc.worker.spawn(gid)
    if ids and svc.fault("malformed_json_rate", f"enqueue:{stable}"):
        reply = replies.malformed_json(json.loads(bytes(reply.body)))
    svc.ledger.end_enqueue(record, status=reply.status_code, generation_ids=ids, replied=True)
    return reply


def _enqueue_reply(
    svc: Services, caller: Caller, body: Any, canonical: str, attempt: int, stable: str
) -> tuple[Response, list[str]]:
    """Validate and create rows; the reply and the ids created (none on any error)."""
    transient = _transient(svc, "enqueue", stable)
    if transient is not None:
        return transient, []
    if not isinstance(body, dict):
        return replies.invalid_params("Request body must be a JSON object"), []
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return replies.invalid_params("model is required"), []
    if not svc.catalog.knows(model):
        return replies.model_not_found(model), []
    media_type = svc.catalog.media_type(model)
    if media_type is None:
        return replies.invalid_params(":unsupported_media_type"), []
    count = body.get("num_generations", 1)
    limit = svc.config.max_num_generations
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= limit:
        return replies.invalid_params(f"num_generations must be an integer between 1 and {limit}"), []
    params = {k: v for k, v in body.items() if k not in QUEUE_LAYER_PARAMS}
    estimate = svc.catalog.cost(model, params)
    user = caller.account.username
    if svc.state.balance(user) <= 0 or (
        svc.config.strict_credit_check and svc.state.available(user) < estimate * count
    ):
        return replies.insufficient_credits(svc.config.insufficient_credits_status), []
    cap = svc.config.rate_limit.max_active_per_user if svc.config.rate_limit else None
    if cap is not None and svc.state.count_active(caller.account.username) + count > cap:
        return replies.rate_limited(1.0 if svc.config.rate_limit and svc.config.rate_limit.retry_after else None), []
    now = svc.clock.now()
    ids = []
    for index in range(count):
        gid = make_generation_id(svc.seed, canonical, attempt, index)
        svc.state.add(
            Generation(
                generation_id=gid,
                username=caller.account.username,
                model=model,
                media_type=media_type,
                params=dict(params),
                enqueued_at=now,
                target_namespace=optional_str(body.get("target_namespace")),
                target_repo=optional_str(body.get("target_repo")),
                target_directory=optional_str(body.get("target_directory")),
                pledged=estimate if svc.config.strict_credit_check else Decimal(0),
            )
        )
        svc.ledger.record_created(gid)
        ids.append(gid)
    return replies.json_reply({"generations": [{"generation_id": g, "status": "queued"} for g in ids]}), ids


def optional_str(value: Any) -> str | None:
    """A non-empty string or None."""
    return value if isinstance(value, str) and value else None


def _own_row(svc: Services, caller: Caller, generation_id: str) -> Generation | None:
    row = svc.state.get(generation_id)
    return row if row is not None and row.username == caller.account.username else None


async def get_status(request: Request) -> Response:
    """E4: the compact status object, through the status fault knobs."""
    svc = services(request)
    caller = caller_or_reply(svc, request)
    if isinstance(caller, Response):
        return caller
    gid = request.path_params["generation_id"]
    attempt = svc.ledger.record_poll(gid)
    row = _own_row(svc, caller, gid)
    if row is None:
        return replies.not_found()
    stable = f"{gid}#{attempt}"
    transient = _transient(svc, "status", stable)
    if transient is not None:
        return transient
    if svc.faults.legacy_mode and row.status.is_terminal:
        return replies.not_found()  # pre-May-2026: rows vanished once done
    unknown = "running" if svc.fault("unknown_status_rate", stable) else None
    data = status_row(row, legacy=svc.faults.legacy_mode, status_override=unknown)
    if svc.fault("malformed_json_rate", f"status:{stable}"):
        return replies.malformed_json(data)
    if svc.fault("wrong_content_type_rate", f"status:{stable}"):
        return Response(json.dumps(data), media_type="text/html; charset=utf-8")
    return replies.json_reply(data)


async def list_queue(request: Request) -> Response:
    """§5: the rows of one namespace, active only unless `status=` says otherwise, newest first.

    The namespace is `namespace=` (one of the account's orgs) or else the user's own: a row enqueued with
    `target_namespace="some-org"` is listed under `namespace=some-org` only, never in the user's own list.
    """
    svc = services(request)
    caller = caller_or_reply(svc, request)
    if isinstance(caller, Response):
        return caller
    query = request.query_params
    svc.ledger.record_list(str(request.url.query))
    namespace = query.get("namespace") or caller.account.username
    if not svc.may_read_namespace(caller, namespace):
        title = "You are not authorized to access this resource"
        return replies.json_reply(replies.envelope("unauthorized", title), 403)
    wanted = query.get("status")
    if wanted is not None and wanted not in {s.value for s in Status}:
        return replies.invalid_params(f"status must be one of {', '.join(s.value for s in Status)}")
    rows = [r for r in svc.state.all() if (r.target_namespace or r.username) == namespace]
    if wanted is None:
        rows = [r for r in rows if not r.status.is_terminal]
    else:
        rows = [r for r in rows if r.status == wanted]
        if Status(wanted).is_terminal and (svc.faults.finished_missing_from_list or svc.faults.legacy_mode):
            # finished rows are only in the history (GET /api/ai/generations)
            svc.ledger.record_fault("finished_missing_from_list", str(request.url.query), str(len(rows)))
            rows = []
    for field, name in (("model", "model"), ("media_type", "media_type"), ("repo", "target_repo")):
        if query.get(field):
            rows = [r for r in rows if getattr(r, name) == query[field]]
    if query.get("folder"):
        rows = [r for r in rows if (r.target_directory or "") == query["folder"]]
    rows = sorted(reversed(rows), key=lambda r: r.enqueued_at, reverse=True)  # ties: newest created first
    data = {"count": len(rows), "generations": [status_row(r, legacy=svc.faults.legacy_mode) for r in rows]}
    stable = f"list#{len(svc.ledger.list_calls)}"
    if svc.fault("html_error_rate", stable):
        return replies.html_502()
    if svc.fault("malformed_json_rate", stable):
        return replies.malformed_json(data)
    return replies.json_reply(data)


async def cancel(request: Request) -> Response:
    """E6: active rows become cancelled (no event, no charge); terminal rows are left alone."""
    svc = services(request)
    caller = caller_or_reply(svc, request)
    if isinstance(caller, Response):
        return caller
    gid = request.path_params["generation_id"]
    row = _own_row(svc, caller, gid)
    if row is None:
        return replies.not_found()
    if svc.fault("cancel_5xx_rate", gid):
        svc.ledger.record_fault("cancel_5xx_rate", gid)
        return replies.server_error(503)
    if row.status.is_terminal:
        if svc.config.cancel_terminal_status != 200:
            detail = f"Generation is already {row.status}"
            return replies.json_reply(
                replies.envelope("invalid_params", replies.INVALID_PARAMS_TITLE, detail),
                svc.config.cancel_terminal_status,
            )
    else:
        svc.state.update(gid, status=Status.CANCELLED, completed_at=svc.clock.now())
        svc.state.release(gid)
        svc.ledger.record_terminal(gid, time.time())  # the ledger keeps the true time
    return replies.json_reply({"status": "success", "generation_id": gid})


async def list_generations(request: Request) -> Response:
    """SPEC: paginated history of the user with cost aggregates: every row they enqueued, whatever its
    target namespace."""
    svc = services(request)
    caller = caller_or_reply(svc, request)
    if isinstance(caller, Response):
        return caller
    try:
        page = int(request.query_params.get("page", "1"))
        page_size = int(request.query_params.get("page_size", "50"))
    except ValueError:
        return replies.invalid_params("page and page_size must be integers")
    if page < 1 or not 1 <= page_size <= 1000:
        return replies.invalid_params("page must be >= 1 and page_size between 1 and 1000")
    rows = sorted(reversed(svc.state.of_user(caller.account.username)), key=lambda r: r.enqueued_at, reverse=True)
    costs = [r.cost for r in rows if r.cost is not None]
    total_cost: Decimal | None = sum(costs, Decimal(0)) if costs else None
    chunk = rows[(page - 1) * page_size : page * page_size]
    return replies.json_reply(
        {
            "status": "success",
            "status_message": "resource_found",
            "generations": [full_row(r) for r in chunk],
            "page_number": page,
            "page_size": page_size,
            "total_pages": max(1, math.ceil(len(rows) / page_size)),
            "total_entries": len(rows),
            "total_cost": format_cost(total_cost),
        }
    )


async def get_generation(request: Request) -> Response:
    """§6: the full row with cost and user; works in legacy mode too (E12's fallback)."""
    svc = services(request)
    caller = caller_or_reply(svc, request)
    if isinstance(caller, Response):
        return caller
    row = _own_row(svc, caller, request.path_params["generation_id"])
    if row is None:
        return replies.not_found()
    return replies.json_reply({"status": "success", "status_message": "resource_found", "generation": full_row(row)})
