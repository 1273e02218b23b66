"""Running the emulator: in-process on a free loopback port (tests, benchmarks), or blocking (the CLI)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from batchgen.emulator.app import build_app
from batchgen.emulator.catalog import Catalog
from batchgen.emulator.config import EmulatorConfig
from batchgen.emulator.ledger import Ledger
from batchgen.emulator.services import Services
from batchgen.emulator.state import EmulatorState

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RunningEmulator:
    """A live emulator: where it listens, the key to use, and what it saw."""

    base_url: str  # "http://127.0.0.1:PORT"
    api_key: str
    config: EmulatorConfig
    services: Services

    @property
    def ledger(self) -> Ledger:
        return self.services.ledger

    @property
    def state(self) -> EmulatorState:
        return self.services.state

    @property
    def catalog(self) -> Catalog:
        return self.services.catalog

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        """An absolute URL on the emulator for `path` ("/api/ai/queue")."""
        return self.base_url + path

    def end_streams(self) -> None:
        """End every open GET /api/events stream after the frames queued for it, as the API ending them would; a
        stream opened later works as usual. Lets a test decide when a stream closes. Callable from any thread."""
        loop = self.services.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.services.hub.end_streams)

    # -- hold/release (EmulatorConfig.hold): callable from any thread

    @property
    def held(self) -> list[str]:
        """Ids of the generations held `processing` right now (cancelled ones excluded), oldest first."""
        return self.services.worker.hold.held()

    def release(self, count: int | None = None) -> list[str]:
        """Let held generations finish: all of them, and every later one, when `count` is None; else the
        `count` oldest held (releases left over go to the next generations to start). Returns the ids let go."""
        return self.services.worker.hold.release(count)

    def hold(self) -> None:
        """Hold again: generations that start from now on stay `processing` until released."""
        self.services.worker.hold.close()


def _uvicorn_config(svc: Services, host: str, port: int, *, quiet: bool) -> uvicorn.Config:
    return uvicorn.Config(
        build_app(svc),
        host=host,
        port=port,
        interface="asgi3",
        http="h11",  # one well-known protocol implementation: the connection-cutting faults rely on it
        ws="none",
        lifespan="on",
        proxy_headers=False,
        date_header=False,  # the app sends its own Date, from the emulator's (maybe wrong) clock
        access_log=not quiet,
        log_level="warning" if quiet else "info",
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        timeout_graceful_shutdown=2,
        # uvicorn's 5 s default closes idle keep-alive connections just as a 5 s poller reuses them, a race of
        # the test server rather than of the API (nginx, in front of most APIs, keeps them 75 s)
        timeout_keep_alive=75,
    )


@contextlib.contextmanager
def running_emulator(config: EmulatorConfig | None = None) -> Iterator[RunningEmulator]:
    """Start the emulator on 127.0.0.1 on a free port in a background thread; stop it on exit.

    `with running_emulator(EmulatorConfig(seed=1, time_scale=0.001)) as emu: ...` -> emu.base_url, emu.api_key,
    emu.ledger, emu.state.
    """
    config = config or EmulatorConfig()
    svc = Services(config)
    server = uvicorn.Server(_uvicorn_config(svc, "127.0.0.1", 0, quiet=True))
    thread = threading.Thread(target=server.run, name="batchgen-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the emulator did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    svc.state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield RunningEmulator(svc.state.base_url, config.api_key, config, svc)
    finally:
        # Streams never end on their own; end them first or uvicorn waits for them until its grace timeout.
        if svc.loop is not None and not svc.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                svc.loop.call_soon_threadsafe(svc.hub.close)
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_S)


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8787) -> None:
    """Run the emulator in the foreground until interrupted (the `batchgen emulator` command)."""
    svc = Services(config)
    public_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    svc.state.base_url = f"http://{public_host}:{port}"
    uvicorn.Server(_uvicorn_config(svc, host, port, quiet=False)).run()
