"""Report: a self-contained HTML contact sheet of a run, laid out like an X/Y/Z plot.

Two axes (template variables, parameters, `model` or `prompt`) span a grid of rows and columns; every other axis
that varies independently splits the page into sections. Each cell holds its jobs (repeats side by side): the
video or image, or the error, or the status of a job still under way. Nothing is fetched from the network:
styles and the small filter script are inline, and media are linked by the hrefs the caller gives (relative to
the HTML file, see `relative_href`), so the page works straight from disk.

Axes derived from others (a prompt templated from `subject` and `style`) are not made into sections of their
own; they are shown in each cell's caption instead.

A run of any size opens at once: the page draws its first DRAWN_FIGURES figures, and keeps every later table row
as data that its script draws as the row comes near the window (IntersectionObserver); images are
`loading="lazy"`, and videos `preload="none"` until they come near.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from batchgen.core.export import cell_text
from batchgen.core.jobs import JobRow, JobStatus, canonical_json
from batchgen.core.money import LedgerRow, Money
from batchgen.core.report_assets import CSS, JS
from batchgen.core.report_tally import PSEUDO_AXES, RunTally, axis_value
from batchgen.errors import BatchgenError

__all__ = [
    "FigureBudget",
    "GridRow",
    "Layout",
    "axis_names",
    "choose_layout",
    "estimated_finish",
    "filters_html",
    "fixed_axes_html",
    "grid_table",
    "html_document",
    "job_figure",
    "relative_href",
    "render_report",
    "section_heading",
    "section_label",
    "summary_html",
]

# A page opens at any size: the first DRAWN_FIGURES figures are drawn at once, every later table row waits as data
# (in groups of about LATER_FIGURES figures) until it comes near the window; media load only as they come near.
DRAWN_FIGURES = 200
LATER_FIGURES = 100


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Defence in depth behind html.escape: only our own style and script run, nothing is fetched but local media.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_sha256(CSS)}; script-src {_sha256(JS)}; "
    "img-src 'self' file: data:; media-src 'self' file:; base-uri 'none'; form-action 'none'"
)
_FAILED = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.UNKNOWN})


@dataclass(frozen=True, slots=True)
class Layout:
    """Which axis runs down the rows, which across the columns, and which split the page into sections."""

    rows_axis: str | None
    cols_axis: str | None
    section_axes: tuple[str, ...] = ()


def axis_names(rows: Iterable[JobRow]) -> list[str]:
    """Every axis a grid can use: variables, then parameters (first-seen order), then `model` and `prompt`."""
    names: dict[str, None] = {}
    materialised = list(rows)
    for row in materialised:
        names.update(dict.fromkeys(k for k in row.variables if k not in PSEUDO_AXES))
    for row in materialised:
        names.update(dict.fromkeys(k for k in row.params if k not in PSEUDO_AXES))
    return [*names, *PSEUDO_AXES]


class _AxisKeys:
    """Each axis's grouping key per job, computed once: layout choice asks many dependency questions."""

    def __init__(self, rows: Sequence[JobRow], names: Sequence[str]) -> None:
        self.keys = {name: [canonical_json(axis_value(row, name)) for row in rows] for name in names}

    def distinct(self, axis: str) -> int:
        return len(set(self.keys[axis]))

    def determines(self, given: Sequence[str], target: str) -> bool:
        """True when the values of the `given` axes fix the value of `target` (a functional dependency)."""
        seen: dict[tuple[str, ...], str] = {}
        targets = self.keys[target]
        sources = zip(*(self.keys[g] for g in given), strict=True) if given else [()] * len(targets)
        for source, value in zip(sources, targets, strict=True):
            if seen.setdefault(source, value) != value:
                return False
        return True


def choose_layout(
    rows: Sequence[JobRow],
    rows_axis: str | None = None,
    cols_axis: str | None = None,
    *,
    names: Sequence[str] | None = None,
) -> Layout:
    """Pick the grid: the named axes, else the two independent varying axes with the most distinct values
    (the larger down the rows); every remaining axis not already fixed by the grid becomes a section axis.

    `names` are the run's axes when `rows` are a sample of it (a large report lays out from a sample)."""
    names = list(names) if names is not None else axis_names(rows)
    for chosen in (rows_axis, cols_axis):
        if chosen is not None and chosen not in names:
            raise BatchgenError(f"no axis named {chosen!r} in this run; choose one of: {', '.join(names)}")
    keys = _AxisKeys(rows, names)
    varying = [n for n in names if keys.distinct(n) > 1]
    independent: list[str] = []
    for name in varying:  # drop axes that merely rename another (same grouping of jobs)
        if not any(keys.determines([m], name) and keys.determines([name], m) for m in independent):
            independent.append(name)
    candidates = []
    for name in independent:  # drop axes derived from two or more others, like a templated prompt
        parts = [m for m in independent if m != name and keys.determines([name], m)]
        if not (len(parts) >= 2 and keys.determines(parts, name)):
            candidates.append(name)
    ranked = sorted(candidates, key=lambda n: -keys.distinct(n))

    def unrelated(name: str, other: str | None) -> bool:
        return other is None or not (keys.determines([other], name) or keys.determines([name], other))

    if rows_axis is None:
        rows_axis = next((n for n in ranked if n != cols_axis and unrelated(n, cols_axis)), None)
    if cols_axis is None:
        cols_axis = next((n for n in ranked if n != rows_axis and unrelated(n, rows_axis)), None)
    fixed = [a for a in (rows_axis, cols_axis) if a is not None]
    sections: list[str] = []
    for name in candidates:
        if name not in fixed and not keys.determines([*fixed, *sections], name):
            sections.append(name)
    return Layout(rows_axis, cols_axis, tuple(sections))


def relative_href(target: str | os.PathLike[str], report_dir: str | os.PathLike[str]) -> str:
    """A URL-encoded href to a file, relative to the directory the HTML report is written to."""
    relative = os.path.relpath(target, report_dir).replace(os.sep, "/")
    return quote(relative)  # also turns `a:b.mp4` into `a%3Ab.mp4`, which no browser reads as a URL scheme


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else cell_text(value), quote=True)


def _money(amount: float | None) -> str:
    return "—" if amount is None else f"${amount:,.2f}"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m {whole % 60:02d}s"
    if whole >= 60:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{seconds:.1f}s"


def estimated_finish(rows: Sequence[JobRow]) -> datetime | None:
    """When the unfinished jobs should be done, at the pace jobs have finished so far (from the first intent to the
    last finish); None while nothing has finished, or when nothing is left."""
    left = sum(1 for r in rows if not r.status.is_terminal)
    finishes = [r.completed_at for r in rows if r.status.is_terminal and isinstance(r.completed_at, datetime)]
    starts = [r.intent_at for r in rows if isinstance(r.intent_at, datetime)]
    if not left or not finishes or not starts:
        return None
    last = max(finishes)
    elapsed = (last - min(starts)).total_seconds()
    if elapsed <= 0:
        return None
    return last + timedelta(seconds=left * elapsed / len(finishes))


def _summary(tally: RunTally, layout: Layout, eta: datetime | None = None) -> str:
    wall = _duration((tally.last - tally.first).total_seconds()) if tally.first and tally.last else "—"
    items = [("jobs", str(tally.jobs))]
    items += [(str(s), str(tally.counts[s])) for s in JobStatus if tally.counts.get(s)]
    items += [("cost", _money(tally.cost)), ("estimated", _money(tally.estimated))]
    items.append(("wall time" if tally.done else "wall time so far", wall))
    if eta is not None:
        items.append(("eta", f"~{eta:%H:%M:%S} UTC"))
    grid = [f"rows: {layout.rows_axis or '—'}", f"columns: {layout.cols_axis or '—'}"]
    if layout.section_axes:
        grid.append(f"sections: {', '.join(layout.section_axes)}")
    items.append(("grid", " · ".join(grid)))
    cells = "".join(f'<div class="stat-{_e(k)}"><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>' for k, v in items)
    return f'<div class="summary"><dl>{cells}</dl></div>'


def fixed_axes_html(tally: RunTally) -> str:
    """The line naming the axes every job shares, and their values."""
    parts = [f"<b>{_e(n)}</b>: {_e(value)}" for n, value in tally.fixed_axes()]
    return f'<p class="fixed">same for every job · {" · ".join(parts)}</p>' if parts else ""


def filters_html(statuses: Iterable[JobStatus]) -> str:
    """The status filter: a checkbox per status shown (unticked, the page hides that status's jobs)."""
    present = set(statuses)
    boxes = "".join(
        f'<label><input type="checkbox" checked data-status="{_e(str(s))}"> {_e(str(s))}</label>'
        for s in JobStatus
        if s in present
    )
    return f'<div class="filters">show: {boxes}</div>'


def _media(row: JobRow, href: str | None) -> str:
    status = row.status
    if status == JobStatus.SUCCEEDED and href:
        if row.media_type == "image":
            return f'<img src="{_e(href)}" alt="{_e(row.prompt)}" loading="lazy">'
        return f'<video controls muted preload="none" src="{_e(href)}"></video>'  # the script loads it when near
    if status in _FAILED:
        what = row.error_class or str(status)
        return f'<div class="placeholder failed"><span><b>{_e(what)}</b>{_e(row.error or "")}</span></div>'
    if status == JobStatus.SUCCEEDED:
        link = ""
        if row.result_url and row.result_url.startswith(("https://", "http://")):
            link = f' · <a href="{_e(row.result_url)}" rel="noreferrer">remote copy</a>'
        return f'<div class="placeholder">no local file{link}</div>'
    return f'<div class="placeholder">{_e(str(status))}…</div>'


def job_figure(row: JobRow, href: str | None) -> str:
    """One job's figure: its media (or error, or status), badge and caption; the live gallery swaps it in place."""
    status = str(row.status)
    badge = "badge" if row.status.is_terminal else "badge waiting"
    facts = [f'<span class="{badge}">{_e(status)}</span>', f"#{row.repeat}"]
    if row.cost is not None:
        facts.append(_money(row.cost))
    if isinstance(row.started_at, datetime) and isinstance(row.completed_at, datetime):
        facts.append(_duration((row.completed_at - row.started_at).total_seconds()))
    params = {**row.variables, **row.params, "model": row.model, "job_key": row.job_key}
    details = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in params.items())
    return (
        f'<figure class="job st-{_e(status)}" data-key="{_e(row.job_key)}">{_media(row, href)}'
        f'<figcaption class="cap">{" ".join(facts)}'
        f'<div class="clamp" title="{_e(row.prompt)}">{_e(row.prompt)}</div>'
        f"<details><summary>parameters</summary><dl>{details}</dl></details></figcaption></figure>"
    )


def _values(rows: Sequence[JobRow], axis: str | None) -> list[tuple[str, Any]]:
    """The distinct values of an axis among these rows (one section) as (grouping key, value), first-seen order.

    Per section rather than for the whole run: a job outside the matrix (another model, no such variable)
    gets a section of its own instead of an empty row and column in every other section."""
    if axis is None:
        return [("", None)]
    found: dict[str, Any] = {}
    for row in rows:
        value = axis_value(row, axis)
        found.setdefault(canonical_json(value), value)
    return list(found.items())


def _label(value: Any) -> str:
    return "—" if value is None else cell_text(value)  # None: the job has no such variable or parameter


def _header(value: Any, scope: str) -> str:
    text = _e(_label(value))
    return f'<th scope="{scope}"><span class="clamp" title="{text}">{text}</span></th>'


class FigureBudget:
    """How many figures a page still draws at once; the rows after those wait as data (`_later`)."""

    def __init__(self, figures: int = DRAWN_FIGURES) -> None:
        self.left = figures


def _later(rows: list[str], columns: int) -> str:
    """Table rows kept as a JSON string in a data block, which the parser reads as plain text (a 10,000-cell page
    was 4 s of parsing); the report's script draws them when they come near the window. `</` and `<!--` are
    escaped (JSON's own escapes), so nothing in the rows can end the block or change how it is read."""
    data = json.dumps("".join(rows), ensure_ascii=False).replace("</", "<\\/").replace("<!--", "\\u003c!--")
    return (
        f'<tr class="later" data-rows="{len(rows)}"><td colspan="{columns}">'
        f'<script type="application/json">{data}</script></td></tr>'
    )


# One table row of a grid: the value of the rows axis, and each column's figures (none: an empty cell).
GridRow = tuple[Any, Sequence[Sequence[str]]]


def grid_table(layout: Layout, col_values: Sequence[Any], grid_rows: Iterable[GridRow], budget: FigureBudget) -> str:
    """A section's grid as a table: a header of `col_values`, then the rows; once `budget` is spent, later rows wait
    as data the script draws when they come near the window."""
    out = ['<div class="scroll"><table class="grid">']
    if layout.cols_axis is not None:
        corner = f"{layout.rows_axis or ''} ↓ / {layout.cols_axis} →" if layout.rows_axis else f"{layout.cols_axis} →"
        out.append(f'<thead><tr><th class="corner">{_e(corner)}</th>')
        out += [_header(v, "col") for v in col_values]
        out.append("</tr></thead>")
    out.append("<tbody>")
    columns = len(col_values) + (layout.rows_axis is not None or layout.cols_axis is not None)
    waiting: list[str] = []
    waiting_figures = 0
    for row_value, cells in grid_rows:
        tr = ["<tr>"]
        if layout.rows_axis is not None:
            tr.append(_header(row_value, "row"))
        elif layout.cols_axis is not None:
            tr.append('<th scope="row"></th>')
        figures_in_row = 0
        for figures in cells:
            if figures:
                figures_in_row += len(figures)
                tr.append(f'<td class="cell"><div class="repeats">{"".join(figures)}</div></td>')
            else:
                tr.append('<td class="cell empty">—</td>')
        tr.append("</tr>")
        if budget.left > 0:
            budget.left -= figures_in_row
            out.append("".join(tr))
            continue
        waiting.append("".join(tr))
        waiting_figures += figures_in_row
        if waiting_figures >= LATER_FIGURES:
            out.append(_later(waiting, columns))
            waiting, waiting_figures = [], 0
    if waiting:
        out.append(_later(waiting, columns))
    out.append("</tbody></table></div>")
    return "".join(out)


def _table(
    rows: Sequence[JobRow], layout: Layout, cells: dict[tuple[str, ...], list[str]], section: str, budget: FigureBudget
) -> str:
    row_values, col_values = _values(rows, layout.rows_axis), _values(rows, layout.cols_axis)
    grid_rows = (
        (row_value, [cells.get((section, row_key, col_key), ()) for col_key, _ in col_values])
        for row_key, row_value in row_values
    )
    return grid_table(layout, [v for _, v in col_values], grid_rows, budget)


def section_label(layout: Layout, row: JobRow) -> str:
    """The heading of the section a job belongs to (`axis = value · ...`); empty when the grid has no sections."""
    return section_heading(layout, [axis_value(row, a) for a in layout.section_axes])


def section_heading(layout: Layout, values: Sequence[Any]) -> str:
    """The heading of the section whose section axes have these values."""
    return " · ".join(f"{a} = {_label(v)}" for a, v in zip(layout.section_axes, values, strict=True))


def html_document(title: str, body: str, live_script: str | None = None) -> str:
    """A report page around `body`: the inline style and script, and the policy that lets only them run."""
    script, policy = JS, CONTENT_SECURITY_POLICY
    if live_script is not None:
        script = JS + live_script
        policy = policy.replace(_sha256(JS), _sha256(script)) + "; connect-src 'self'"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(policy)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="batchgen"><title>{_e(title)}</title><style>{CSS}</style></head>'
        f"<body>{body}<script>{script}</script></body></html>\n"
    )


def _money_box(money: Money, unused: Sequence[LedgerRow], run: str) -> str:
    """Spent, reserved, budget and left; then, loudly, every generation that is paid for but used by no job."""
    items = [("spent", _money(money.spent)), ("reserved", _money(money.reserved))]
    if money.budget is not None:
        items += [("budget", _money(money.budget)), ("left", _money(money.left))]
    cells = "".join(f'<div class="stat-{_e(k)}"><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>' for k, v in items)
    html = f'<div class="summary money"><dl>{cells}</dl></div>'
    if unused:
        listed = "".join(
            f"<li><code>{_e(u.generation_id)}</code> {_e(u.model)} · {_e(u.remote_status)} · "
            f"{_e(_money(u.cost if u.cost is not None else u.estimated_cost))}</li>"
            for u in unused
        )
        html += (
            f'<div class="unused" role="alert"><strong>{len(unused)} generation(s) are paid for but used by no '
            f"job ({_e(_money(money.unused_cost))})</strong>: <code>batchgen unused {_e(run)} --download</code> "
            f"fetches them.<ul>{listed}</ul></div>"
        )
    return html


def summary_html(
    rows: Sequence[JobRow] | RunTally,
    layout: Layout,
    *,
    money: Money | None = None,
    unused: Sequence[LedgerRow] = (),
    run: str = "",
    eta: datetime | None = None,
) -> str:
    """The summary (counts, cost, times, the grid's axes) and, when `money` is given, the money box: the piece of
    the page above the grid that the live gallery replaces as one. `rows` may come already added up (a run too
    large to hold)."""
    tally = rows if isinstance(rows, RunTally) else RunTally.of(rows)
    html = _summary(tally, layout, eta) if tally.jobs else ""
    if money is not None:
        html += _money_box(money, unused, run)
    return html


def render_report(
    rows: Iterable[JobRow],
    *,
    title: str,
    media_href: Callable[[JobRow], str | None],
    rows_axis: str | None = None,
    cols_axis: str | None = None,
    money: Money | None = None,
    unused: Sequence[LedgerRow] = (),
    live_script: str | None = None,
    eta: datetime | None = None,
) -> str:
    """The whole report as one HTML document. `media_href(row)` gives the src of a job's file (relative to the
    report, see `relative_href`) or None when there is none to show. `money` and `unused` come from the run's
    ledger. Every piece of text is escaped.

    `live_script` makes it the live gallery's page: the summary sits in `#live-summary`, the filter offers every
    status (jobs change status while the page is open), the script runs after the report's own, and the page may
    connect back to where it came from (`connect-src 'self'`) for its event stream."""
    jobs = sorted(rows, key=lambda r: r.repeat)  # stable: keeps matrix order, puts repeats left to right
    layout = choose_layout(jobs, rows_axis, cols_axis)
    axis_keys = [layout.rows_axis, layout.cols_axis]
    cells: dict[tuple[str, ...], list[str]] = {}
    sections: dict[str, list[JobRow]] = {}
    for job in jobs:
        section = canonical_json([axis_value(job, a) for a in layout.section_axes])
        sections.setdefault(section, []).append(job)
        row_key, col_key = (canonical_json(axis_value(job, a)) if a else "" for a in axis_keys)
        cells.setdefault((section, row_key, col_key), []).append(job_figure(job, media_href(job)))
    tally = RunTally.of(jobs)
    run = jobs[0].run if jobs else title
    summary = summary_html(tally, layout, money=money, unused=unused, run=run, eta=eta)
    body = [f"<h1>{_e(title)}</h1>", f'<div id="live-summary">{summary}</div>' if live_script else summary]
    body.append(fixed_axes_html(tally))
    body.append(filters_html(JobStatus if live_script is not None else tally.counts))
    if not jobs:
        body.append("<p>No jobs in this run yet.</p>")
    budget = FigureBudget(DRAWN_FIGURES)
    if len(jobs) > DRAWN_FIGURES:
        body.append(f"<noscript><p>Without JavaScript this page shows its first {DRAWN_FIGURES} jobs.</p></noscript>")
    for section, members in sections.items():
        body.append('<section class="plane">')
        if layout.section_axes:
            body.append(f"<h2>{_e(section_label(layout, members[0]))}</h2>")
        body.append(_table(members, layout, cells, section, budget))
        body.append("</section>")
    return html_document(title, "".join(body), live_script)
