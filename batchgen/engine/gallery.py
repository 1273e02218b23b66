"""The live gallery: the report's grid served over HTTP, updated in place as jobs change.

    GET /            the report (core/report.py) with a small script that listens on one EventSource
    GET /events      server-sent events: `jobs` (changed figures and the summary), `layout` (the set of jobs
                     changed: the page reloads); a comment every `keepalive` s while nothing happens
    GET /media/PATH  a file under the run's output directory, and nothing else (no listing, no way out)

The server, not the browser, watches the database: every `poll_interval` s one cheap read (count and newest
`updated_at` of the run's jobs and ledger rows); only when that changed does it read the run's rows again and
send the figures whose HTML differs from what this page was last sent. It never writes the database.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from batchgen.core.jobs import JobRow
from batchgen.core.report import choose_layout, estimated_finish, job_figure, render_report, summary_html
from batchgen.engine.store import RunInfo, Store
from batchgen.errors import BatchgenError

__all__ = ["LIVE_JS", "Gallery", "GalleryServer", "bind", "gallery_app", "gallery_server"]

# Replaces figures in place as `jobs` events arrive; reloads on `layout`. EventSource reconnects by itself, and
# the server answers every new connection with the whole state, so nothing is lost across a reconnect. A figure
# in a row the page has not drawn yet (a large run: core/report.py) is kept until the row is drawn.
LIVE_JS = """
(function () {
  var summary = document.getElementById("live-summary");
  var waiting = {};
  function swap(old, html) {
    var fresh = document.createElement("template");
    fresh.innerHTML = html;
    var figure = fresh.content.firstElementChild;
    if (!figure) { return; }
    window.batchgenReveal(fresh.content);
    old.replaceWith(figure);
  }
  document.addEventListener("batchgen:drawn", function (event) {
    event.detail.forEach(function (row) {
      row.querySelectorAll("figure.job").forEach(function (old) {
        var html = waiting[old.dataset.key];
        if (html !== undefined) { delete waiting[old.dataset.key]; swap(old, html); }
      });
    });
  });
  var source = new EventSource("events?layout=" + encodeURIComponent(document.body.dataset.layout));
  source.addEventListener("jobs", function (event) {
    var data = JSON.parse(event.data);
    Object.keys(data.figures).forEach(function (key) {
      var old = document.querySelector('figure.job[data-key="' + CSS.escape(key) + '"]');
      if (old) { swap(old, data.figures[key]); } else { waiting[key] = data.figures[key]; }
    });
    summary.innerHTML = data.summary;
    document.body.dataset.version = String(data.version);
  });
  source.addEventListener("layout", function () { source.close(); location.reload(); });
  source.addEventListener("open", function () { document.body.dataset.stream = "open"; });
  source.addEventListener("error", function () { document.body.dataset.stream = "reconnecting"; });
})();
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the page shows at one moment: each job's figure, the summary, and which jobs there are."""

    figures: dict[str, str]
    summary: str
    layout: str  # a digest of the job keys: the grid changes only when they do


class Gallery:
    """One run's live gallery over a store that it only reads."""

    def __init__(
        self,
        store: Store,
        run: RunInfo,
        *,
        rows_axis: str | None = None,
        cols_axis: str | None = None,
        poll_interval: float = 0.5,
        keepalive: float = 15.0,
    ) -> None:
        self.store, self.run = store, run
        self.out_dir = Path(run.out_dir).resolve()
        self.rows_axis, self.cols_axis = rows_axis, cols_axis
        self.poll_interval, self.keepalive = poll_interval, keepalive
        self.title = f"batchgen · {run.name}"
        self.stopping = threading.Event()  # set from any thread: every event stream ends at its next tick

    # ---- reading the database ----------------------------------------------------------------------------------

    def mark(self) -> tuple[Any, ...]:
        """The cheap read: changes whenever any job or ledger row of the run is written."""
        return self.store.change_mark(self.run.id)

    def _read(self) -> tuple[list[JobRow], Any, Any]:
        rows = self.store.job_rows(self.run.id)
        return rows, self.store.money(self.run.id), self.store.unused_generations(self.run.id)

    def page(self) -> str:
        """The whole page, as the static report draws it, plus the live script."""
        rows, money, unused = self._read()
        html = render_report(
            rows, title=self.title, media_href=self.media_href, rows_axis=self.rows_axis, cols_axis=self.cols_axis,
            money=money, unused=unused, live_script=LIVE_JS, eta=estimated_finish(rows),
        )  # fmt: skip
        return html.replace("<body>", f'<body data-layout="{_layout(rows)}">', 1)

    def snapshot(self) -> Snapshot:
        rows, money, unused = self._read()
        layout = choose_layout(rows, self.rows_axis, self.cols_axis)
        summary = summary_html(rows, layout, money=money, unused=unused, run=self.run.name, eta=estimated_finish(rows))
        figures = {r.job_key: job_figure(r, self.media_href(r)) for r in rows}
        return Snapshot(figures, summary, _layout(rows))

    # ---- media -------------------------------------------------------------------------------------------------

    def media_href(self, row: JobRow) -> str | None:
        """`/media/...` for a job's file when it is on disk under the output directory, else None."""
        if not row.output_path:
            return None
        stored = Path(row.output_path)
        for candidate in (stored, self.out_dir.parent / stored, self.out_dir / stored.name):
            found = self.media_file(candidate)
            if found is not None:
                return "/media/" + quote(found.relative_to(self.out_dir).as_posix())
        return None

    def media_file(self, path: Path) -> Path | None:
        """The file at `path` (relative paths: under the output directory) when, with every link followed, it is
        a regular file inside the output directory; None for anything else."""
        try:
            resolved = (self.out_dir / path).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(self.out_dir) or not resolved.is_file():
            return None
        return resolved

    # ---- the event stream --------------------------------------------------------------------------------------

    async def events(self, page_layout: str) -> AsyncIterator[str]:
        """The page's stream: the whole state first (it may have changed since the page was drawn), then only what
        changes; `layout` when the set of jobs differs from the page's. Ends when the client goes away."""
        mark = await anyio.to_thread.run_sync(self.mark)
        snap = await anyio.to_thread.run_sync(self.snapshot)
        sent: dict[str, str] = {}
        version = 0
        quiet = 0.0
        while True:
            if snap.layout != page_layout:
                yield _event("layout", {"layout": snap.layout})
                return
            changed = {k: h for k, h in snap.figures.items() if sent.get(k) != h}
            sent.update(changed)
            version += 1
            yield _event("jobs", {"figures": changed, "summary": snap.summary, "version": version})
            while True:  # until the database changes, the client goes (cancelled then) or the server stops
                await anyio.sleep(self.poll_interval)
                if self.stopping.is_set():
                    return
                fresh = await anyio.to_thread.run_sync(self.mark)
                if fresh != mark:
                    mark, quiet = fresh, 0.0
                    break
                quiet += self.poll_interval
                if quiet >= self.keepalive:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
            snap = await anyio.to_thread.run_sync(self.snapshot)


def _layout(rows: list[JobRow]) -> str:
    return hashlib.sha256("\n".join(sorted(r.job_key for r in rows)).encode()).hexdigest()[:16]


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def gallery_app(gallery: Gallery) -> Starlette:
    """The gallery's routes; GET only."""

    async def index(request: Request) -> Response:
        html = await anyio.to_thread.run_sync(gallery.page)
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    async def events(request: Request) -> Response:
        layout = request.query_params.get("layout", "")
        headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(gallery.events(layout), media_type="text/event-stream", headers=headers)

    async def media(request: Request) -> Response:
        found = gallery.media_file(Path(request.path_params["path"]))
        if found is None:
            return PlainTextResponse("not found", status_code=404, headers=SECURITY_HEADERS)
        return FileResponse(found, headers=SECURITY_HEADERS)

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204, headers=SECURITY_HEADERS)  # browsers ask; a 404 would be a console error

    return Starlette(
        routes=[
            Route("/favicon.ico", no_icon, methods=["GET"]),
            Route("/", index, methods=["GET"]),
            Route("/events", events, methods=["GET"]),
            Route("/media/{path:path}", media, methods=["GET"]),
        ]
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one), or a BatchgenError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BatchgenError(f"cannot serve on {host}: {exc.strerror or exc}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BatchgenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (pass --port 0 to pick a free port)"
        ) from exc
    return sock


class GalleryServer(uvicorn.Server):
    """uvicorn, ending the gallery's event streams when it is asked to stop (they never end on their own, and
    uvicorn would wait for them)."""

    def __init__(self, config: uvicorn.Config, gallery: Gallery) -> None:
        super().__init__(config)
        self.gallery = gallery

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.gallery.stopping.set()
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        """Stop from another thread: streams end within a poll interval, then the server."""
        self.gallery.stopping.set()
        self.should_exit = True


def gallery_server(gallery: Gallery) -> GalleryServer:
    """A uvicorn server for the gallery; run it with `server.run(sockets=[bind(...)])`. A stream still open 1 s
    after a stop is cut."""
    config = uvicorn.Config(
        gallery_app(gallery), log_config=None, log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
        access_log=False,
    )  # fmt: skip
    return GalleryServer(config, gallery)
