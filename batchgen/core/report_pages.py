"""A report of any size: an index page, and section pages of at most a page's worth of jobs each.

Past a few thousand jobs one HTML file stops being a page a browser opens (a million jobs was 800 MB). So a large
run's report is an index (the summary, money, the grid's axes, every page listed by section) and, in a folder
next to it, section pages: each one section of the layout, or a run of its table rows, holding at most
`page_figures` jobs (a table row is never split, so a row wider than that has a page of its own), with links to the
index and the previous and next page. Media stay lazy on every page (report.py's script).

Everything here is pure: the engine (engine/report_pages.py) streams the rows, orders them and writes the files.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from batchgen.core.jobs import JobRow, JobStatus
from batchgen.core.money import LedgerRow, Money
from batchgen.core.report import (
    FigureBudget,
    GridRow,
    Layout,
    filters_html,
    fixed_axes_html,
    grid_table,
    html_document,
    summary_html,
)
from batchgen.core.report_tally import RunTally

__all__ = ["LayoutSample", "PagePlan", "index_html", "page_file", "plan_pages", "section_page_html"]

LAYOUT_SAMPLE = 20_000  # jobs the layout of a large report is chosen from: enough to see every axis vary


class LayoutSample:
    """A uniform sample of a stream of jobs, of at most `size` (reservoir sampling, seeded: the same run gives the
    same sample), for choosing the layout of a run too large to hold.

    What a sample can miss: an axis that varies only among a few jobs outside it. Such jobs are not lost; they
    share a cell with the jobs they differ from, side by side like repeats, each caption naming its values."""

    def __init__(self, size: int = LAYOUT_SAMPLE, seed: int = 15) -> None:
        self.size, self.seen = size, 0
        self.rows: list[JobRow] = []
        self._random = random.Random(seed)

    def add(self, row: JobRow) -> None:
        self.seen += 1
        if len(self.rows) < self.size:
            self.rows.append(row)
            return
        slot = self._random.randrange(self.seen)
        if slot < self.size:
            self.rows[slot] = row


@dataclass(frozen=True, slots=True)
class PagePlan:
    """One section page: which section, how many of its table rows (in order), and what to call it."""

    number: int  # 1-based, across the whole report
    section: int  # the section's number, in the order the sections were first seen
    section_label: str
    part: int  # 1-based, within the section
    grid_rows: int
    figures: int
    first_row: str  # the rows axis's label of its first and last table row
    last_row: str


def page_file(number: int) -> str:
    """A section page's file name in the pages folder."""
    return f"{number:04d}.html"


def plan_pages(grid_rows: Iterable[tuple[int, str, str, int]], page_figures: int) -> list[PagePlan]:
    """Cut the report's table rows, given in order as (section, section label, row label, jobs in the row), into
    pages: a new page at each section, and before a row that would take a page past `page_figures` jobs."""
    if page_figures < 1:
        raise ValueError(f"page_figures must be at least 1, got {page_figures}")
    plans: list[PagePlan] = []
    current: dict[str, Any] | None = None

    def close() -> None:
        if current is not None:
            plans.append(PagePlan(number=len(plans) + 1, **current))

    for section, label, row, figures in grid_rows:
        same_section = current is not None and current["section"] == section
        if current is None or not same_section or current["figures"] + figures > page_figures:
            close()
            part = current["part"] + 1 if current is not None and same_section else 1
            current = {"section": section, "section_label": label, "part": part, "grid_rows": 0, "figures": 0,
                       "first_row": row, "last_row": row}  # fmt: skip
        current["grid_rows"] += 1
        current["figures"] += figures
        current["last_row"] = row
    close()
    return plans


def _e(text: str) -> str:
    return escape(text, quote=True)


def _span(plan: PagePlan, layout: Layout) -> str:
    """What a page holds, as its link text: the rows from first to last, or its number when there is no rows axis."""
    if layout.rows_axis is None:
        return f"page {plan.part}"
    if plan.first_row == plan.last_row:
        return plan.first_row
    return f"{plan.first_row} … {plan.last_row}"


def index_html(
    title: str,
    tally: RunTally,
    layout: Layout,
    pages: Sequence[PagePlan],
    pages_href: str,
    *,
    money: Money | None = None,
    unused: Sequence[LedgerRow] = (),
    run: str = "",
) -> str:
    """The index of a paged report: the summary and money as on a one-page report, then every section with links
    to its pages (`pages_href` is the pages folder, relative to the index)."""
    body = [f"<h1>{_e(title)}</h1>", summary_html(tally, layout, money=money, unused=unused, run=run)]
    body.append(fixed_axes_html(tally))
    body.append(
        f'<p class="paged">{tally.jobs:,} jobs on {len(pages):,} page(s) of at most '
        f"{max((p.figures for p in pages), default=0):,} jobs each, in <code>{_e(pages_href)}/</code>.</p>"
    )
    if not pages:
        body.append("<p>No jobs in this run yet.</p>")
    section: int | None = None
    for plan in pages:
        if plan.section != section:
            if section is not None:
                body.append("</ol></section>")
            section = plan.section
            heading = plan.section_label or "every job"
            body.append(f'<section class="plane"><h2>{_e(heading)}</h2><ol class="pages">')
        body.append(
            f'<li><a href="{_e(pages_href)}/{page_file(plan.number)}">{_e(_span(plan, layout))}</a> '
            f'<span class="count">{plan.figures:,} job(s)</span></li>'
        )
    if section is not None:
        body.append("</ol></section>")
    return html_document(title, "".join(body))


def _navigation(plan: PagePlan, total: int, index_href: str) -> str:
    links = [f'<a href="{_e(index_href)}" rel="index">index</a>']
    if plan.number > 1:
        links.append(f'<a href="{page_file(plan.number - 1)}" rel="prev">← previous</a>')
    links.append(f"<span>page {plan.number:,} of {total:,}</span>")
    if plan.number < total:
        links.append(f'<a href="{page_file(plan.number + 1)}" rel="next">next →</a>')
    return f'<nav class="pages">{" · ".join(links)}</nav>'


def section_page_html(
    title: str,
    layout: Layout,
    plan: PagePlan,
    total: int,
    col_labels: Sequence[str],
    grid_rows: Iterable[GridRow],
    *,
    statuses: Iterable[JobStatus],
    index_href: str,
) -> str:
    """One section page: the navigation, the section's heading, the status filter and its part of the grid."""
    nav = _navigation(plan, total, index_href)
    heading = " · ".join(p for p in (plan.section_label, f"part {plan.part}") if p)
    body = [
        f"<h1>{_e(title)}</h1>",
        nav,
        filters_html(statuses),
        f'<section class="plane"><h2>{_e(heading)}</h2>',
        grid_table(layout, col_labels, grid_rows, FigureBudget()),
        "</section>",
        nav,
    ]
    return html_document(f"{title} · {heading}", "".join(body))
