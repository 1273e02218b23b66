"""`batchgen serve`: the live gallery. In headless Chromium against a run on the emulator that holds every
generation until the test releases it (so the page is watched filling in, and nothing races a clock); the media
route's refusals over plain HTTP; the command itself as a process on a free port."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import httpx
import pytest
from typer.testing import CliRunner

from batchgen.cli import app
from batchgen.emulator import EmulatorConfig, running_emulator
from batchgen.engine.gallery import Gallery, bind, gallery_server
from batchgen.engine.store import Store
from tests.kit import IMAGE_MODEL, job_rows, run_against, wait_for, write_manifest

from .test_report_browser import DevTools, browser, console_errors, evaluate, open_page

__all__ = ["browser"]  # the fixture, imported for the tests below

# Each figure as (job key, status, the file its media shows, or None), resolved against the page's own URL.
FIGURES = """JSON.stringify([...document.querySelectorAll("figure.job")].map((f) => {
  const media = f.querySelector("img, video");
  return [f.dataset.key, [...f.classList].find((c) => c.startsWith("st-")),
          media ? new URL(media.getAttribute("src"), document.baseURI).pathname : null,
          media && media.tagName === "IMG" ? media.complete && media.naturalWidth > 0 : null];
}))"""


@contextmanager
def serving(db: Path, *, poll_interval: float = 0.05) -> Iterator[str]:
    """The gallery of the database's latest run on a free port, in a thread; stopped and joined on exit."""
    store = Store.open(db, create=False)
    server = gallery_server(Gallery(store, store.get_run(None), poll_interval=poll_interval))
    sock = bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="gallery", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the gallery to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.stop()
        thread.join(timeout=15)
        sock.close()
        store.close()
        assert not thread.is_alive(), "the gallery did not stop"


def figures(browser: DevTools, session: str) -> list[list[Any]]:
    return list(json.loads(evaluate(browser, session, FIGURES)))


def wait_for_page(browser: DevTools, session: str, condition: Any, what: str) -> list[list[Any]]:
    """Read the page's figures until `condition(figures)` holds (bounded)."""
    return wait_for(
        lambda: (found := figures(browser, session)) and condition(found) and found,
        timeout=20,
        interval=0.05,
        what=what,
    )


def succeeded(found: list[list[Any]]) -> int:
    return sum(1 for _key, status, src, loaded in found if status == "st-succeeded" and src and loaded)


def summary_value(browser: DevTools, session: str, stat: str) -> str | None:
    value = evaluate(browser, session, f'document.querySelector("#live-summary .stat-{stat} dd")?.textContent')
    return None if value is None else str(value)


def as_files(found: list[list[Any]], root: Path) -> list[tuple[str, str, Path | None]]:
    """The figures with their media as files: `root` is where the page's paths start."""
    return [
        (key, status, (root / unquote(src).lstrip("/")).resolve() if src else None) for key, status, src, _ in found
    ]


@pytest.mark.browser
def test_the_page_fills_in_as_jobs_finish_and_ends_as_the_static_report(tmp_path: Path, browser: DevTools) -> None:
    db = tmp_path / "state" / "batchgen.db"
    manifest = write_manifest(tmp_path, 4, model=IMAGE_MODEL, concurrency=4)
    outcome: dict[str, BaseException] = {}

    with running_emulator(EmulatorConfig(seed=3, duration_s=0, hold=True)) as emu:

        def work() -> None:
            try:
                anyio.run(lambda: run_against(emu, manifest, tmp_path))
            except BaseException as exc:
                outcome["error"] = exc

        runner = threading.Thread(target=work, name="run", daemon=True)
        runner.start()
        try:
            wait_for(lambda: len(emu.held) == 4, timeout=20, what="all four generations at the gate")
            with serving(db) as url:
                page = httpx.get(url, timeout=10).text
                assert page.count("new EventSource(") == 1
                assert "setInterval" not in page and "setTimeout" not in page  # the browser never polls
                session = open_page(browser, url)
                wait_for(
                    lambda: evaluate(browser, session, "document.body.dataset.stream") == "open",
                    what="the event stream to open",
                )
                first = figures(browser, session)
                assert len(first) == 4 and succeeded(first) == 0

                emu.release(2)
                found = wait_for_page(browser, session, lambda f: succeeded(f) == 2, "two cells to fill in")
                assert sum(1 for f in found if f[1] != "st-succeeded") == 2  # the other two still under way
                wait_for(lambda: summary_value(browser, session, "succeeded") == "2", what="the summary to count 2")

                emu.release()
                wait_for_page(browser, session, lambda f: succeeded(f) == 4, "every cell to fill in")
                runner.join(timeout=30)
                assert not runner.is_alive(), "the run did not end"
                assert "error" not in outcome, outcome
                wait_for(lambda: summary_value(browser, session, "succeeded") == "4", what="the summary to count 4")
                assert summary_value(browser, session, "jobs") == "4"
                live = as_files(figures(browser, session), Path("/"))

                # a fresh page of the finished run draws the same
                session = open_page(browser, url)  # (its load event may be the first page's: wait for the cells)
                fresh = as_files(
                    wait_for_page(browser, session, lambda f: succeeded(f) == 4, "a fresh page"), Path("/")
                )
                assert fresh == live
        finally:
            emu.release()
            runner.join(timeout=30)

    rows = job_rows(db)
    store = Store.open(db, create=False)
    try:
        out_dir = Path(store.get_run(None).out_dir).resolve()
    finally:
        store.close()
    live = [(k, s, out_dir / src.relative_to("/media") if src else None) for k, s, src in live]
    result = CliRunner().invoke(app, ["report", "--db", str(db)])
    assert result.exit_code == 0, result.output
    report = out_dir / "report.html"
    static_session = open_page(browser, report.as_uri())
    static = as_files(wait_for_page(browser, static_session, lambda f: succeeded(f) == 4, "the report"), Path("/"))
    assert live == static
    assert sorted(k for k, _, _ in live) == sorted(r.job_key for r in rows)
    assert all(s == "st-succeeded" and src is not None and src.is_file() for _, s, src in live)
    assert console_errors(browser) == []


@pytest.fixture
def run_with_files(tmp_path: Path) -> tuple[Path, Path]:
    """A run with an output directory holding a file, a folder and a link out; a secret beside the directory."""
    db = tmp_path / "state" / "batchgen.db"
    out_dir = tmp_path / "out" / "clip"
    (out_dir / "sub").mkdir(parents=True)
    (out_dir / "a b.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "out" / "secret.txt").write_text("secret", encoding="utf-8")
    (out_dir / "link.txt").symlink_to(tmp_path / "out" / "secret.txt")
    store = Store.open(db)
    try:
        store.ensure_run(
            "clip", manifest_path="clip.yaml", manifest_sha256="0" * 64, base_url="http://emulator",
            out_dir=str(out_dir), settings={},
        )  # fmt: skip
    finally:
        store.close()
    return db, out_dir


def test_media_come_only_from_files_under_the_output_directory(run_with_files: tuple[Path, Path]) -> None:
    db, _ = run_with_files
    before = db.read_bytes()
    with serving(db) as url, httpx.Client(base_url=url, timeout=10) as client:
        ok = client.get("/media/a%20b.png")
        assert ok.status_code == 200 and ok.content == b"\x89PNG fake"
        for path in (
            "/media/..%2Fsecret.txt",
            "/media/%2e%2e/secret.txt",
            "/media/sub/%2e%2e/%2e%2e/secret.txt",
            "/media/link.txt",  # a link pointing out of the directory
            "/media/%2Fetc%2Fpasswd",
            "/media/",
            "/media/sub",
            "/media/sub/",
            "/media/missing.png",
        ):
            refused = client.get(path)
            assert refused.status_code == 404, (path, refused.status_code)
            assert b"secret" not in refused.content and b"root:" not in refused.content
        assert client.post("/media/a%20b.png").status_code == 405  # GET only
        page = client.get("/")
        assert page.status_code == 200 and "No jobs in this run yet." in page.text
        assert "connect-src &#x27;self&#x27;" in page.text  # (escaped in the meta tag)
    assert db.read_bytes() == before  # read-only


def test_the_command_serves_on_a_free_port_and_stops_on_ctrl_c(run_with_files: tuple[Path, Path]) -> None:
    db, _ = run_with_files
    process = subprocess.Popen(
        [sys.executable, "-m", "batchgen.cli", "serve", "clip", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "serve printed no URL"
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":8765/"), url
        assert "batchgen · clip" in httpx.get(url, timeout=10).text
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert f"at {url}" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.browser
def test_a_job_that_changes_in_a_row_not_drawn_yet_shows_its_change_when_drawn(
    tmp_path: Path, browser: DevTools
) -> None:
    # a large run's page draws its first rows only (core/report.py); an update to a figure further down must wait
    # for its row, not be dropped
    from datetime import UTC, datetime

    from sqlalchemy import insert, update

    from batchgen.engine.store import JOBS

    db = tmp_path / "state" / "batchgen.db"
    store = Store.open(db)
    run_id = store.ensure_run(
        "big", manifest_path="m.yaml", manifest_sha256="x", base_url="http://h", out_dir=str(tmp_path / "out"),
        settings={},
    ).id  # fmt: skip
    now = datetime.now(UTC)
    jobs = [
        {
            "run_id": run_id, "key": f"k{n:04d}", "model": "m", "repeat": 0, "origin": "matrix", "media_type": "image",
            "status": "queued", "attempts": 1, "updated_at": now, "variables_json": "{}",
            "params_json": json.dumps({"prompt": f"subject {n // 2}", "seconds": str(4 + n % 2)}),
        }
        for n in range(600)
    ]  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(insert(JOBS), jobs)
    last = jobs[-1]["key"]
    with serving(db) as url:
        session = open_page(browser, url)
        wait_for(lambda: evaluate(browser, session, "document.body.dataset.version") == "1", what="the first event")
        assert not any(key == last for key, *_ in figures(browser, session))  # its row is not drawn yet
        with store.engine.begin() as conn:
            conn.execute(
                update(JOBS)
                .where(JOBS.c.key == last)
                .values(status="failed", error_class="content_policy", error="refused", updated_at=datetime.now(UTC))
            )
        wait_for(lambda: evaluate(browser, session, "document.body.dataset.version") == "2", what="the update")

        def drawn_to_the_end() -> list[list[Any]] | None:
            evaluate(browser, session, "window.scrollBy(0, 3000)")  # as a reader would, down to the last row
            found = figures(browser, session)
            return found if any(key == last for key, *_ in found) else None

        found = wait_for(drawn_to_the_end, timeout=20, interval=0.05, what="the last row to be drawn")
        assert [status for key, status, *_ in found if key == last] == ["st-failed"]
    store.close()
    assert console_errors(browser) == []
