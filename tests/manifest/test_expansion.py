"""Expansion, by property: how many jobs, and keys that are unique and stable across runs and key order."""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from batchgen.core.expansion import count_jobs, expand
from batchgen.core.templates import parse_template
from batchgen.engine.manifests import load_manifest

from .fakes import infos

WORDS = st.text(alphabet="abcdefghij", min_size=1, max_size=6)
AXES = st.dictionaries(
    st.sampled_from(["prompt", "aspect_ratio", "seconds", "animal", "mood"]),
    st.lists(WORDS, min_size=1, max_size=3, unique=True),
    max_size=3,
)


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    matrix = draw(AXES)
    if "prompt" in matrix:
        matrix["prompt"] = [f"{word} {{animal}} {{mood}} {{car}} {{colour}}" for word in matrix["prompt"]]
    zip_length = draw(st.integers(0, 3))
    manifest: dict[str, Any] = {
        "model": "openai-sora-2-pro",
        # Every variable is used by the prompt: two jobs differing only in an unused variable are the very
        # same request, which expansion reports as a duplicate (tested in test_validation.py).
        "params": {
            "prompt": "base {animal} {mood} {car} {colour}",
            "animal": "ox",
            "mood": "-",
            "car": "-",
            "colour": "-",
        },
        "repeat": draw(st.integers(1, 3)),
    }
    if matrix:
        manifest["matrix"] = matrix
    if zip_length:
        manifest["zip"] = {
            "car": [f"car{i}" for i in range(zip_length)],
            "colour": [f"c{i}" for i in range(zip_length)],
        }
    jobs = draw(st.integers(0, 3))
    if jobs:
        manifest["jobs"] = [{"prompt": f"explicit {i}", "repeat": 1 + i % 2} for i in range(jobs)]
    manifest["_rows"] = draw(st.integers(0, 3))
    return manifest


def _write(directory: Path, manifest: dict[str, Any], *, reverse: bool) -> Path:
    body = {key: value for key, value in manifest.items() if key != "_rows"}
    if manifest["_rows"]:
        with (directory / "rows.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["prompt", "mood"])
            writer.writerows([f"row {i}", "calm"] for i in range(manifest["_rows"]))
        body["rows"] = "rows.csv"
    if reverse:  # the same manifest with every mapping's keys in the opposite order
        body = _reversed(body)
    path = directory / "m.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def _reversed(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reversed(value[key]) for key in reversed(list(value))}
    return value


def _expected_count(manifest: dict[str, Any]) -> int:
    has_combinations = "matrix" in manifest or "zip" in manifest or not ("jobs" in manifest or manifest["_rows"])
    product = math.prod(len(values) for values in manifest.get("matrix", {}).values())
    zipped = len(manifest["zip"]["car"]) if "zip" in manifest else 1
    combinations = product * zipped * manifest["repeat"] if has_combinations else 0
    explicit = sum(job["repeat"] for job in manifest.get("jobs", []))
    return combinations + explicit + manifest["_rows"]


@given(manifests())
def test_count_keys_unique_and_stable_across_runs_and_key_order(manifest: dict[str, Any]) -> None:
    models = infos()
    with tempfile.TemporaryDirectory() as directory:
        first = load_manifest(_write(Path(directory), manifest, reverse=False))
        jobs = expand(first, models).jobs
        again = expand(load_manifest(first.path), models).jobs
        flipped = expand(load_manifest(_write(Path(directory), manifest, reverse=True)), models).jobs
    keys = [job.spec.key for job in jobs]
    assert len(jobs) == _expected_count(manifest) == count_jobs(first)
    assert len(set(keys)) == len(keys)
    assert keys == [job.spec.key for job in again]
    assert set(keys) == {job.spec.key for job in flipped}


def test_editing_a_manifest_keeps_the_keys_of_unchanged_jobs(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("model: openai-sora-2-pro\nmatrix:\n  prompt: [ox, yak]\n", encoding="utf-8")
    before = {job.spec.key for job in expand(load_manifest(path), infos()).jobs}
    path.write_text(
        "# edited\nmodel: openai-sora-2-pro\nmatrix:\n  prompt: [ox, yak, emu]\nbudget: 9\n", encoding="utf-8"
    )
    after = {job.spec.key for job in expand(load_manifest(path), infos()).jobs}
    assert before < after and len(after - before) == 1


def test_model_as_a_matrix_axis(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("params: {prompt: ox}\nmatrix:\n  model: [openai-sora-2-pro, flux-1-dev]\n", encoding="utf-8")
    jobs = expand(load_manifest(path), infos()).jobs
    assert [job.spec.model for job in jobs] == ["openai-sora-2-pro", "flux-1-dev"]


def test_defaults_a_model_does_not_take_are_not_sent_to_it(tmp_path: Path) -> None:
    text = "model: openai-sora-2-pro\nparams: {prompt: ox, seconds: '8'}\njobs:\n  - {model: flux-1-dev, prompt: yak}\n"
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    [job] = expand(load_manifest(path), infos()).jobs
    assert job.spec.params == {"prompt": "yak"} and job.spec.variables == {}


def test_templates_parse_names_and_escapes() -> None:
    template = parse_template("A {animal} and {{braces}} and {animal} in a {car}")
    assert template.names == ("animal", "car")
    assert template.render({"animal": "ox", "car": "van"}) == "A ox and {braces} and ox in a van"
    assert parse_template("no braces").is_literal
