"""Fuzzed manifests through planning: mutations of the shipped manifests, random structures, and hostile YAML.

Whatever the text, planning either succeeds or raises a BatchgenError, and a ManifestError names the file and a
line in it (`file:LINE`), so `batchgen plan` exits 2 with a located message and never a traceback. The default run
tries the same 100 cases every time; the long run (HYPOTHESIS_PROFILE=long, see README) tries 2,000 fresh ones.
(tests/manifest covers the valid side: expansion properties, and one test per validation rule.)"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.errors import BatchgenError, ManifestError
from tests.kit_processes import batchgen
from tests.manifest.fakes import plan_of, seed_cache

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
SEEDS = [(MANIFESTS / name).read_text(encoding="utf-8") for name in ("demo.yaml", "ox-ads.yaml", "from-rows.yaml")]
KEYS = ["name", "model", "params", "matrix", "zip", "repeat", "jobs", "rows", "concurrency", "budget", "output"]
FIELDS = ["prompt", "seconds", "aspect_ratio", "resolution", "input_image", "seed", "model", "repeat", "animal"]
# bits of YAML and of our own syntax that parsers and validators trip on
SNIPPETS = [
    "", "-", "- ", ":", "? ", "{", "}", "[", "]", "'", '"', "&a", "*a", "&a [*a]", "<<: *a", "!!int abc",
    "!!float x", "!!timestamp 2020-99-99", "!!binary '%%%'", "!!python/object:os.system x", "!!set {a}",
    "!!omap [a: 1]", "---", "...", "%YAML 1.1", "\t", "\x00", "\x07", "\ufeff", "\u2028", "~", "null", ".nan",
    "-.inf", "1e999", "0x1F", "0o17", "99999999999999999999", "-1", "0", "4", '"4"', "yes", "{animal}",
    "{{", "}}", "{ox", "{0}", "{a.b}", "{a!r}", "data:image/png;base64,AAAA", "http://127.0.0.1:1/x.png",
    "[]", "{}", "[[[[[[]]]]]]", "a: b: c", "x" * 300, "ünïcödé 🐂",
]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=20),
    st.sampled_from(SNIPPETS),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    """A shipped manifest with a few line-level edits."""
    lines = draw(st.sampled_from(SEEDS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent", "value", "insert", "chars"]))
        if not lines:
            lines = [draw(st.sampled_from(SNIPPETS))]
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = " " * draw(st.integers(1, 4)) + lines[i]
        elif op == "dedent":
            lines[i] = lines[i].lstrip()
        elif op == "value" and ":" in lines[i]:
            lines[i] = lines[i].split(":", 1)[0] + ": " + draw(st.sampled_from(SNIPPETS) | st.text(max_size=12))
        elif op == "insert":
            lines.insert(i, " " * draw(st.integers(0, 4)) + draw(st.sampled_from(SNIPPETS)))
        else:
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(max_size=4)) + lines[i][at:]
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))


@st.composite
def mutated_structure(draw: st.DrawFn) -> str:
    """A shipped manifest, parsed, with values replaced at random places, dumped again."""
    data: Any = yaml.safe_load(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        node, key = data, None
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            key = draw(st.sampled_from(list(node) if isinstance(node, dict) else list(range(len(node)))))
            if not isinstance(node[key], dict | list):
                break
            node = node[key]
        if isinstance(node, dict):
            node[key if key is not None and draw(st.booleans()) else draw(st.sampled_from(KEYS + FIELDS))] = draw(
                values
            )
        elif isinstance(node, list) and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(values)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


random_structure = st.dictionaries(st.sampled_from(KEYS + FIELDS), values, max_size=6).map(
    lambda data: yaml.safe_dump(data, allow_unicode=True)
)
manifest_texts = st.one_of(mutated_text(), mutated_structure(), random_structure, st.text(max_size=200))


def check_planning(path: Path, text: str) -> None:
    """Plan `text` as the file `path`: a plan, or a BatchgenError; a ManifestError is located at `path:LINE`."""
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        plan_of(path).check()
    except ManifestError as error:
        lines = max(1, text.count("\n") + 1)
        located = [m for p in error.problems if (m := re.match(rf"{re.escape(str(path))}:(\d+)$", p.where))]
        assert located, f"no problem names {path}:LINE: {[str(p) for p in error.problems]}"
        assert all(1 <= int(m.group(1)) <= lines + 1 for m in located), [str(p) for p in error.problems]
    except BatchgenError:
        pass  # e.g. over budget: a user error with its own exit code, not a crash


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # tmp_path is only a place to write to
@given(text=manifest_texts)
def test_fuzzed_manifests_plan_or_fail_with_a_located_message(tmp_path: Path, text: str) -> None:
    check_planning(tmp_path / "fuzzed.yaml", text)


FOUND = {  # what the fuzzer found: each raised a bare exception (a traceback) before it was fixed
    "control character": ("model: flux-1-dev\nparams:\n  prompt: \x1f\n", 3),
    "int tag on text": ("model: flux-1-dev\nparams:\n  seed: !!int abc\n", 3),
    "impossible date": ("model: flux-1-dev\nname: !!timestamp 2020-99-99\n", 2),
    "alias inside itself": ("model: flux-1-dev\nmatrix:\n  prompt: &a [ox, *a]\n", 3),
    "deep nesting": ("model: flux-1-dev\nparams:\n  prompt: " + "[" * 5000 + "]" * 5000 + "\n", 3),
}


@pytest.mark.parametrize("name", list(FOUND))
def test_yaml_the_parser_cannot_take_is_a_located_problem(tmp_path: Path, name: str) -> None:
    text, line = FOUND[name]
    path = tmp_path / "found.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        plan_of(path)
    assert caught.value.problems[0].where == f"{path}:{line}", str(caught.value)


def test_mutated_demo_through_the_cli_exits_0_or_2_never_a_traceback(tmp_path: Path, isolated_state: Path) -> None:
    seed_cache(isolated_state)
    rng = random.Random(2024)
    demo = SEEDS[0].splitlines()
    cases = [
        "name: x\nmodel: flux-1-dev\nparams:\n  prompt: !!int abc\n",  # a tag its value cannot take
        "name: x\nmodel: flux-1-dev\nparams: &p\n  prompt: ox\n  self: *p\nmatrix: &m {prompt: [*m]}\n",  # a cycle
    ]
    for _ in range(4):
        lines = list(demo)
        lines.insert(rng.randrange(len(lines)), rng.choice(SNIPPETS))
        cases.append("\n".join(lines) + "\n")
    for number, text in enumerate(cases):
        path = tmp_path / f"case{number}.yaml"
        path.write_text(text, encoding="utf-8")
        result = batchgen("plan", path, "--offline", timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode in (0, 2) and "Traceback" not in output and "internal error" not in output, (
            text,
            output,
        )
        if result.returncode == 2:
            assert re.search(rf"{re.escape(str(path))}:\d+: ", result.stderr), (text, output)
