"""Expansion: a manifest's layers become jobs (defaults x matrix x zip x repeat, then `jobs`, then rows).

Which fields are request parameters and which are template variables is decided by the model's schema when it
is known: schema properties (and the queue's own fields) are sent, everything else is kept as
`JobSpec.variables`. Without a schema, a field named by a `{template}` is taken as a variable and every other
field as a parameter; the plan then warns that keys may change once the schema is known.

Built for a million jobs: what depends only on a job's *shape* (which fields, from which layers) is worked out
once per shape (which fields are parameters, which line locates the job); variables and rendered templates are
shared by the jobs whose values are the very same objects; and `Expander` makes the jobs one at a time, so a plan
need not hold them all (core/plan.py).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchgen.core.jobs import JobSpec, KeyMaker, job_key
from batchgen.core.layers import Layer
from batchgen.core.manifest import RESERVED_FIELDS as RESERVED
from batchgen.core.manifest import Manifest
from batchgen.core.models import ModelInfo
from batchgen.core.problems import ProblemList, did_you_mean
from batchgen.core.templates import Template, TemplateError, parse_template
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
    expander = Expander(manifest, models)
    jobs = tuple(expander)
    return Expansion(jobs, expander.problems(), expander.warnings())


def _repeat_of(layer: Layer) -> int:
    if "repeat" not in layer.values:
        return 1
    value = layer.values["repeat"]
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


_UNSEEN = object()  # a shape not met yet
SHARED_LIMIT = 65_536  # shared variables and rendered texts remembered at once (a cache, so bounded)
_COMBINATIONS = "combinations"  # the shape of every defaults x matrix x zip stack: the same layers, the same fields


@dataclass(frozen=True, slots=True)
class _Shape:
    """What every stack of one shape shares: the same field names from the same layers, so the same split."""

    params: tuple[str, ...]
    variables: tuple[str, ...]
    origin_layer: int  # the layer whose `prompt` locates the job; -1 (no prompt): the last layer's line
    params_are_entry: bool  # the parameters are the last layer's fields, all of them: its dict is shared, not copied
    keys: KeyMaker  # job keys of this model with these parameter names
    # Matrix stacks only: the fields whose values decide the variables and rendered templates (None: not known),
    # and the parameters that may hold a template; a job's derived part is then shared by the jobs whose inputs
    # are the very same values (the dozen jobs of one prompt differ only in seconds, ratio, resolution).
    inputs: tuple[str, ...] | None = None
    templated: tuple[str, ...] = ()


class Expander:
    """The jobs of a manifest, made one at a time as it is iterated (once); `problems()` and `warnings()` are
    complete when the iteration is."""

    def __init__(self, manifest: Manifest, models: Mapping[str, ModelInfo]) -> None:
        self.manifest = manifest
        self.models = models
        self.problems_found = ProblemList()
        self.warnings_found: dict[str, None] = {}
        self.seen: dict[str, str] = {}  # job key -> origin of its first occurrence
        self.models_used: dict[str, None] = {}
        self.unused_reported: set[tuple[str, str]] = set()
        self.defaults_used: set[str] = set()
        # (model, shape) -> how its stacks split; None when the split depends on values and is made job by job
        self.shapes: dict[tuple[str, Hashable], _Shape | None] = {}
        # Keyed by the ids of values held by the manifest's layers, which live as long as this expander does.
        self.shared_variables: dict[tuple[Hashable, ...], dict[str, Any]] = {}
        self.rendered: dict[tuple[Hashable, ...], str] = {}
        self.derived: dict[tuple[int, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
        self.no_variables: dict[str, Any] = {}

    def __iter__(self) -> Iterator[ExpandedJob]:
        for spec, layers in self.specs():
            yield ExpandedJob(spec, layers)

    def specs(self) -> Iterator[tuple[JobSpec, tuple[Layer, ...]]]:
        """The jobs as (spec, layers): what `__iter__` yields, without an ExpandedJob per job."""
        for layers, repeat, shape in self.stacks():
            for spec in self.make(layers, repeat, shape):
                yield spec, layers
        self.check_unused_defaults()

    def problems(self) -> list[Problem]:
        """The problems found so far (all of them once the jobs have been iterated)."""
        return self.problems_found.as_list()

    def warnings(self) -> list[str]:
        """The warnings found so far, in order, each once."""
        return list(self.warnings_found)

    def check_unused_defaults(self) -> None:
        """A default that no job sends and no template uses is most likely a misspelt parameter."""
        known = [self.models[job_model] for job_model in self.models_used if job_model in self.models]
        if not known or any(info.request_schema is None for info in known):
            return
        defaults = self.manifest.defaults
        if all(name in RESERVED or name in self.defaults_used for name in defaults.values):
            return  # nothing to look for in every template (a million rows of them)
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
                self.problems_found.add(where, f"`{name}` is not a parameter of any model in this manifest", close)
            else:
                self.warnings_found[
                    f"{where}: `{name}` is not a parameter of any model in this manifest; it is not sent"
                ] = None

    def stacks(self) -> Iterator[tuple[tuple[Layer, ...], int, Hashable]]:
        """Each stack of layers, how many samples it asks for, and its shape (stacks of one shape split alike)."""
        manifest = self.manifest
        defaults = (manifest.defaults,)
        if manifest.has_combinations:
            zipped: tuple[tuple[Layer, ...], ...] = tuple((layer,) for layer in manifest.zipped) or ((),)
            for choice in itertools.product(*manifest.matrix):
                for zip_layer in zipped:
                    yield (*defaults, *choice, *zip_layer), manifest.repeat, _COMBINATIONS
        for layer in (*manifest.jobs, *manifest.rows):
            # an entry's shape is its field names, in order: rows of one file nearly always share one
            yield (*defaults, layer), _repeat_of(layer), tuple(layer.values)

    def make(self, layers: tuple[Layer, ...], repeat: int, shape_key: Hashable) -> list[JobSpec]:
        fields: dict[str, Any] = {}
        for layer in layers:
            fields.update(layer.values)
        fields.pop("repeat", None)
        model = fields.pop("model", None)
        if not isinstance(model, str):
            hint = "set `model` at the top level, as a matrix axis, or in the entry"
            self.problems_found.add(_origin(layers, "prompt"), "this job has no model", hint, group="no model")
            return []
        shape = self.shapes.get((model, shape_key), _UNSEEN)
        params: Mapping[str, Any]
        rendered: Mapping[str, Any] | None = None
        memo_key: tuple[int, ...] | None = None
        if isinstance(shape, _Shape):
            params = layers[-1].values if shape.params_are_entry else {name: fields[name] for name in shape.params}
            if shape.inputs is not None:
                try:
                    memo_key = (id(shape), *map(id, map(fields.__getitem__, shape.inputs)))
                except KeyError:  # a template names a field this stack lacks: render() says so, job by job
                    memo_key = None
                derived = self.derived.get(memo_key) if memo_key is not None else None
                if derived is not None:
                    variables, texts = derived
                    rendered = params
                    if texts:
                        rendered = {**params, **texts}
            if rendered is None:
                variables = self.share_variables(shape.variables, fields)
        else:
            params, variables = self.split(model, fields, layers)
            if shape is _UNSEEN:
                shape = self.shapes[(model, shape_key)] = self.shape_of(model, params, variables, layers, shape_key)
        make_key: Callable[[Mapping[str, Any], int], str]
        if isinstance(shape, _Shape):
            origin = layers[shape.origin_layer].origin_of("prompt") if shape.origin_layer >= 0 else layers[-1].origin
            make_key = shape.keys.key
        else:
            origin = _origin(layers, "prompt")
            make_key = functools.partial(job_key, model)
        if rendered is None:
            rendered = self.render(params, fields, layers)
            if rendered is None:
                return []
            if memo_key is not None and isinstance(shape, _Shape):
                if len(self.derived) >= SHARED_LIMIT:
                    self.derived.clear()
                self.derived[memo_key] = (variables, {name: rendered[name] for name in shape.templated})
        jobs = []
        for index in range(repeat):
            key = make_key(rendered, index)
            first = self.seen.get(key)
            if first is not None:
                self.problems_found.add(
                    origin,
                    f"this job is the very same request as the job from {first} (key {key})",
                    "remove one, or ask for more samples with `repeat`",
                    group="duplicate job",
                )
                continue
            self.seen[key] = origin
            jobs.append(JobSpec(model, rendered, index, variables, origin, key))
        if jobs:
            self.models_used[model] = None
        return jobs

    def shape_of(
        self,
        model: str,
        params: dict[str, Any],
        variables: dict[str, Any],
        layers: tuple[Layer, ...],
        shape_key: Hashable,
    ) -> _Shape | None:
        """How every stack shaped like this one splits, or None when that depends on the values (a field kept
        only because a template uses it; a model whose schema is unknown)."""
        info = self.models.get(model)
        if info is None or info.request_schema is None:
            return None
        later = layers[1:]
        for name in layers[0].values:
            if name in RESERVED or info.is_param(name) or any(name in layer.values for layer in later):
                continue
            return None  # a default this model does not take: kept or not as the templates of each job say
        origin_layer = next((i for i in range(len(layers) - 1, -1, -1) if "prompt" in layers[i].values), -1)
        last = layers[-1].values
        names = tuple(params)
        entry = len(layers) > 1 and names == tuple(last)
        inputs, templated = self.inputs_of(names, tuple(variables)) if shape_key is _COMBINATIONS else (None, ())
        return _Shape(names, tuple(variables), origin_layer, entry, KeyMaker(model, names), inputs, templated)

    def inputs_of(
        self, params: tuple[str, ...], variables: tuple[str, ...]
    ) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        """For the stacks of defaults x matrix x zip, whose every value is written in the manifest: the fields
        whose values decide a job's variables and rendered templates (the variables, the parameters any of whose
        values is a template, and every name those templates use), and those parameters. None for the inputs
        when a template cannot be parsed (each job then says so)."""
        manifest = self.manifest
        inputs = dict.fromkeys(variables)
        templated: dict[str, None] = {}
        for layer in (manifest.defaults, *(layer for axis in manifest.matrix for layer in axis), *manifest.zipped):
            for name, value in layer.values.items():
                if name in params and isinstance(value, str) and ("{" in value or "}" in value):
                    try:
                        template = parse_template(value)
                    except TemplateError:
                        return None, ()
                    templated[name] = None
                    inputs[name] = None
                    inputs.update(dict.fromkeys(template.names))
        return tuple(inputs), tuple(templated)

    def share_variables(self, names: tuple[str, ...], fields: Mapping[str, Any]) -> dict[str, Any]:
        """The variables of a job: one dict for every job whose variables are the very same values."""
        if not names:
            return self.no_variables
        values = tuple(map(fields.__getitem__, names))
        key = (names, *map(id, values))
        found = self.shared_variables.get(key)
        if found is None:
            if len(self.shared_variables) >= SHARED_LIMIT:
                self.shared_variables.clear()
            found = self.shared_variables[key] = dict(zip(names, values, strict=True))
        return found

    def split(
        self, model: str, fields: dict[str, Any], layers: tuple[Layer, ...]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        info = self.models.get(model)
        if info is None or info.request_schema is None:
            referenced = _referenced_names(fields)
            if referenced:
                self.warnings_found[
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
            self.problems_found.add(where, f"`{name}` is not a parameter of {model}", close)
        elif name not in _referenced_names(fields):
            self.warnings_found[
                f"{where}: `{name}` is not a parameter of {model}; it is kept as a variable and not sent"
            ] = None

    def render(
        self, params: Mapping[str, Any], fields: Mapping[str, Any], layers: tuple[Layer, ...]
    ) -> Mapping[str, Any] | None:
        """The parameters with their templates filled in (`params` itself when none has one), or None when a
        template cannot be filled; `params` is never changed (it may be a layer's own dict)."""
        ok = True
        rendered: dict[str, Any] | None = None
        for name, value in params.items():
            if not isinstance(value, str) or ("{" not in value and "}" not in value):
                continue
            try:
                template = parse_template(value)
            except TemplateError as error:
                where = _origin(layers, name)
                self.problems_found.add(where, f"in `{name}`: {error}", group=f"template {name} {error}")
                ok = False
                continue
            missing = [] if fields.keys() >= template.name_set else [v for v in template.names if v not in fields]
            for variable in missing:
                hint = (
                    did_you_mean(variable, fields) or "define it in `params`, a matrix/zip list, the entry or a column"
                )
                self.problems_found.add(
                    _origin(layers, name), f"`{name}` uses `{{{variable}}}`, which is not defined for this job", hint
                )
            if missing:
                ok = False
                continue
            if rendered is None:
                rendered = dict(params)
            rendered[name] = self.fill(value, template, fields)
        if not ok:
            return None
        return params if rendered is None else rendered

    def fill(self, text: str, template: Template, fields: Mapping[str, Any]) -> str:
        """The template filled in: one string for every job whose variables are the very same values."""
        key = (text, *map(id, map(fields.__getitem__, template.names)))
        found = self.rendered.get(key)
        if found is None:
            if len(self.rendered) >= SHARED_LIMIT:
                self.rendered.clear()
            found = self.rendered[key] = template.render(fields)
        return found


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
