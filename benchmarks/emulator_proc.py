"""The emulator in its own process, for the benchmark: fixed run times, unlimited credits, and its ledger readable.

    python benchmarks/emulator_proc.py --port P --seed N --duration-s 2 [--queue-delay-s 0] [--latency-s 0.1]

`batchgen emulator` can set the run time but cannot hand its ledger to another process, and the benchmark
counts requests on the server side (every HTTP request the emulator received, downloads included). So this
launcher serves the same app, plus one route outside the request recorder (so reading it is never counted):
`GET /__bench/ledger` -> JSON summary of what the emulator saw.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from batchgen.emulator import Account, EmulatorConfig, Faults
from batchgen.emulator.app import build_app
from batchgen.emulator.services import Services

LEDGER_PATH = "/__bench/ledger"
KEY = "bench-key"


def ledger_summary(svc: Services) -> dict[str, Any]:
    """Everything the benchmark reads: requests (with the SSE streams still open), enqueues, terminal times."""
    ledger = svc.ledger
    requests = ledger.requests
    return {
        # a stream is recorded when it closes; count every opened stream once instead
        "requests": [[r.time, r.method, r.path, r.status] for r in requests if r.path != "/api/events"],
        "stream_connections": ledger.stream_connections,
        "enqueues": [[e.time, len(e.generation_ids)] for e in ledger.enqueues],
        "created": len(ledger.created_ids),
        "terminal_times": ledger.terminal_times,
        "downloads": [[d.time, d.generation_id, d.status] for d in ledger.downloads],
    }


def build(config: EmulatorConfig, base_url: str) -> tuple[Any, Services]:
    svc = Services(config)
    svc.state.base_url = base_url
    app = build_app(svc)

    async def bench_app(scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] == "http" and scope["path"] == LEDGER_PATH:
            body = json.dumps(ledger_summary(svc)).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return None
        return await app(scope, receive, send)

    return bench_app, svc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--queue-delay-s", type=float, default=None)
    # every /api/ai/... request waits this long before the emulator handles it (the event stream is not delayed)
    parser.add_argument("--latency-s", type=float, default=0.0)
    args = parser.parse_args()
    config = EmulatorConfig(
        keys={KEY: Account(username="bench", credits_usd=1e12)},
        seed=args.seed,
        duration_s=args.duration_s,
        queue_delay_s=args.queue_delay_s,
        faults=Faults(latency_s=args.latency_s),
    )
    app, _svc = build(config, f"http://127.0.0.1:{args.port}")
    server_config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        interface="asgi3",
        http="h11",  # as the in-process emulator
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
        log_config=None,
        timeout_graceful_shutdown=1,
        # uvicorn's 5 s default closes idle keep-alive connections just as a 5 s poller reuses them, a race of
        # the test server rather than of the API (nginx, in front of most APIs, keeps them 75 s)
        timeout_keep_alive=75,
    )
    uvicorn.Server(server_config).run()


if __name__ == "__main__":
    main()
