from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from batchgen.core import report
from batchgen.core.jobs import JobRow, JobStatus
from batchgen.core.report import Layout, choose_layout, relative_href, render_report
from batchgen.errors import BatchgenError

from .rows import MakeRow

HOSTILE = """<script>alert("x")</script>"'><img src=x onerror=alert(1)>&amp;"""


class Elements(HTMLParser):
    """Counts start tags by `tag.class` and keeps every attribute value and text node."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for name, value in attrs:
            self.attrs.append((tag, name, value or ""))
            if name == "class":
                for cls in (value or "").split():
                    self.tags[f"{tag}.{cls}"] += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def render(rows: list[JobRow], **kwargs: str | None) -> str:
    return render_report(rows, title="t", media_href=lambda r: f"media/{r.job_key}.mp4", **kwargs)  # type: ignore[arg-type]


def test_public_api() -> None:
    assert set(report.__all__) == {
        "FigureBudget", "GridRow", "Layout", "axis_names", "choose_layout", "estimated_finish", "filters_html",
        "fixed_axes_html", "grid_table", "html_document", "job_figure", "relative_href", "render_report",
        "section_heading", "section_label", "summary_html",
    }  # fmt: skip


def test_demo_layout_puts_the_templated_prompt_in_captions_not_in_sections(demo_rows: list[JobRow]) -> None:
    # prompt = f(subject, style): it has the most values but is derived, so it is neither an axis nor a section
    assert choose_layout(demo_rows) == Layout("subject", "style", ("seconds",))


def test_demo_report_has_one_cell_per_section_row_and_column(demo_rows: list[JobRow]) -> None:
    page = Elements(render(demo_rows))
    assert page.tags["section.plane"] == 2  # seconds: 4, 8
    assert page.tags["td.cell"] == 2 * 3 * 2
    assert page.tags["figure.job"] == 24
    assert page.tags["video"] == 24 - 2 - 3  # minus failed, minus in flight
    assert page.tags["figure.st-failed"] == 2
    assert page.tags["figure.st-processing"] == 2 and page.tags["figure.st-queued"] == 1
    assert page.tags["th"] == 2 * (1 + 2 + 3)  # per section: corner, 2 columns, 3 rows
    # repeats sit side by side in one cell: 12 cells hold 24 jobs
    assert re.findall(r'<td class="cell">(.*?)</td>', render(demo_rows))[0].count("<figure") == 2


@pytest.mark.parametrize(
    ("axes", "rows_axis", "cols_axis", "cells", "sections"),
    [
        ({}, None, None, 1, 1),
        ({"prompt": ["a", "b", "c", "d", "e"]}, "prompt", None, 5, 1),
        ({"seed": [1, 2, 3], "seconds": ["4", "8"]}, "seed", "seconds", 6, 1),
        ({"seed": [1, 2], "seconds": ["4", "8", "12"], "size": ["s", "m", "l", "xl"]}, "size", "seconds", 24, 2),
    ],
)
def test_cell_counts_per_grid_shape(
    make_row: MakeRow,
    axes: dict[str, list[object]],
    rows_axis: str | None,
    cols_axis: str | None,
    cells: int,
    sections: int,
) -> None:
    combos: list[dict[str, object]] = [{}]
    for name, values in axes.items():
        combos = [{**c, name: v} for c in combos for v in values]
    rows = [
        make_row(str(c.get("prompt", "p")), params={k: v for k, v in c.items() if k != "prompt"}, repeat=r)
        for c in combos
        for r in range(2)
    ]
    layout = choose_layout(rows)
    assert (layout.rows_axis, layout.cols_axis) == (rows_axis, cols_axis)
    page = Elements(render(rows))
    assert page.tags["td.cell"] == cells
    assert page.tags["section.plane"] == sections
    assert page.tags["figure.job"] == len(rows)


def test_a_job_outside_the_matrix_gets_its_own_section_not_empty_rows(make_row: MakeRow) -> None:
    # the shape of manifests/demo.yaml: place x aspect_ratio x zipped (animal, car), plus one image job
    rows = [
        make_row(f"{a} {c} {p}", params={"aspect_ratio": r}, variables={"place": p, "animal": a, "car": c})
        for p in ("car wash", "desert")
        for r in ("landscape", "portrait")
        for a, c in (("ox", "tractor"), ("yak", "convertible"))
    ]
    rows.append(make_row("poster", params={"aspect_ratio": "16:9"}, model="flux-1-dev", media_type="image"))
    assert choose_layout(rows) == Layout("place", "animal", ("aspect_ratio",))  # car merely renames animal
    html = render(rows)
    page = Elements(html)
    assert page.tags["section.plane"] == 3
    assert page.tags["td.cell"] == 2 * 2 + 2 * 2 + 1
    assert page.tags["td.empty"] == 0
    assert "<h2>aspect_ratio = 16:9</h2>" in html and ">—</span></th>" in html  # the image has no place


def test_named_axes_override_the_automatic_choice(demo_rows: list[JobRow]) -> None:
    assert choose_layout(demo_rows, rows_axis="seconds") == Layout("seconds", "subject", ("style",))
    # the derived prompt as rows fixes subject and style, so they need no sections
    assert choose_layout(demo_rows, rows_axis="prompt", cols_axis="seconds") == Layout("prompt", "seconds", ())
    page = Elements(render(demo_rows, rows_axis="prompt", cols_axis="seconds"))
    assert page.tags["td.cell"] == 6 * 2
    assert page.tags["section.plane"] == 1


def test_unknown_axis_is_a_user_error_naming_the_choices(demo_rows: list[JobRow]) -> None:
    with pytest.raises(BatchgenError, match=r"no axis named 'colour'.*subject, style, seconds, size, model, prompt"):
        choose_layout(demo_rows, cols_axis="colour")


def test_missing_combinations_are_empty_cells(make_row: MakeRow) -> None:
    rows = [make_row("a", params={"seed": 1}), make_row("b", params={"seed": 2}), make_row("a", params={"seed": 2})]
    page = Elements(render(rows))
    assert page.tags["td.cell"] == 4
    assert page.tags["td.empty"] == 1


def test_hostile_text_is_escaped_everywhere(make_row: MakeRow) -> None:
    row = make_row(
        HOSTILE,
        params={HOSTILE: HOSTILE, "seed": 1},
        variables={"subject": HOSTILE},
        status=JobStatus.FAILED,
        error=HOSTILE,
        error_class=HOSTILE,
    )
    other = make_row("plain", params={"seed": 2}, result_url="javascript:alert(1)", output_path=None)
    html = render_report([row, other], title=HOSTILE, media_href=lambda r: None)
    assert html.count("<script") == 1  # ours, at the end
    assert "<img" not in html
    assert "javascript:" not in html
    page = Elements(html)
    assert page.tags["script"] == 1 and page.tags["img"] == 0
    assert any(HOSTILE in t for t in page.text)  # shown to the reader, as text
    assert ("div", "title", HOSTILE) in page.attrs  # and intact inside attributes


def test_media_hrefs_are_escaped_in_attributes(make_row: MakeRow) -> None:
    html = render_report([make_row("a")], title="t", media_href=lambda r: 'x"onload="alert(1).mp4')
    assert ("video", "src", 'x"onload="alert(1).mp4') in Elements(html).attrs
    assert "onload=" not in html.replace("&quot;onload=&quot;", "")


def test_statuses_are_marked_and_failures_show_their_error(make_row: MakeRow) -> None:
    rows = [
        make_row("ok", params={"seed": 1}, cost=1.5, estimated_cost=1.5),
        make_row("bad", params={"seed": 2}, status=JobStatus.FAILED, error="moderation blocked", error_class="policy"),
        make_row("wait", params={"seed": 3}, status=JobStatus.PENDING, estimated_cost=2.0),
        make_row("img", params={"seed": 4}, media_type="image"),
    ]
    html = render(rows)
    page = Elements(html)
    assert page.tags["video"] == 1 and page.tags["img"] == 1
    assert "moderation blocked" in html and "policy" in html
    assert "pending…" in html
    summary = html[html.index('class="summary"') : html.index("</dl>")]
    assert "<dt>succeeded</dt><dd>2</dd>" in summary
    assert "<dt>failed</dt><dd>1</dd>" in summary and "<dt>pending</dt><dd>1</dd>" in summary
    assert "<dt>cost</dt><dd>$1.50</dd>" in summary and "<dt>estimated</dt><dd>$3.50</dd>" in summary
    assert "wall time so far" in summary


def test_inline_style_and_script_match_the_content_security_policy(demo_rows: list[JobRow]) -> None:
    html = render(demo_rows)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert policy is not None
    for tag in ("style", "script"):
        body = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert body is not None
        digest = base64.b64encode(hashlib.sha256(body.group(1).encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in unescape(policy.group(1))
    assert "http" not in re.sub(r"https://cdn\.example/\w+\.mp4|http-equiv", "", html)  # nothing fetched


def test_relative_href_is_relative_to_the_report_and_url_encoded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert relative_href(out / "demo" / "a b#1?.mp4", out) == "demo/a%20b%231%3F.mp4"
    assert relative_href(tmp_path / "elsewhere" / "x.mp4", out / "reports") == "../../elsewhere/x.mp4"
    assert relative_href(out / "javascript:alert(1).mp4", out) == "javascript%3Aalert%281%29.mp4"
    assert relative_href(out / "ümlaut.mp4", out) == "%C3%BCmlaut.mp4"


def test_a_large_report_draws_its_first_rows_and_keeps_the_others_as_inert_data(make_row: MakeRow) -> None:
    rows = [
        make_row(f"{HOSTILE} {n // 4}", params={"seed": n % 4}, variables={"subject": f"{HOSTILE} {n // 4}"})
        for n in range(1_000)
    ]
    html = render(rows)
    drawn, _, rest = html.partition('<tr class="later"')
    assert report.DRAWN_FIGURES <= drawn.count("<figure") < report.DRAWN_FIGURES + 4  # whole table rows of 4
    blocks = re.findall(r'<script type="application/json">(.*?)</script>', rest, re.S)
    assert len(blocks) == rest.count('<tr class="later"') + 1 > 2
    assert not any("</" in b or "<!--" in b for b in blocks)  # nothing can end a block early
    waiting = "".join(json.loads(b) for b in blocks)
    assert drawn.count("<figure") + waiting.count("<figure") == len(rows)  # every job, once
    page = Elements(drawn + waiting)
    assert page.tags["script"] == 0 and page.tags["img"] == 0  # the hostile text stays text when drawn later
    assert sum(HOSTILE in t for t in page.text) >= len(rows) - report.DRAWN_FIGURES
    assert 'preload="none"' in waiting and 'preload="metadata"' not in html  # videos load when near


def test_a_small_report_is_drawn_whole(demo_rows: list[JobRow]) -> None:
    html = render(demo_rows)
    assert 'class="later"' not in html and "<noscript>" not in html
