"""`batchgen serve`: the run's report as a live gallery in the browser, updated as jobs finish."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from batchgen.cli.app import app, stderr, stdout, styled
from batchgen.cli.options import ColsAxisOption, DbOption, RowsAxisOption, RunArgument, existing_store
from batchgen.engine.gallery import Gallery, bind, gallery_server

DEFAULT_PORT = 8765


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    run: RunArgument = None,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: a free one, printed).")
    ] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; anything but loopback shows the run to the network.")
    ] = "127.0.0.1",
    rows_axis: RowsAxisOption = None,
    cols_axis: ColsAxisOption = None,
    db: DbOption = None,
) -> None:
    """Serve a run's report as a live gallery: cells fill in as jobs finish (read-only; Ctrl-C stops)."""
    with existing_store(db) as store:
        info = store.get_run(run)
        gallery = Gallery(store, info, rows_axis=rows_axis, cols_axis=cols_axis)
        gallery.snapshot()  # a bad --rows/--cols is an error now, not a broken page later
        if not _loopback(host):
            lead = f"serving on {host}: anyone who can reach this machine can see run {info.name} and its files"
            stderr.print(styled("warning:", "yellow", f" {lead} (there is no authentication)"))
        sock = bind(host, port)
        address = sock.getsockname()
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        url = f"http://{shown}:{address[1]}/"
        stderr.print(f"serving run {info.name} (read-only) at {url}; Ctrl-C stops")
        stdout.print(url)
        try:
            gallery_server(gallery).run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # uvicorn has stopped cleanly and re-raised the Ctrl-C: for a server that is the normal end
        finally:
            sock.close()
    stderr.print("stopped")
