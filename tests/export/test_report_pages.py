"""A report of any size: past a number of jobs, an index and section pages in a folder next to it, written from a
real state store (sizes injected as parameters, so a few dozen jobs make many pages)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from urllib.parse import unquote

import pytest

from batchgen.core.jobs import JobRow, JobSpec
from batchgen.core.remote import RemoteGeneration
from batchgen.core.report_pages import page_file, plan_pages
from batchgen.emulator.media import mp4_bytes
from batchgen.engine.report_pages import WrittenReport, job_media_file, pages_folder, write_report
from batchgen.engine.store import NewJob, Store
from batchgen.errors import OutputError

from .rows import T0

SUBJECTS = [f"subject {n}" for n in range(9)]
JOBS = len(SUBJECTS) * 2 * 2 * 2  # subjects x seconds x styles x repeats


@pytest.fixture(scope="module")
def run_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A run of 72 jobs (9 subjects x 2 seconds x 2 styles x 2 repeats): an MP4 on disk for every job but every
    ninth, which failed. Built once: the tests only read it."""
    state = tmp_path_factory.mktemp("run")
    store = Store.open(state / "state.db")
    out = state / "out" / "grid"
    out.mkdir(parents=True)
    run = store.ensure_run(
        "grid", manifest_path="grid.yaml", manifest_sha256="0" * 64, base_url="http://emulator",
        out_dir=str(out), settings={},
    )  # fmt: skip
    specs = [
        JobSpec(
            "openai-sora-2-pro",
            {"prompt": f"{subject}, {style}", "seconds": seconds},
            repeat=repeat,
            variables={"subject": subject, "style": style},
        )
        for style in ("film", "ink")
        for seconds in ("4", "8")
        for subject in SUBJECTS
        for repeat in (0, 1)
    ]
    lease = store.acquire_run(run.id)
    store.add_jobs(lease, [NewJob(spec, estimated_cost=0.5) for spec in specs])
    jobs = store.claim_jobs(lease, len(specs))
    store.record_intents(lease, jobs)
    refused = [job for n, job in enumerate(jobs) if n % 9 == 4]
    store.mark_rejected(lease, [job.id for job in refused], error="refused")
    sent = [job for job in jobs if job not in refused]
    store.record_enqueued(lease, [(job, f"g{job.id}") for job in sent])
    for job in sent:
        path = out / f"{job.key}.mp4"
        path.write_bytes(mp4_bytes(job.key))
        remote = RemoteGeneration(f"g{job.id}", "succeeded", completed_at=T0)
        store.mark_succeeded_remotely(lease, job, remote, download=True)
        store.mark_downloaded(lease, job, path=str(path), sha256="0" * 64, size=path.stat().st_size)
    store.release_run(lease)
    yield store
    store.close()


def write(
    store: Store, target: Path, *, media_file: Callable[[JobRow], Path | None] | None = None, **sizes: int
) -> WrittenReport:
    run = store.get_run("grid")
    found = media_file or (lambda row: job_media_file(row, run.out_dir))
    return write_report(store, run, target, media_file=found, **sizes)


HREF = re.compile(r'\b(href|src)=\\?"([^"\\]*)\\?"')
KEY = re.compile(r'data-key=\\?"([0-9a-f]+)\\?"')


def links(page: Path) -> list[tuple[str, Path]]:
    """Every href and src of a page (drawn, or waiting as data), as (attribute, the file it resolves to)."""
    text = page.read_text(encoding="utf-8")
    return [(attr, (page.parent / unquote(unescape(href))).resolve()) for attr, href in HREF.findall(text)]


def test_a_report_over_the_limit_is_an_index_and_pages_with_every_job_once(run_store: Store, tmp_path: Path) -> None:
    target = Path(run_store.get_run("grid").out_dir) / "report.html"
    written = write(run_store, target, single_file_jobs=20, page_figures=10)
    folder = pages_folder(target)
    pages = sorted(folder.iterdir())
    assert written.folder == folder and written.jobs == JOBS and written.pages == len(pages) > 1
    assert [p.name for p in pages] == [page_file(n) for n in range(1, len(pages) + 1)]
    seen = Counter(key for page in pages for key in KEY.findall(page.read_text(encoding="utf-8")))
    keys = {row.job_key for row in run_store.job_rows(run_store.get_run("grid").id)}
    assert set(seen) == keys and set(seen.values()) == {1}  # every job on exactly one page
    assert KEY.findall(target.read_text(encoding="utf-8")) == []  # the index holds no figures
    # no page holds more than 10 jobs, unless one table row alone is wider (a row is never split)
    assert all(len(KEY.findall(p.read_text(encoding="utf-8"))) <= 10 for p in pages)


def test_links_between_pages_and_to_media_resolve_from_each_pages_folder(run_store: Store, tmp_path: Path) -> None:
    target = tmp_path / "reports" / "today.html"  # elsewhere than the outputs: media hrefs climb out of its folder
    write(run_store, target, single_file_jobs=20, page_figures=10)
    pages = sorted(pages_folder(target).iterdir())
    index_links = [path for attr, path in links(target) if attr == "href"]
    assert sorted(index_links) == [p.resolve() for p in pages]  # the index links every page, once
    media = 0
    for n, page in enumerate(pages):
        found = links(page)
        assert all(path.is_file() for _, path in found), [p for _, p in found if not p.is_file()]
        hrefs = [path for attr, path in found if attr == "href"]
        assert target.resolve() in hrefs
        assert (pages[n - 1].resolve() in hrefs) == (n > 0)  # previous
        assert (n + 1 < len(pages) and pages[n + 1].resolve() in hrefs) == (n + 1 < len(pages))  # next
        media += sum(1 for attr, path in found if attr == "src" and path.suffix == ".mp4")
    assert media == JOBS - JOBS // 9  # every job that has a file shows it


def test_a_report_within_the_limit_stays_one_file(run_store: Store, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    written = write(run_store, target, single_file_jobs=JOBS, page_figures=10)
    assert written.folder is None and written.pages == 0
    assert not pages_folder(target).exists()
    assert len(KEY.findall(target.read_text(encoding="utf-8"))) == JOBS


class Crash(Exception):
    pass


def crash_after(calls: int, store: Store) -> Callable[[JobRow], Path | None]:
    """A media lookup that fails on its `calls`-th job: the process dies half-way through the pages."""
    out_dir = store.get_run("grid").out_dir
    seen = 0

    def media_file(row: JobRow) -> Path | None:
        nonlocal seen
        seen += 1
        if seen >= calls:
            raise Crash
        return job_media_file(row, out_dir)

    return media_file


def test_a_crash_mid_write_leaves_the_previous_report_whole(run_store: Store, tmp_path: Path) -> None:
    target = tmp_path / "site" / "report.html"
    write(run_store, target, single_file_jobs=20, page_figures=10)
    before = {p: p.read_bytes() for p in [target, *pages_folder(target).iterdir()]}
    with pytest.raises(Crash):
        write(run_store, target, media_file=crash_after(JOBS // 2, run_store), single_file_jobs=20, page_figures=30)
    assert {p: p.read_bytes() for p in [target, *pages_folder(target).iterdir()]} == before
    assert sorted(os.listdir(target.parent)) == [".report-pages.lock", "report-pages", "report.html"]  # no staging
    # and the next write replaces it whole: fewer, larger pages, none of the old ones left behind
    written = write(run_store, target, single_file_jobs=20, page_figures=30)
    assert sorted(p.name for p in pages_folder(target).iterdir()) == [page_file(n + 1) for n in range(written.pages)]
    assert written.pages < len(before) - 1
    assert sorted(os.listdir(target.parent)) == [".report-pages.lock", "report-pages", "report.html"]


def test_a_crash_on_the_first_write_leaves_no_index(run_store: Store, tmp_path: Path) -> None:
    target = tmp_path / "site" / "report.html"
    with pytest.raises(Crash):
        write(run_store, target, media_file=crash_after(JOBS // 2, run_store), single_file_jobs=20, page_figures=10)
    assert os.listdir(target.parent) == [".report-pages.lock"]


def test_a_file_where_the_pages_go_or_a_folder_as_the_report_is_an_output_error(
    run_store: Store, tmp_path: Path
) -> None:
    target = tmp_path / "report.html"
    pages_folder(target).write_text("mine", encoding="utf-8")
    with pytest.raises(OutputError, match="report-pages: it is a file"):
        write(run_store, target, single_file_jobs=20, page_figures=10)
    assert pages_folder(target).read_text(encoding="utf-8") == "mine" and not target.exists()
    with pytest.raises(OutputError, match="it is a folder"):
        write(run_store, tmp_path, single_file_jobs=20, page_figures=10)
    with pytest.raises(OutputError, match="it is a folder"):
        write(run_store, tmp_path, single_file_jobs=JOBS, page_figures=10)  # one file: the same words


def test_what_a_killed_writer_left_is_removed_and_a_live_one_is_not_disturbed(run_store: Store, tmp_path: Path) -> None:
    site = tmp_path / "site"
    target = site / "report.html"
    staged, moved = site / ".report-pages.k1ll3d.tmp", site / ".report-pages.0ld.old" / "pages"
    for leftover in (staged, moved):
        leftover.mkdir(parents=True)
        (leftover / page_file(1)).write_text("half", encoding="utf-8")
    with open(site / ".report-pages.lock", "w") as held:  # another report being written to the same place
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(OutputError, match="another `batchgen report` is writing"):
            write(run_store, target, single_file_jobs=20, page_figures=10)
        assert staged.is_dir() and moved.is_dir() and not target.exists()  # its folders are left alone
    written = write(run_store, target, single_file_jobs=20, page_figures=10)
    assert not staged.exists() and not moved.parent.exists()
    assert sorted(os.listdir(site)) == [".report-pages.lock", "report-pages", "report.html"]
    assert written.pages == len(os.listdir(pages_folder(target)))


def test_pages_are_cut_at_sections_and_before_a_row_that_would_overflow() -> None:
    rows = [(0, "a", "r1", 4), (0, "a", "r2", 4), (0, "a", "r3", 4), (1, "b", "r1", 12), (1, "b", "r2", 1)]
    plans = plan_pages(rows, 8)
    assert [(p.section, p.part, p.grid_rows, p.figures, p.first_row, p.last_row) for p in plans] == [
        (0, 1, 2, 8, "r1", "r2"),
        (0, 2, 1, 4, "r3", "r3"),
        (1, 1, 1, 12, "r1", "r1"),  # wider than a page: a page of its own, never split
        (1, 2, 1, 1, "r2", "r2"),
    ]
    assert [p.number for p in plans] == [1, 2, 3, 4]
    assert plan_pages([], 8) == []
    with pytest.raises(ValueError):
        plan_pages(rows, 0)


# What a section page shows once open: its figures, videos loaded so far (near the window), where its links go.
PAGE_STATE = """
JSON.stringify({
  title: document.title,
  figures: document.querySelectorAll("figure.job").length,
  cells: document.querySelectorAll("td.cell").length,
  loaded: [...document.querySelectorAll("figure.job video")].filter((v) => v.readyState >= 1).length,
  next: (document.querySelector('a[rel="next"]') || {}).href || null,
  index: document.querySelector('a[rel="index"]').href,
})
"""


@pytest.mark.browser
def test_a_section_page_draws_in_chromium_and_links_on(run_store: Store, tmp_path: Path) -> None:
    from .test_report_browser import DevTools, chromium_path, console_errors, evaluate, open_page

    target = tmp_path / "report.html"
    write(run_store, target, single_file_jobs=20, page_figures=24)
    first = pages_folder(target) / page_file(1)
    jobs_on_page = len(KEY.findall(first.read_text(encoding="utf-8")))
    browser = DevTools(chromium_path(), tmp_path / "profile")
    try:
        session = open_page(browser, first.as_uri())
        deadline = time.monotonic() + 20
        while (page := json.loads(evaluate(browser, session, PAGE_STATE)))["loaded"] == 0:
            assert time.monotonic() < deadline, page  # the videos in view load
            time.sleep(0.05)
        assert page["figures"] == jobs_on_page > 0 and page["cells"] > 0
        assert page["next"] == (pages_folder(target) / page_file(2)).as_uri()
        assert page["index"] == target.as_uri()
        assert console_errors(browser) == []
    finally:
        browser.close()
