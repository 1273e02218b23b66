"""Job keys pinned to the values batchgen has always computed: resume finds a run's jobs by key, so a faster
expansion or encoding must give byte-identical keys (these were recorded before the issue-15 rework)."""

from __future__ import annotations

import datetime
from pathlib import Path

from batchgen.core.expansion import expand
from batchgen.core.jobs import canonical_json, job_key
from batchgen.engine.manifests import load_manifest

from .fakes import infos, write

MATRIX = """\
model: openai-sora-2-pro
params: {prompt: 'A {animal} driving a {car}', car: tractor}
matrix:
  animal: [ox, "yak é", "{{braces}}"]
  seconds: ['4', '12']
  aspect_ratio: [landscape, portrait]
repeat: 2
"""
JSONL = (
    '{"prompt": "ox \\u00e9 \\ud83d\\udc02", "seed": 7}\n'
    '{"prompt": "yak", "seed": 7.5, "extra": [1, true, null, {"b": 2, "a": 1.0}]}\n'
    '{"prompt": "emu", "model": "kling-video-v2-6-pro-text-to-video", "duration": 5, "generate_audio": true}\n'
)
CSV = 'prompt,seconds,n\nox,4,1\n"a, ""quoted"" ox",8,2\n'


def keys_of(path: Path) -> list[str]:
    expansion = expand(load_manifest(path), infos())
    assert not expansion.problems
    return [job.spec.key for job in expansion.jobs]


def test_matrix_keys_are_pinned(tmp_path: Path) -> None:
    assert keys_of(write(tmp_path, MATRIX)) == [
        "004d6ac509852caa", "f04f60d0048179ff", "34170fa26498e40d", "b261d8d841ac8bce", "eb10fb3ba518cd07",
        "ffdc060c9eb584d6", "8dfd95a4c917c439", "1b77e65a264cea5e", "f21118971aa3420e", "6d46c6256352667d",
        "fa7b5e12e3673582", "248dfc1f80f7f33d", "e478ae212d298fc7", "9573d76b0e1126e4", "3269e8a98b571a2e",
        "ac63b35c93430f25", "140c55b1f186492b", "25546bd5c029d4eb", "6aa3a42f13d9bfaf", "87524a9b22c688aa",
        "0e9113b5203ca193", "0d48a3977ee6727b", "e6e1b7da69955d23", "690cdc14ee3d931a",
    ]  # fmt: skip


def test_jsonl_rows_keys_are_pinned(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(JSONL, encoding="utf-8")
    path = write(tmp_path, "model: flux-1-dev\nrows: rows.jsonl\n")
    assert keys_of(path) == ["8a5c5f33819ae2cd", "15922f487ee1316d", "5104c3c20527ea38"]


def test_csv_rows_keys_are_pinned(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text(CSV, encoding="utf-8")
    path = write(tmp_path, "model: openai-sora-2-pro\nrows: {file: rows.csv, types: {n: int}}\n")
    assert keys_of(path) == ["bd435b0678741b89", "80e78ec5d7188f0b"]


def test_canonical_encoding_of_every_kind_of_value_is_pinned() -> None:
    params = {
        "prompt": 'ox é 🐂 "q" \\ \n',
        "w": 1.5,
        "z": -0.0,
        "big": 1e100,
        "n": None,
        "l": [1, "a", False],
        "d": {"z": 1, "a": True},
        "when": datetime.date(2024, 1, 2),
    }
    assert canonical_json(params) == (
        '{"big":1e+100,"d":{"a":true,"z":1},"l":[1,"a",false],"n":null,'
        '"prompt":"ox é 🐂 \\"q\\" \\\\ \\n","w":1.5,"when":"2024-01-02","z":-0.0}'
    )
    assert job_key("m", params, 3) == "fa102d8564df296e"
