"""One test per validation rule: each problem is located at `file:line` and says what to do."""

from __future__ import annotations

import base64
import struct
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from batchgen.core.validation import ImageProbe
from batchgen.engine.manifests import load_manifest
from batchgen.errors import BudgetError, ManifestError

from .fakes import FLUX, SORA, infos, plan_of, write


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return [str(p) for p in caught.value.problems]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\nparams:\n  prompt: [unclosed\n  seconds: '4'\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:")
    assert "YAML syntax error" in problem


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, "model: m\nmatrx:\n  prompt: [a]\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:2: unknown key `matrx`")
    assert "did you mean `matrix`?" in problem


def test_model_parameter_at_top_level_points_to_params(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "model: m\nprompt: hi\n"))
    assert "unknown key `prompt`" in problem and "params" in problem


def test_wrong_type_shows_the_value(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "model: m\nparams: {prompt: a}\nrepeat: '2'\n"))
    assert ":3: `repeat` must be a whole number of at least 1, got '2'" in problem


def test_matrix_values_must_be_lists(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "model: m\nmatrix:\n  prompt: just one\n"))
    assert ":3: `matrix.prompt` must be a list" in problem


def test_zip_lists_must_have_equal_lengths(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "model: m\nzip:\n  animal: [ox, yak]\n  car: [tractor]\n"))
    assert ":3:" in problem and "animal has 2, car has 1" in problem


def test_duplicate_yaml_key_is_reported(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "model: m\nparams: {prompt: a}\nrepeat: 2\nrepeat: 3\n"))
    assert ":4: duplicate key `repeat` (first set on line 3)" in problem


def test_num_generations_is_refused_in_favour_of_repeat(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "model: m\nparams:\n  prompt: a\n  num_generations: 2\n"))
    assert ":4:" in problem and "use `repeat`" in problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems_of(write(tmp_path, "modle: m\nrepeat: 0\nconcurrency: many\nbudget: -1\n"))
    assert len(found) == 4


def test_unknown_template_variable_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path, "model: openai-sora-2-pro\nmatrix:\n  animal: [ox]\nparams:\n  prompt: 'A {animl} at dawn'\n"
    )
    with pytest.raises(ManifestError) as caught:
        plan_of(path).check()
    [problem] = caught.value.problems
    assert problem.where == f"{path}:5"
    assert "{animl}" in problem.message and problem.hint == "did you mean `animal`?"


def test_double_braces_are_literal(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\nparams:\n  prompt: 'a {{literal}} brace'\n")
    plan = plan_of(path)
    assert plan.jobs[0].spec.params["prompt"] == "a {literal} brace"


def test_stray_brace_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\nparams:\n  prompt: 'oops } here'\n")
    assert "stray `}`" in str(plan_of(path).problems[0])


def test_seconds_as_a_number_is_caught_with_a_hint_to_quote_it(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\nparams:\n  prompt: ox\nmatrix:\n  seconds: ['4', 8]\n")
    plan = plan_of(path)
    [problem] = plan.problems
    assert problem.where == f"{path}:5"
    assert problem.message == '`seconds` must be one of "4", "8", "12" for openai-sora-2-pro, got 8'
    assert 'quote it: `seconds: "8"`' in problem.hint
    assert plan.jobs[1].spec.params["seconds"] == 8  # reported, never silently coerced


def test_schema_error_points_at_the_matrix_element(tmp_path: Path) -> None:
    text = "model: openai-sora-2-pro\nparams: {prompt: ox}\nmatrix:\n  aspect_ratio:\n    - landscape\n    - square\n"
    path = write(tmp_path, text)
    [problem] = plan_of(path).problems
    assert problem.where == f"{path}:6" and '"square"' in problem.message


def test_missing_required_field_points_at_the_job(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\njobs:\n  - seconds: '4'\n")
    [problem] = plan_of(path).problems
    assert problem.where == f"{path}:3" and "`prompt` is required" in problem.message


def test_repeated_identical_messages_are_capped(tmp_path: Path) -> None:
    prompts = ", ".join(f"p{i}" for i in range(50))
    path = write(tmp_path, f"model: openai-sora-2-pro\nparams: {{seconds: 4}}\nmatrix:\n  prompt: [{prompts}]\n")
    problems = plan_of(path).problems
    assert len(problems) == 4
    assert problems[-1].message.startswith("... and 47 more like: `seconds` must be one of")


def test_unknown_model_suggests_a_registry_id(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pr\nparams: {prompt: ox}\n")
    [problem] = plan_of(path).problems
    assert problem.where == f"{path}:1"
    assert problem.message == "unknown model `openai-sora-2-pr`"
    assert problem.hint == "did you mean `openai-sora-2-pro`?"


def test_misspelt_parameter_is_an_error_not_a_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\njobs:\n  - prompt: ox\n    aspect_ration: portrait\n")
    [problem] = plan_of(path).problems
    assert problem.where == f"{path}:4" and problem.hint == "did you mean `aspect_ratio`?"


def test_template_variables_are_kept_out_of_the_request(tmp_path: Path) -> None:
    text = "model: openai-sora-2-pro\nparams: {prompt: 'A {animal} in a {car}'}\nzip:\n  animal: [ox, yak]\n  car: [van, cab]\n"
    plan = plan_of(write(tmp_path, text))
    assert [dict(job.spec.variables) for job in plan.jobs] == [
        {"animal": "ox", "car": "van"},
        {"animal": "yak", "car": "cab"},
    ]
    assert plan.jobs[1].spec.params == {"prompt": "A yak in a cab"}


def test_the_same_request_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    text = "model: openai-sora-2-pro\nmatrix:\n  prompt: [ox]\njobs:\n  - prompt: ox\n"
    path = write(tmp_path, text)
    [problem] = plan_of(path).problems
    assert problem.where == f"{path}:5" and f"{path}:3" in problem.message and "repeat" in problem.hint


def _png(width: int, height: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x06\0\0\0"
    )


def test_sora_first_frame_must_match_the_output_size(tmp_path: Path) -> None:
    text = "model: openai-sora-2-pro\nparams: {prompt: ox, input_image: 'https://x.test/a.png'}\nmatrix:\n  aspect_ratio: [landscape, portrait]\n"
    path = write(tmp_path, text)
    plan = plan_of(path, probes={"https://x.test/a.png": ImageProbe((1280, 720))})
    [problem] = plan.problems
    assert problem.where == f"{path}:2" and "is 1280x720" in problem.message and "720x1280" in problem.message


def test_unreachable_first_frame_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\nparams: {prompt: ox, input_image: 'https://x.test/a.png'}\n")
    plan = plan_of(path, probes={"https://x.test/a.png": ImageProbe(None, "ConnectError")})
    assert not plan.problems
    assert any("could not be read (ConnectError)" in warning for warning in plan.warnings)


def test_first_frame_given_as_a_data_uri_is_checked_without_network(tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(_png(1792, 1024)).decode()
    path = write(
        tmp_path, f"model: openai-sora-2-pro\nparams: {{prompt: ox, resolution: high, input_image: '{uri}'}}\n"
    )
    assert not plan_of(path).problems


def test_rows_from_csv_with_declared_types(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("prompt,duration,generate_audio\nox,10,true\nyak,,\n", encoding="utf-8")
    text = "model: kling-video-v2-6-pro-text-to-video\nrows: {file: rows.csv, types: {duration: int, generate_audio: bool}}\n"
    plan = plan_of(write(tmp_path, text))
    assert not plan.problems
    assert [dict(job.spec.params) for job in plan.jobs] == [
        {"prompt": "ox", "duration": 10, "generate_audio": True},
        {"prompt": "yak"},
    ]
    assert [job.spec.origin for job in plan.jobs] == [f"{tmp_path}/rows.csv:2", f"{tmp_path}/rows.csv:3"]
    assert [job.estimated_cost for job in plan.jobs] == [pytest.approx(1.4), pytest.approx(0.35)]


def test_untyped_csv_number_gets_a_hint(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("prompt,duration\nox,10\n", encoding="utf-8")
    plan = plan_of(write(tmp_path, "model: kling-video-v2-6-pro-text-to-video\nrows: rows.csv\n"))
    [problem] = plan.problems
    assert problem.where.endswith("rows.csv:2") and "rows.types" in problem.hint


def test_bad_jsonl_line_is_located(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"prompt": "ox"}\n{"prompt": \n', encoding="utf-8")
    [problem] = problems_of(write(tmp_path, "model: m\nrows: rows.jsonl\n"))
    assert "rows.jsonl:2: not valid JSON" in problem


def test_missing_rows_file_is_located_at_the_manifest_line(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "model: m\nrows: {file: nowhere.csv}\n"))
    assert ":2: rows file not found" in problem


def test_budget_refuses_an_estimate_above_it(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\nparams: {prompt: ox, seconds: '12'}\nrepeat: 3\nbudget: 10\n")
    plan = plan_of(path)
    assert plan.total_cost == pytest.approx(10.8)
    with pytest.raises(BudgetError, match=r"\$10\.80 of 3 jobs exceeds the budget of \$10\.00"):
        plan.check()
    # --max-cost cannot loosen the manifest's budget: the stricter of the two applies
    with pytest.raises(BudgetError):
        plan_of(path, max_cost=20).check()


def test_unknown_price_is_unknown_not_zero(tmp_path: Path) -> None:
    no_price = {**FLUX, "pricing": None}
    path = write(tmp_path, "model: flux-1-dev\nparams: {prompt: ox}\nbudget: 1\n")
    plan = plan_of(path, models=infos(no_price))
    assert plan.jobs[0].estimated_cost is None and not plan.priced and plan.unpriced_jobs == 1
    assert any("no price" in warning for warning in plan.warnings)


def test_without_any_registry_plan_expands_and_says_what_was_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "model: openai-sora-2-pro\nparams: {prompt: 'A {animal}'}\nmatrix: {animal: [ox, yak]}\n")
    plan = plan_of(path, models={}, registry_down=True)
    plan.check()  # nothing invalid was found, and nothing could be priced against a budget
    assert len(plan.jobs) == 2 and not plan.validated and not plan.priced
    assert [job.spec.params["prompt"] for job in plan.jobs] == ["A ox", "A yak"]
    assert any("not validated and not priced" in warning for warning in plan.warnings)


def test_sora_schema_fixture_is_the_documented_one() -> None:
    assert SORA["request_schema"]["properties"]["seconds"]["enum"] == ["4", "8", "12"]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["model", "params", "matrix", "zip", "jobs", "rows", "repeat", "x"]), inner
            )
        ),
        max_leaves=12,
    )
)
def test_no_manifest_whatever_its_shape_gives_anything_but_a_manifest_error(document: object) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        try:
            plan_of(path)
        except ManifestError as error:
            assert all(problem.message for problem in error.problems)
