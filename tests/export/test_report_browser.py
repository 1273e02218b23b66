"""The report in a real browser: headless Chromium opened on the file, driven over the DevTools protocol
(tests/export/devtools.py). The media are the emulator's real H.264 MP4 and PNG bytes, written where the rows say.
"""

from __future__ import annotations

import json
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

from .devtools import DevTools, chromium_executable, console_errors, evaluate, open_page
from .rows import demo_rows, make_row

__all__ = ["DevTools", "browser", "console_errors", "evaluate", "open_page"]  # what test_serve.py shares

pytestmark = pytest.mark.browser

# Brings every video into view in turn (they load only as they come near: preload="none" until then), waits until
# each has its metadata (or failed), then reports what the page holds.
PROBE = """
new Promise((resolve) => {
  const videos = [...document.querySelectorAll("video")];
  const settled = () => videos.every((v) => v.readyState >= 1 || v.error);
  const frames = () => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  const started = Date.now();
  (async () => { for (const v of videos) { v.scrollIntoView(); await frames(); } })().then(function poll() {
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
  });
})
"""


def chromium_path() -> str:
    found = chromium_executable()
    require(found, "chromium is not installed (apt-get install chromium; .ci/run installs it)")
    assert found is not None
    return found


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    devtools = DevTools(chromium_path(), tmp_path / "profile")
    try:
        yield devtools
    finally:
        devtools.close()


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


# What a large page holds for one job's figure: in the page at all, and its media loaded.
MEDIA_STATE = """
(() => {
  const figure = document.querySelector('figure.job[data-key="KEY"]');
  const img = figure && figure.querySelector("img");
  const video = figure && figure.querySelector("video");
  return JSON.stringify({
    present: figure !== null,
    image: img ? img.complete && img.naturalWidth > 0 : null,
    video: video ? video.readyState : null,
    figures: document.querySelectorAll("figure.job").length,
    loaded: [...document.querySelectorAll("figure.job img")].filter((i) => i.complete && i.naturalWidth > 0).length,
  });
})()
"""


def media_state(browser: DevTools, session: str, key: str) -> dict[str, Any]:
    return dict(json.loads(evaluate(browser, session, MEDIA_STATE.replace("KEY", key))))


def write_large(tmp_path: Path, jobs: int) -> tuple[Path, list[JobRow]]:
    """A grid of `jobs` image jobs (4 columns), each with its own PNG, and a video as the very last job."""
    out_dir = tmp_path / "large"
    out_dir.mkdir()
    rows = []
    for n in range(jobs):
        video = n == jobs - 1
        row = make_row(
            f"subject {n // 4}",
            params={"seconds": str(4 + n % 4)},
            variables={"subject": f"subject {n // 4}"},
            media_type="video" if video else "image",
            output_path=f"large/{n}.{'mp4' if video else 'png'}",
        )
        (tmp_path / str(row.output_path)).write_bytes(mp4_bytes(row.job_key) if video else png_bytes(row.job_key))
        rows.append(row)
    report = out_dir / "report.html"

    def media_href(row: JobRow) -> str | None:
        return relative_href(tmp_path / str(row.output_path), out_dir)

    report.write_text(render_report(rows, title="large", media_href=media_href), encoding="utf-8")
    return report, rows


def test_a_large_report_loads_media_only_as_they_come_into_view(tmp_path: Path, browser: DevTools) -> None:
    report, rows = write_large(tmp_path, 800)  # 200 rows of 4: far more than one window
    session = open_page(browser, report.as_uri())
    first, last = rows[0].job_key, rows[-1].job_key
    deadline = time.monotonic() + 20
    while not (top := media_state(browser, session, first))["image"]:  # in view at once: loads
        assert time.monotonic() < deadline, top
        time.sleep(0.05)
    bottom = media_state(browser, session, last)
    # far below the fold: its row is not even drawn; of the rows drawn, those far down have not loaded their images
    assert bottom["present"] is False
    assert 0 < top["figures"] < len(rows) and 0 < top["loaded"] < top["figures"]
    while not bottom["present"]:  # scroll down step by step, as a reader would, until the last row is drawn
        evaluate(browser, session, "window.scrollBy(0, 2000)")
        bottom = media_state(browser, session, last)
        assert time.monotonic() < deadline, bottom
        time.sleep(0.05)
    assert bottom["figures"] == len(rows)
    assert bottom["video"] == 0  # drawn, but still out of view (a column to the right): not loaded
    evaluate(browser, session, f"""document.querySelector('figure.job[data-key="{last}"]').scrollIntoView()""")
    while media_state(browser, session, last)["video"] < 1:
        assert time.monotonic() < deadline, "the video scrolled into view never loaded"
        time.sleep(0.05)
    # a figure near the end, drawn on the way down, has its image once it is in view
    near_end = rows[-2].job_key
    evaluate(browser, session, f"""document.querySelector('figure.job[data-key="{near_end}"]').scrollIntoView()""")
    deadline = time.monotonic() + 10
    while not media_state(browser, session, near_end)["image"]:
        assert time.monotonic() < deadline, "the image scrolled into view never loaded"
        time.sleep(0.05)
    assert console_errors(browser) == []
