"""What planning a million jobs shares between jobs (issue 15), and the ways sharing could go wrong: a verdict,
price, key, variables or text given to a job whose values only look like another's."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from batchgen.core import yamlsource
from batchgen.core.expansion import expand
from batchgen.core.jobs import KeyMaker, canonical_json, exact_key, job_key
from batchgen.core.plan import Plan, RegistryView, build_plan, draft_plan
from batchgen.core.validation import ImageProbe
from batchgen.engine.manifests import load_manifest

from .fakes import infos, plan_of, write

SCALARS = st.one_of(
    st.text(max_size=8),
    st.integers(-5, 5),
    st.floats(allow_nan=False, width=32),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner))


@given(st.dictionaries(st.text(max_size=6), VALUES, max_size=5), st.integers(0, 20), st.text(max_size=5))
def test_keys_put_together_from_pieces_are_job_key(params: dict[str, Any], repeat: int, model: str) -> None:
    maker = KeyMaker(model, params)
    assert maker.key(params, repeat) == job_key(model, params, repeat)
    other = {**params, "extra": "x"}  # a parameter the maker was not made for
    assert maker.key(other, repeat) == job_key(model, other, repeat)


def test_verdict_keys_tell_apart_values_python_calls_equal() -> None:
    alike = [1, 1.0, True, "1", -0.0, 0.0, 0, False, None, "", [1], [True], datetime.date(2024, 1, 2), "2024-01-02"]
    assert len({exact_key(value) for value in alike}) == len(alike)
    assert exact_key({"a": [1, 2]}) == exact_key({"a": [1, 2]})


def test_the_encoder_recovers_from_a_circular_value() -> None:
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        canonical_json(circular)
    assert canonical_json([[1], {"b": [2]}]) == '[[1],{"b":[2]}]'


def rows_plan(tmp_path: Path, lines: list[dict[str, Any]], model: str = "flux-1-dev") -> Plan:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return plan_of(write(tmp_path, f"model: {model}\nrows: rows.jsonl\n"))


def test_values_equal_in_python_but_not_in_json_are_validated_separately(tmp_path: Path) -> None:
    # `seed` is an integer: true == 1 == 1.0 in Python, yet true is no integer (and 1.0 is one, to JSON Schema)
    seeds: list[Any] = [True, 1, 1.0, True, "1"]
    plan = rows_plan(tmp_path, [{"prompt": f"ox {i}", "seed": seed} for i, seed in enumerate(seeds)])
    assert [problem.where.rsplit(":", 1)[1] for problem in plan.problems] == ["1", "4", "5"]
    assert "got true" in plan.problems[0].message
    assert 'got "1"' in plan.problems[2].message


def test_two_parameter_sets_differing_in_one_field_get_their_own_verdicts(tmp_path: Path) -> None:
    lines = [{"prompt": f"ox {i}", "aspect_ratio": "1:1"} for i in range(5)]
    lines.append({"prompt": "ox 5", "aspect_ratio": "2:1"})  # the prompt differs as always; the ratio is wrong
    lines.append({"prompt": "", "aspect_ratio": "1:1"})  # flux's prompt has a minLength: not a free string
    plan = rows_plan(tmp_path, lines)
    assert [problem.where.rsplit(":", 1)[1] for problem in plan.problems] == ["6", "7"]
    assert "aspect_ratio" in plan.problems[0].message


def test_a_bad_value_in_the_last_of_many_rows_is_reported_at_its_line(tmp_path: Path) -> None:
    # a seed unique to each row: more distinct parameter sets than any verdict cache keeps
    rows = 70_000
    with (tmp_path / "rows.csv").open("w", encoding="utf-8") as handle:
        handle.write("prompt,seed,aspect_ratio\n")
        handle.writelines(f"ox {i},{i},1:1\n" for i in range(rows - 1))
        handle.write("ox,7,4:3\n")
    manifest = "model: flux-1-dev\nrows: {file: rows.csv, types: {seed: int}}\n"
    plan = plan_of(write(tmp_path, manifest))
    assert len(plan.jobs) == rows
    assert [problem.where for problem in plan.problems] == [f"{tmp_path / 'rows.csv'}:{rows + 1}"]
    assert "`aspect_ratio` must be one of" in plan.problems[0].message


def test_prices_follow_each_jobs_own_parameters(tmp_path: Path) -> None:
    lines = [{"prompt": f"ox {i}", "seconds": ("4", "8", "12")[i % 3]} for i in range(9)]
    plan = rows_plan(tmp_path, lines, model="openai-sora-2-pro")
    assert [job.estimated_cost for job in plan.jobs] == pytest.approx([1.2, 2.4, 3.6] * 3)


def test_a_row_without_templates_is_sent_as_it_was_read_and_a_templated_one_is_rendered(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("prompt,animal\nan ox,ox\na {animal},yak\n", encoding="utf-8")
    manifest = load_manifest(write(tmp_path, "model: openai-sora-2-pro\nrows: rows.csv\n"))
    jobs = expand(manifest, infos()).jobs
    assert [dict(job.spec.params) for job in jobs] == [{"prompt": "an ox"}, {"prompt": "a yak"}]
    assert [dict(job.spec.variables) for job in jobs] == [{"animal": "ox"}, {"animal": "yak"}]
    assert manifest.rows[1].values == {"prompt": "a {animal}", "animal": "yak"}  # the row itself is untouched


MATRIX = """\
model: openai-sora-2-pro
params: {prompt: '{animal} in {place}', brand: Oxen}
matrix:
  place: [field, barn]
  prompt: ['{animal} in {place}', '{brand}: {animal} in {place}', plain]
  animal: [ox, yak]
"""


def test_variables_and_texts_shared_between_jobs_are_each_jobs_own(tmp_path: Path) -> None:
    jobs = expand(load_manifest(write(tmp_path, MATRIX)), infos()).jobs
    seen = {(job.spec.params["prompt"], tuple(sorted(job.spec.variables.items()))) for job in jobs}
    expected = set()
    for place in ("field", "barn"):
        for animal in ("ox", "yak"):
            variables = (("animal", animal), ("place", place))
            expected.add((f"{animal} in {place}", variables))
            # `brand` is a default the model does not take: kept only for the jobs whose template uses it
            expected.add((f"Oxen: {animal} in {place}", (("animal", animal), ("brand", "Oxen"), ("place", place))))
    expected.add(("plain", (("animal", "ox"), ("place", "field"))))
    assert seen >= expected
    assert len(jobs) == 2 * 2 * 2 + 1  # `plain` is one request, whatever the animal and place: the rest duplicates


PROBLEMS = """\
model: openai-sora-2-pro
params: {prompt: 'a {animal}'}
jobs:
  - {prompt: ox, seconds: 5}
  - {prompt: ox, seconds: 5}
  - {prompt: yak, model: openai-sora-2-pr}
  - {prompt: emu, input_image: 'https://x.test/a.png', aspect_ratio: portrait}
  - {prompt: gnu, seconds: 7}
  - {prompt: gnu, input_image: 'https://x.test/b.png'}
"""


def test_planning_a_job_at_a_time_finds_what_planning_all_at_once_finds(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, PROBLEMS))
    known = infos()
    view = RegistryView(
        models={name: info for name, info in known.items() if name in manifest.model_names()},
        unknown={"openai-sora-2-pr": tuple(known)},
    )
    probes = {url: ImageProbe((1280, 720)) for url in ("https://x.test/a.png", "https://x.test/b.png")}
    draft = draft_plan(manifest, view)
    assert draft.images_to_probe == set(probes)
    streamed = draft.finish(probes)
    whole = build_plan(manifest, expand(manifest, view.models), view, probes)
    assert streamed.to_json() == whole.to_json()
    assert streamed.problems == whole.problems
    wheres = [problem.where.rsplit(":", 1)[1] for problem in streamed.problems]
    # the duplicate (expansion), the unknown model, then the jobs' own problems in their order
    assert wheres == ["5", "6", "4", "7", "8"]


TRICKY = """\
defaults: &d
  seconds: '4'
  note: |
    two
    lines
name: "quoted: value"
params:
  <<: *d
  prompt: >-
    folded
    text
matrix:
  animal: [ox, 'yak', "emu", 1, 1.5, true, null, 2024-01-02]
jobs:
  - {prompt: x, 'odd key': [1, {a: b}]}
"""


def test_libyaml_and_the_python_parser_read_the_same_document_and_lines() -> None:
    fast = yamlsource.parse_yaml(TRICKY + "dup: 1\ndup: 2\n", "m.yaml")
    assert yamlsource._C_LOADER is not None  # PyYAML here is built with libyaml, so the fast path was taken
    python_only = yamlsource._composed(TRICKY + "dup: 1\ndup: 2\n", "m.yaml", lambda line, message: AssertionError())
    assert fast[0].value == python_only[1] == yaml.safe_load(TRICKY + "dup: 2\n")
    slow = _parsed_without_libyaml(TRICKY + "dup: 1\ndup: 2\n")
    assert fast == slow
    assert fast[1][0].where == "m.yaml:17"  # the duplicate key, found in the node tree either way


def _parsed_without_libyaml(text: str) -> Any:
    saved = yamlsource._C_LOADER
    yamlsource._C_LOADER = None
    try:
        return yamlsource.parse_yaml(text, "m.yaml")
    finally:
        yamlsource._C_LOADER = saved


def test_variables_shared_between_jobs_are_the_values_of_each_job(tmp_path: Path) -> None:
    text = "model: openai-sora-2-pro\nparams: {prompt: 'a {animal} for {secs}s'}\nmatrix:\n"
    text += "  secs: ['4', '8']\n  seconds: ['4', '8']\n  animal: [ox, yak, emu]\n"
    jobs = expand(load_manifest(write(tmp_path, text)), infos()).jobs
    assert len(jobs) == 12
    for job in jobs:
        variables = job.spec.variables
        assert job.spec.params["prompt"] == f"a {variables['animal']} for {variables['secs']}s"


def test_plan_json_written_a_job_at_a_time_is_json_dumps_of_the_whole(tmp_path: Path) -> None:
    import io

    from batchgen.cli.plan import write_plan_json

    lines: list[dict[str, Any]] = [
        {"prompt": 'ox "é" 🐂\n', "seed": 1, "extra": [1, {"b": [], "a": {}}], "empty": {}, "none": None},
        {"prompt": "yak", "seed": 2, "nested": {"z": [True, 1.5, "x"], "a": {"deep": ["é"]}}, "when": "2024"},
    ]
    for plan in (rows_plan(tmp_path, lines), plan_of(write(tmp_path, "model: flux-1-dev\njobs: []\n"))):
        out = io.StringIO()
        write_plan_json(plan, out)
        assert out.getvalue() == json.dumps(plan.to_json(), indent=2, ensure_ascii=False, default=str) + "\n"


def test_csv_blank_rows_are_skipped_and_an_empty_first_cell_is_unset(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("seconds,prompt\n4,ox\n\n  ,  \n,yak\n8,emu\n", encoding="utf-8")
    manifest = load_manifest(write(tmp_path, "model: openai-sora-2-pro\nrows: rows.csv\n"))
    assert [(layer.values, layer.origin.rsplit(":", 1)[1]) for layer in manifest.rows] == [
        ({"seconds": "4", "prompt": "ox"}, "2"),
        ({"prompt": "yak"}, "5"),
        ({"seconds": "8", "prompt": "emu"}, "6"),
    ]


def test_matrix_jobs_sharing_derived_parts_are_rendered_from_their_own_values(tmp_path: Path) -> None:
    text = """\
model: openai-sora-2-pro
params: {prompt: 'a {animal}'}
matrix:
  animal: [ox, yak]
  prompt: ['a {animal}', '{animal} for {seconds}s', still life, '{colour} {animal}']
  seconds: ['4', '8']
"""
    expansion = expand(load_manifest(write(tmp_path, text)), infos())
    made = {
        (job.spec.params["prompt"], job.spec.params["seconds"], job.spec.variables["animal"]) for job in expansion.jobs
    }
    expected = set()
    for animal in ("ox", "yak"):
        for seconds in ("4", "8"):
            expected |= {(f"a {animal}", seconds, animal), (f"{animal} for {seconds}s", seconds, animal)}
            expected.add(("still life", seconds, "ox"))  # the yak's is the same request: a duplicate
    assert made == expected
    assert len(expansion.jobs) == 10
    # `{colour}` is not defined: every one of its four jobs is refused, not only the first
    missing = [problem for problem in expansion.problems if "colour" in problem.message and problem.where]
    assert len(missing) == 3 and expansion.problems[-1].message.startswith("... and 1 more like: `prompt` uses")


def test_planning_pauses_the_collector_and_leaves_it_as_it_found_it() -> None:
    import gc

    from batchgen.engine.planning import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("a plan that fails")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # whoever switched it off keeps it off
    finally:
        gc.enable()
