"""Rows files as spreadsheets save them: a CSV from Excel (UTF-8 with a byte-order mark, CRLF line ends)."""

from __future__ import annotations

import json
from pathlib import Path

from batchgen.core.rows import RowsSource, parse_rows

from .fakes import seed_cache, write
from .test_cli_plan import plan

EXCEL_CSV = '\ufeffprompt,duration,shot\r\n"A yak, surfing",5,wide\r\nAn ox at dawn,10,close\r\n'.encode()
MANIFEST = """name: excel
model: kling-video-v2-6-pro-text-to-video
params:
  aspect_ratio: "16:9"
rows:
  file: rows.csv
  types: {duration: int}
"""


def test_a_csv_saved_by_excel_plans_like_any_other(tmp_path: Path, isolated_state: Path) -> None:
    (tmp_path / "rows.csv").write_bytes(EXCEL_CSV)
    seed_cache(isolated_state)
    result = plan(str(write(tmp_path, MANIFEST)), "--offline", "--json", state=isolated_state)
    assert result.returncode == 0, result.stderr
    assert "\ufeff" not in result.stderr + result.stdout and "`prompt` is not" not in result.stderr
    jobs = json.loads(result.stdout)["jobs"]
    prompts = sorted(job["params"]["prompt"] for job in jobs)
    assert prompts == ["A yak, surfing", "An ox at dawn"]
    assert all("\r" not in str(job["params"]) for job in jobs)


def test_the_pure_parser_drops_a_byte_order_mark_too() -> None:
    source = RowsSource(path=Path("rows.csv"), format="csv", types={}, where="m.yaml:5")
    layers, problems = parse_rows(EXCEL_CSV.decode("utf-8"), source)
    assert problems == []
    assert [dict(layer.values)["prompt"] for layer in layers] == ["A yak, surfing", "An ox at dawn"]
