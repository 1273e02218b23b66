"""The manifest: reading a YAML file into a checked `Manifest` value (documented key by key in manifests/README.md).

Every value is kept with the `file:line` it came from (as a `Layer`), so problems found later, even per-job
schema errors, point back at the line of the manifest (or of the rows file) that produced them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.core.layers import Layer
from batchgen.core.problems import ProblemList, did_you_mean
from batchgen.core.rows import ROW_TYPES, ReadText, RowsSource, read_rows
from batchgen.core.yamlsource import LocatedDocument, YamlSyntaxError, parse_yaml
from batchgen.errors import ManifestError

DEFAULT_CONCURRENCY = 4
TOP_LEVEL_KEYS = (
    "name",
    "description",
    "model",
    "params",
    "matrix",
    "zip",
    "repeat",
    "jobs",
    "rows",
    "concurrency",
    "budget",
    "output",
)
# `output` as a mapping: the files' directory and a local Oxen repository to commit them to (engine/oxen_repo.py).
OUTPUT_KEYS = ("dir", "oxen_repo")
# Words people reach for that difflib would not map to our keys.
_ALIASES = {"out_dir": "output", "outdir": "output", "out": "output", "parameters": "params", "samples": "repeat"}
# Fields that are not request parameters: the model is the request's `model`, repeat is a count of samples.
RESERVED_FIELDS = frozenset({"model", "repeat"})
# The fields `_Reader.check_field` has something to say about.
_FIELDS_WITH_A_MEANING = frozenset({"model", "repeat", "num_generations"})


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How to run: at most `concurrency` jobs in flight, spend at most `budget` USD, write files under `out_dir`
    (and commit them to the Oxen repository `oxen_repo` at the end, when set)."""

    concurrency: int = DEFAULT_CONCURRENCY
    budget: float | None = None
    out_dir: Path = Path("out")
    oxen_repo: Path | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A checked manifest: the layers that expansion combines into jobs (see core/expansion.py)."""

    name: str
    path: Path
    settings: RunSettings
    defaults: Layer  # top-level `model` and `params`
    matrix: tuple[tuple[Layer, ...], ...] = ()  # one tuple of single-field layers per axis
    zipped: tuple[Layer, ...] = ()  # one layer per position of the zipped lists
    repeat: int = 1
    jobs: tuple[Layer, ...] = ()  # explicit `jobs` entries
    rows: tuple[Layer, ...] = field(default=(), repr=False)  # entries read from the `rows` file (a million, maybe)
    has_combinations: bool = True  # whether defaults x matrix x zip is itself a source of jobs
    extra: Mapping[str, Any] = field(default_factory=dict)  # `description`, kept for display

    def model_names(self) -> list[str]:
        """Every model a job of this manifest may use, in order of appearance (no expansion needed)."""
        names: dict[str, None] = {}
        layers = [self.defaults, *(layer for axis in self.matrix for layer in axis), *self.zipped, *self.jobs]
        for layer in [*layers, *self.rows]:
            model = layer.values.get("model")
            if isinstance(model, str):
                names[model] = None
        return list(names)


def parse_manifest(text: str, path: Path, read_text: ReadText) -> Manifest:
    """Check manifest text (`path` names it in messages and anchors relative `rows` files, which `read_text`, the
    edge's file reader, reads: the core does no I/O). Raise ManifestError listing every problem found."""
    try:
        doc, duplicate_keys = parse_yaml(text, str(path))
    except YamlSyntaxError as error:
        raise ManifestError([error.problem]) from None
    problems = ProblemList()
    problems.extend(duplicate_keys)
    manifest = _Reader(doc, path, problems, read_text).read()
    if problems or manifest is None:
        raise ManifestError(problems.as_list())
    return manifest


class _Reader:
    """Walks the located document once, collecting every problem rather than stopping at the first."""

    def __init__(self, doc: LocatedDocument, path: Path, problems: ProblemList, read_text: ReadText) -> None:
        self.doc = doc
        self.path = path
        self.problems = problems
        self.read_text = read_text

    def error(self, path: tuple[str | int, ...], message: str, hint: str = "") -> None:
        self.problems.add(self.doc.where(path), message, hint)

    def read(self) -> Manifest | None:
        top = self.doc.value
        if top is None:
            self.error((), "the manifest is empty", "see manifests/README.md for the format")
            return None
        if not isinstance(top, dict):
            self.error((), f"the manifest must be a mapping of keys, got {_type_name(top)}")
            return None
        for key in top:
            if key not in TOP_LEVEL_KEYS:
                self.problems.add(self.doc.where_key((key,)), f"unknown key `{key}`", self._hint_for_unknown(key))
        name = self.string(top, "name") or self.path.stem
        defaults = self.fields_layer(top.get("params", {}), ("params",))
        model = self.string(top, "model")
        if model is not None:
            defaults = Layer(
                {"model": model, **defaults.values},
                defaults.origin,
                {"model": self.doc.where(("model",)), **(defaults.field_origins or {})},
            )
        matrix = self.matrix(top.get("matrix"))
        zipped = self.zipped(top.get("zip"))
        axes = [layers[0].values for layers in matrix if layers]
        self.check_overlap(axes, zipped)
        repeat = self.positive_int(top, "repeat", 1)
        jobs = self.jobs(top.get("jobs"))
        rows = self.rows(top.get("rows"))
        out_dir, oxen_repo = self.output(top, name)
        settings = RunSettings(
            concurrency=self.positive_int(top, "concurrency", DEFAULT_CONCURRENCY),
            budget=self.budget(top),
            out_dir=out_dir,
            oxen_repo=oxen_repo,
        )
        has_combinations = bool(matrix or zipped) or not ("jobs" in top or "rows" in top)
        extra = {"description": top["description"]} if isinstance(top.get("description"), str) else {}
        return Manifest(
            name, self.path, settings, defaults, matrix, zipped, repeat, jobs, rows, has_combinations, extra
        )

    def _hint_for_unknown(self, key: Any) -> str:
        text = str(key)
        if text in _ALIASES:
            return f"did you mean `{_ALIASES[text]}`?"
        close = did_you_mean(text, TOP_LEVEL_KEYS)
        if close:
            return close
        return "model parameters go under `params:` (or a `matrix`, `zip`, `jobs` entry or `rows` file)"

    # ---- typed readers ----

    def string(self, top: Mapping[str, Any], key: str) -> str | None:
        value = top.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.error((key,), f"`{key}` must be a non-empty string, got {_show(value)}")
            return None
        return value

    def output(self, top: Mapping[str, Any], name: str) -> tuple[Path, Path | None]:
        """`output: DIR`, or `output: {dir: DIR, oxen_repo: REPO}`: the files' directory and the Oxen repository."""
        value = top.get("output")
        default = Path("out") / name
        if not isinstance(value, dict):
            return Path(self.string(top, "output") or default), None
        for key in value:
            if key not in OUTPUT_KEYS:
                hint = did_you_mean(str(key), OUTPUT_KEYS) or f"the keys are {', '.join(OUTPUT_KEYS)}"
                self.problems.add(self.doc.where_key(("output", key)), f"unknown key `output.{key}`", hint)
        paths: dict[str, Path | None] = {}
        for key in OUTPUT_KEYS:
            item = value.get(key)
            paths[key] = None
            if item is not None and (not isinstance(item, str) or not item):
                self.error(("output", key), f"`output.{key}` must be a non-empty string, got {_show(item)}")
            elif item is not None:
                paths[key] = Path(item)
        return paths["dir"] or default, paths["oxen_repo"]

    def positive_int(self, top: Mapping[str, Any], key: str, default: int) -> int:
        value = top.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.error((key,), f"`{key}` must be a whole number of at least 1, got {_show(value)}")
            return default
        return value

    def budget(self, top: Mapping[str, Any]) -> float | None:
        value = top.get("budget")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.error(("budget",), f"`budget` must be a number of USD (0 or more), got {_show(value)}")
            return None
        return float(value)

    def fields_layer(self, value: Any, path: tuple[str | int, ...], *, allow_repeat: bool = False) -> Layer:
        """A mapping of job fields (parameters, `model`, template variables) as one layer."""
        where = self.doc.where(path)
        if not isinstance(value, dict):
            self.error(path, f"`{_label(path)}` must be a mapping of field: value, got {_show(value)}")
            return Layer({}, where)
        origins: dict[str, str] = {}
        for key, item in value.items():
            key_path = (*path, key)
            if not isinstance(key, str):
                self.error(key_path, f"field names must be strings, got {_show(key)}")
                continue
            origins[key] = self.doc.where(key_path)
            self.check_field(key, item, origins[key], allow_repeat=allow_repeat)
        return Layer(value, where, origins)

    def check_field(self, key: str, value: Any, where: str, *, allow_repeat: bool) -> None:
        """The few field names with a meaning of their own: `model`, `repeat`, and `num_generations` (refused)."""
        if key == "num_generations":
            self.problems.add(where, "`num_generations` is not set in a manifest", "use `repeat` for more samples")
        elif key == "repeat" and not allow_repeat:
            self.problems.add(where, "`repeat` belongs at the top level or in a `jobs` entry", "move it out of here")
        elif key == "repeat" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            self.problems.add(where, f"`repeat` must be a whole number of at least 1, got {_show(value)}")
        elif key == "model" and (not isinstance(value, str) or not value):
            self.problems.add(where, f"`model` must be a model id string, got {_show(value)}")

    def axis(self, key: Any, values: Any, path: tuple[str | int, ...]) -> tuple[Layer, ...]:
        if not isinstance(key, str):
            self.error(path, f"field names must be strings, got {_show(key)}")
            return ()
        if not isinstance(values, list):
            hint = f"write `{key}: [{_show(values)}]`, or put a constant under `params`"
            self.error(path, f"`{_label(path)}` must be a list of values, got {_show(values)}", hint)
            return ()
        if not values:
            self.error(path, f"`{_label(path)}` is an empty list, so it would produce no jobs")
            return ()
        layers = tuple(Layer({key: item}, self.doc.where((*path, index))) for index, item in enumerate(values))
        for layer in layers if key == "model" else layers[:1]:
            self.check_field(key, layer.values[key], layer.origin, allow_repeat=False)
        return layers

    def matrix(self, value: Any) -> tuple[tuple[Layer, ...], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict) or not value:
            self.error(("matrix",), f"`matrix` must be a mapping of field: [values], got {_show(value)}")
            return ()
        axes = (self.axis(key, values, ("matrix", key)) for key, values in value.items())
        return tuple(axis for axis in axes if axis)

    def zipped(self, value: Any) -> tuple[Layer, ...]:
        if value is None:
            return ()
        if not isinstance(value, dict) or not value:
            self.error(("zip",), f"`zip` must be a mapping of field: [values] of equal length, got {_show(value)}")
            return ()
        columns = {key: self.axis(key, values, ("zip", key)) for key, values in value.items()}
        columns = {key: layers for key, layers in columns.items() if layers}
        lengths = {key: len(layers) for key, layers in columns.items()}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{key} has {n}" for key, n in lengths.items())
            self.error(("zip",), f"the lists under `zip` must have the same length: {described}")
            return ()
        if not columns:
            return ()
        size = next(iter(lengths.values()))
        names = list(columns)
        result = []
        for index in range(size):
            cells = [columns[name][index] for name in names]
            values = {name: cell.values[name] for name, cell in zip(names, cells, strict=True)}
            origins = {name: cell.origin for name, cell in zip(names, cells, strict=True)}
            result.append(Layer(values, cells[0].origin, origins))
        return tuple(result)

    def check_overlap(self, axes: list[Mapping[str, Any]], zipped: tuple[Layer, ...]) -> None:
        matrix_names = {name for axis in axes for name in axis}
        zip_names = set(zipped[0].values) if zipped else set()
        for name in sorted(matrix_names & zip_names):
            self.error(("zip", name), f"`{name}` is both a `matrix` axis and a `zip` list", "keep it in one of them")

    def jobs(self, value: Any) -> tuple[Layer, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(("jobs",), f"`jobs` must be a list of mappings, got {_show(value)}")
            return ()
        return tuple(self.fields_layer(item, ("jobs", index), allow_repeat=True) for index, item in enumerate(value))

    def rows(self, value: Any) -> tuple[Layer, ...]:
        if value is None:
            return ()
        source = self.rows_source(value)
        if source is None:
            return ()
        layers, problems = read_rows(source, self.read_text)
        self.problems.extend(problems)
        for layer in layers:
            if not _FIELDS_WITH_A_MEANING.isdisjoint(layer.values):  # a million rows: most have none of them
                for key, item in layer.values.items():
                    self.check_field(key, item, layer.origin, allow_repeat=True)
        return layers

    def rows_source(self, value: Any) -> RowsSource | None:
        spec: dict[str, Any] = {"file": value} if isinstance(value, str) else value
        if not isinstance(spec, dict):
            self.error(("rows",), f"`rows` must be a file name or {{file: ..., types: ...}}, got {_show(value)}")
            return None
        for key in spec:
            if key not in ("file", "format", "types"):
                self.error(
                    ("rows", key), f"unknown key `rows.{key}`", did_you_mean(str(key), ("file", "format", "types"))
                )
        file = spec.get("file")
        if not isinstance(file, str) or not file:
            self.error(("rows",), f"`rows.file` must name a .csv or .jsonl file, got {_show(file)}")
            return None
        fmt = spec.get("format") or Path(file).suffix.lstrip(".").lower()
        if fmt not in ("csv", "jsonl"):
            self.error(
                ("rows",), f"cannot tell the format of rows file {file!r}", "use .csv or .jsonl, or set `format`"
            )
            return None
        types = spec.get("types") or {}
        if not isinstance(types, dict) or any(t not in ROW_TYPES for t in types.values()):
            allowed = ", ".join(ROW_TYPES)
            self.error(("rows", "types"), f"`rows.types` must map column names to one of {allowed}, got {_show(types)}")
            types = {}
        return RowsSource(self.path.parent / file, fmt, dict(types), self.doc.where(("rows",)))


def _label(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in path).replace(".[", "[")


def _type_name(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A value as the user wrote it, short enough for one line, with its YAML type when that matters."""
    if value is None:
        return "nothing"
    if isinstance(value, dict | list):
        return _type_name(value)
    text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
