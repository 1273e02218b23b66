"""The report in a real browser: headless Chromium opened on the file, driven over the DevTools protocol.

Chromium is driven through --remote-debugging-pipe (NUL-separated JSON on fds 3 and 4, set up by bash, since
dash cannot redirect fds above 9), which needs no websocket client. The media are the emulator's real H.264 MP4 and PNG bytes, written where the rows say.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchgen.core.jobs import JobRow, JobStatus
from batchgen.core.report import relative_href, render_report
from batchgen.emulator.media import mp4_bytes, png_bytes
from tests.kit import require

from .rows import demo_rows, make_row

pytestmark = pytest.mark.browser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--remote-debugging-pipe",
]

# Waits until every video has its metadata (or failed), then reports what the page holds.
PROBE = """
new Promise((resolve) => {
  const videos = [...document.querySelectorAll("video")];
  const settled = () => videos.every((v) => v.readyState >= 1 || v.error);
  const started = Date.now();
  (function poll() {
    if (settled() || Date.now() - started > 15000) {
      resolve(JSON.stringify({
        title: document.title,
        cells: document.querySelectorAll("td.cell").length,
        figures: document.querySelectorAll("figure.job").length,
        sections: document.querySelectorAll("section.plane").length,
        videos: videos.map((v) => ({ready: v.readyState, error: v.error && v.error.code, width: v.videoWidth,
                                     duration: v.duration})),
        images: [...document.querySelectorAll("figure.job img")].map((i) => i.naturalWidth),
        scripts: document.scripts.length,
      }));
    } else {
      setTimeout(poll, 50);
    }
  })();
})
"""


def chromium_path() -> str:
    found = shutil.which("chromium")
    require(found, "chromium is not installed (apt-get install chromium; .ci/run installs it)")
    assert found is not None
    return found


class DevTools:
    """A minimal Chrome DevTools Protocol client over the debugging pipe."""

    def __init__(self, executable: str, profile: Path) -> None:
        self._to_browser_r, self._to_browser_w = os.pipe()
        self._from_browser_r, self._from_browser_w = os.pipe()
        redirect = f'exec "$@" 3<&{self._to_browser_r} 4>&{self._from_browser_w}'
        self.process = subprocess.Popen(
            ["bash", "-c", redirect, "bash", executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(self._to_browser_r, self._from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(self._to_browser_r)
        os.close(self._from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, session: str | None = None, timeout: float = 20, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser_r], [], [], max(0.0, remaining))
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser_r, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser_w)
        os.close(self._from_browser_r)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    devtools = DevTools(chromium_path(), tmp_path / "profile")
    try:
        yield devtools
    finally:
        devtools.close()


def open_page(browser: DevTools, url: str) -> str:
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = str(browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])
    for domain in ("Runtime", "Log", "Page"):
        browser.send(f"{domain}.enable", session)
    browser.send("Page.navigate", session, url=url)
    browser.wait_for("Page.loadEventFired")
    return session


def evaluate(browser: DevTools, session: str, expression: str) -> Any:
    result = browser.send("Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True)
    return result["result"].get("value")


def console_errors(browser: DevTools) -> list[str]:
    found = []
    for event in browser.events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            found.append(json.dumps(params["exceptionDetails"])[:300])
        elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(json.dumps(params.get("args"))[:300])
        elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
    return found


def write_demo(tmp_path: Path) -> tuple[Path, list[JobRow]]:
    """The demo rows plus a hostile subject (a fourth row of the grid) and an image job; media files are written
    under out_dir's parent, where output_path points."""
    subject = """<img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>"""
    hostile = make_row(
        f"{subject}, 35mm film style, slow dolly-in",
        params={"seconds": "4", "size": "1280x720"},
        variables={"subject": subject, "style": "35mm film"},
        output_path="demo/hostile clip #1.mp4",
    )
    image = replace(hostile, job_key="img0000000000000", repeat=1, media_type="image", output_path="demo/still.png")
    rows = [*demo_rows(), hostile, image]
    out_dir = tmp_path / "demo"
    out_dir.mkdir()
    for row in rows:
        if row.output_path and row.status == JobStatus.SUCCEEDED:
            data = png_bytes(row.job_key) if row.media_type == "image" else mp4_bytes(row.job_key)
            (tmp_path / row.output_path).write_bytes(data)
    report = out_dir / "report.html"

    def media_href(row: JobRow) -> str | None:
        return relative_href(tmp_path / row.output_path, out_dir) if row.output_path else None

    report.write_text(render_report(rows, title="batchgen · demo", media_href=media_href), encoding="utf-8")
    return report, rows


def test_report_opens_from_disk_and_every_video_loads(tmp_path: Path, browser: DevTools) -> None:
    report, rows = write_demo(tmp_path)
    session = open_page(browser, report.as_uri())
    page = evaluate(browser, session, PROBE)
    assert page is not None
    page = json.loads(page)
    assert page["title"] == "batchgen · demo"  # the hostile prompt ran no script
    assert page["scripts"] == 1
    assert page["sections"] == 2
    assert page["cells"] == 4 * 2 + 3 * 2  # seconds=4: the hostile subject adds a row; seconds=8: 3 x 2
    assert page["figures"] == len(rows)
    succeeded = [r for r in rows if r.status == JobStatus.SUCCEEDED]
    assert len(page["videos"]) == len(succeeded) - 1  # one of them is the image
    assert all(v["ready"] >= 1 and v["error"] is None and v["width"] == 128 for v in page["videos"]), page["videos"]
    assert page["images"] == [64]
    # the status filter hides failed jobs
    hidden = evaluate(
        browser,
        session,
        """(() => { const box = document.querySelector('input[data-status="failed"]'); box.click();
                    return [...document.querySelectorAll("figure.st-failed")].every((f) => f.offsetParent === null)
                           && document.querySelector("figure.st-succeeded").offsetParent !== null; })()""",
    )
    assert hidden is True
    assert console_errors(browser) == []


def test_a_missing_media_file_shows_up_as_a_console_error(tmp_path: Path, browser: DevTools) -> None:
    # guards the test above: if errors were not collected, it would pass vacuously
    report = tmp_path / "report.html"
    row = make_row("gone", output_path="nowhere.mp4")
    report.write_text(render_report([row], title="t", media_href=lambda r: "nowhere.mp4"), encoding="utf-8")
    session = open_page(browser, report.as_uri())
    page = json.loads(evaluate(browser, session, PROBE))
    assert page["videos"][0]["error"] is not None
    assert console_errors(browser) != []
