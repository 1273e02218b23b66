"""Expansion: a manifest's layers become jobs (defaults x matrix x zip x repeat, then `jobs`, then rows).

Which fields are request parameters and which are template variables is decided by the model's schema when it
is known: schema properties (and the queue's own fields) are sent, everything else is kept as
`JobSpec.variables`. Without a schema, a field named by a `{template}` is taken as a variable and every other
field as a parameter; the plan then warns that keys may change once the schema is known.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchgen.core.jobs import JobSpec
from batchgen.core.layers import Layer
from batchgen.core.manifest import RESERVED_FIELDS as RESERVED
from batchgen.core.manifest import Manifest
from batchgen.core.models import ModelInfo
from batchgen.core.problems import ProblemList, did_you_mean
from batchgen.core.templates import TemplateError, parse_template
from batchgen.errors import Problem


@dataclass(frozen=True, slots=True)
class ExpandedJob:
    """A job and the stack of layers it was made from, so any field can be traced to its line."""

    spec: JobSpec
    layers: tuple[Layer, ...]

    def origin_of(self, name: str) -> str:
        """`file:line` where the field `name` of this job was written (the job's own origin if nowhere)."""
        for layer in reversed(self.layers):
            if name in layer.values:
                return layer.origin_of(name)
        return self.spec.origin


@dataclass(frozen=True, slots=True)
class Expansion:
    """Every job of a manifest, plus the problems and warnings found while making them."""

    jobs: tuple[ExpandedJob, ...]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def count_jobs(manifest: Manifest) -> int:
    """How many jobs `expand` will make, without making them (before duplicate checks)."""
    combinations = 0
    if manifest.has_combinations:
        combinations = len(manifest.zipped) or 1
        for axis in manifest.matrix:
            combinations *= len(axis)
        combinations *= manifest.repeat
    explicit = sum(_repeat_of(layer) for layer in (*manifest.jobs, *manifest.rows))
    return combinations + explicit


def expand(manifest: Manifest, models: Mapping[str, ModelInfo]) -> Expansion:
    """Make every job of the manifest; `models` supplies schemas (missing entries fall back as described above)."""
    return _Expander(manifest, models).run()


def _repeat_of(layer: Layer) -> int:
    value = layer.values.get("repeat", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


class _Expander:
    def __init__(self, manifest: Manifest, models: Mapping[str, ModelInfo]) -> None:
        self.manifest = manifest
        self.models = models
        self.problems = ProblemList()
        self.warnings: dict[str, None] = {}
        self.seen: dict[str, str] = {}  # job key -> origin of its first occurrence
        self.jobs: list[ExpandedJob] = []
        self.unused_reported: set[tuple[str, str]] = set()
        self.defaults_used: set[str] = set()

    def run(self) -> Expansion:
        for layers, repeat in self.stacks():
            self.make(layers, repeat)
        self.check_unused_defaults()
        return Expansion(tuple(self.jobs), self.problems.as_list(), list(self.warnings))

    def check_unused_defaults(self) -> None:
        """A default that no job sends and no template uses is most likely a misspelt parameter."""
        known = [
            self.models[job_model] for job_model in {job.spec.model for job in self.jobs} if job_model in self.models
        ]
        if not known or any(info.request_schema is None for info in known):
            return
        defaults = self.manifest.defaults
        properties = {name for info in known for name in info.properties}
        referenced = _referenced_names(defaults.values)
        for layer in (layer for axis in self.manifest.matrix for layer in axis):
            referenced |= _referenced_names(layer.values)
        for layer in (*self.manifest.zipped, *self.manifest.jobs, *self.manifest.rows):
            referenced |= _referenced_names(layer.values)
        for name in defaults.values:
            if name in RESERVED or name in self.defaults_used or name in referenced:
                continue
            where = defaults.origin_of(name)
            close = did_you_mean(name, properties)
            if close:
                self.problems.add(where, f"`{name}` is not a parameter of any model in this manifest", close)
            else:
                self.warnings[f"{where}: `{name}` is not a parameter of any model in this manifest; it is not sent"] = (
                    None
                )

    def stacks(self) -> Iterator[tuple[tuple[Layer, ...], int]]:
        manifest = self.manifest
        defaults = (manifest.defaults,)
        if manifest.has_combinations:
            zipped: tuple[tuple[Layer, ...], ...] = tuple((layer,) for layer in manifest.zipped) or ((),)
            for choice in itertools.product(*manifest.matrix):
                for zip_layer in zipped:
                    yield (*defaults, *choice, *zip_layer), manifest.repeat
        for layer in (*manifest.jobs, *manifest.rows):
            yield (*defaults, layer), _repeat_of(layer)

    def make(self, layers: tuple[Layer, ...], repeat: int) -> None:
        fields: dict[str, Any] = {}
        for layer in layers:
            fields.update(layer.values)
        fields.pop("repeat", None)
        model = fields.pop("model", None)
        origin = _origin(layers, "prompt")
        if not isinstance(model, str):
            hint = "set `model` at the top level, as a matrix axis, or in the entry"
            self.problems.add(origin, "this job has no model", hint, group="no model")
            return
        params, variables = self.split(model, fields, layers)
        if not self.render(params, fields, layers):
            return
        for index in range(repeat):
            spec = JobSpec(model=model, params=params, repeat=index, variables=variables, origin=origin)
            first = self.seen.get(spec.key)
            if first is not None:
                self.problems.add(
                    origin,
                    f"this job is the very same request as the job from {first} (key {spec.key})",
                    "remove one, or ask for more samples with `repeat`",
                    group="duplicate job",
                )
                continue
            self.seen[spec.key] = origin
            self.jobs.append(ExpandedJob(spec, layers))

    def split(
        self, model: str, fields: dict[str, Any], layers: tuple[Layer, ...]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        info = self.models.get(model)
        if info is None or info.request_schema is None:
            referenced = _referenced_names(fields)
            if referenced:
                self.warnings[
                    f"{model}: schema unknown, so template variables ({', '.join(sorted(referenced))}) were kept "
                    "out of the request and every other field was sent; job keys may change once the schema is known"
                ] = None
            params = {name: value for name, value in fields.items() if name not in referenced}
            return params, {name: value for name, value in fields.items() if name in referenced}
        params, variables = {}, {}
        used_by_templates: set[str] | None = None
        for name, value in fields.items():
            if info.is_param(name):
                params[name] = value
            elif name in layers[0].values and all(name not in layer.values for layer in layers[1:]):
                # A default this model does not take: kept only when a template uses it (say, a brand name).
                if used_by_templates is None:
                    used_by_templates = _referenced_names(fields)
                if name in used_by_templates:
                    variables[name] = value
            else:
                variables[name] = value
        for name in variables:
            # Defaults are shared by every model of the manifest, so one model not taking a default is normal;
            # unused defaults are checked once, across all models, at the end.
            from_defaults = all(name not in layer.values for layer in layers[1:])
            if from_defaults:
                continue
            if (model, name) not in self.unused_reported:
                self.unused_reported.add((model, name))
                self.check_variable(model, name, info, fields, layers)
        self.defaults_used.update(name for name in params if name in layers[0].values)
        return params, variables

    def check_variable(
        self, model: str, name: str, info: ModelInfo, fields: Mapping[str, Any], layers: tuple[Layer, ...]
    ) -> None:
        # A field that is not a parameter is fine as a template variable or a result column, but one that is
        # a near-miss of a real parameter is a typo that would silently not be sent: that one is an error.
        close = did_you_mean(name, info.properties)
        where = _origin(layers, name)
        if close:
            self.problems.add(where, f"`{name}` is not a parameter of {model}", close)
        elif name not in _referenced_names(fields):
            self.warnings[f"{where}: `{name}` is not a parameter of {model}; it is kept as a variable and not sent"] = (
                None
            )

    def render(self, params: dict[str, Any], fields: Mapping[str, Any], layers: tuple[Layer, ...]) -> bool:
        ok = True
        for name, value in params.items():
            if not isinstance(value, str) or ("{" not in value and "}" not in value):
                continue
            where = _origin(layers, name)
            try:
                template = parse_template(value)
            except TemplateError as error:
                self.problems.add(where, f"in `{name}`: {error}", group=f"template {name} {error}")
                ok = False
                continue
            missing = [variable for variable in template.names if variable not in fields]
            for variable in missing:
                hint = (
                    did_you_mean(variable, fields) or "define it in `params`, a matrix/zip list, the entry or a column"
                )
                self.problems.add(where, f"`{name}` uses `{{{variable}}}`, which is not defined for this job", hint)
            if missing:
                ok = False
                continue
            params[name] = template.render(fields)
        return ok


def _origin(layers: tuple[Layer, ...], name: str) -> str:
    """Where a job comes from: the line of its `name` field (the prompt), else of its most specific layer."""
    for layer in reversed(layers):
        if name in layer.values:
            return layer.origin_of(name)
    return layers[-1].origin


def _referenced_names(fields: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for value in fields.values():
        if isinstance(value, str) and "{" in value:
            try:
                names.update(parse_template(value).names)
            except TemplateError:
                continue
    return names
