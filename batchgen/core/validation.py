"""Checking jobs before anything is spent: each job's parameters against its model's `request_schema`, plus
the rules a schema cannot say (Sora's first frame must be exactly the output size).

Built for 100,000 jobs: one compiled validator per model, and results cached per distinct parameter set,
where a free-text string (the prompt, typically) is replaced by a placeholder when the schema cannot tell
one string from another.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jsonschema
from jsonschema.exceptions import ValidationError

from batchgen.core.expansion import ExpandedJob
from batchgen.core.images import image_size
from batchgen.core.jobs import exact_key
from batchgen.core.models import ModelInfo

# Keywords that describe a property without constraining it beyond its type.
_ANNOTATIONS = frozenset({"type", "title", "description", "default", "examples", "format", "x-order", "deprecated"})
# Top-level keywords under which each property is checked on its own (so a placeholder cannot change a verdict).
_PLAIN_OBJECT = frozenset(
    {"type", "title", "description", "required", "properties", "additionalProperties", "basic", "$schema", "$id"}
)
_PLACEHOLDER = ""
CACHE_LIMIT = 65_536  # verdicts kept per model

# Sora's first frame must exactly match the output size: (aspect_ratio, resolution) -> (width, height).
SORA_OUTPUT_SIZES: Mapping[tuple[str, str], tuple[int, int]] = {
    ("landscape", "standard"): (1280, 720),
    ("portrait", "standard"): (720, 1280),
    ("landscape", "high"): (1792, 1024),
    ("portrait", "high"): (1024, 1792),
}


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """A schema complaint about one job, before it is located: `field` is "" for the whole request."""

    field: str
    message: str
    hint: str = ""


@dataclass(frozen=True, slots=True)
class ImageProbe:
    """What fetching an image's first bytes found: its size, or why it could not be read."""

    size: tuple[int, int] | None
    error: str = ""


def is_sora(model: str) -> bool:
    """Sora models share the first-frame rule."""
    return model.startswith("openai-sora")


class SchemaChecker:
    """Validates parameter sets against one model's request schema, remembering every verdict."""

    def __init__(self, model: ModelInfo) -> None:
        assert model.request_schema is not None
        self.model = model
        schema = dict(model.request_schema)
        validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            validator_class.check_schema(schema)
            self.validator: jsonschema.protocols.Validator | None = validator_class(schema)
            self.schema_error = ""
        except jsonschema.SchemaError as error:
            self.validator = None
            self.schema_error = (
                f"the registry's request_schema for {model.id} is not valid JSON Schema: {error.message}"
            )
        self.free_strings = _free_string_properties(schema)
        self.sora = is_sora(model.id)
        self._cache: dict[tuple[Hashable, ...], tuple[FieldProblem, ...]] = {}

    def check(self, params: Mapping[str, Any]) -> tuple[FieldProblem, ...]:
        """Every schema problem of one parameter set (cached)."""
        if self.validator is None:
            return ()
        free = self.free_strings
        # The verdict's key: the names in order, and each value as itself, by exact_key, or as the placeholder.
        parts: list[Hashable] = []
        for name, value in params.items():
            parts.append(name)
            if value.__class__ is str:
                parts.append(_PLACEHOLDER if name in free else value)
            else:
                parts.append(exact_key(value))
        key = tuple(parts)
        cached = self._cache.get(key)
        if cached is None:
            if free:
                params = {
                    name: _PLACEHOLDER if name in free and isinstance(value, str) else value
                    for name, value in params.items()
                }
            errors = sorted(self.validator.iter_errors(params), key=lambda error: list(error.absolute_path))
            # `seconds: 4` breaks both `type` and `enum`; the enum message says all of it, so say it once.
            with_enum = {tuple(error.absolute_path) for error in errors if error.validator == "enum"}
            errors = [e for e in errors if not (e.validator == "type" and tuple(e.absolute_path) in with_enum)]
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()  # a parameter unique to each job (a seed) would otherwise keep them all
            cached = self._cache[key] = tuple(self._describe(error) for error in errors)
        return cached

    def _describe(self, error: ValidationError) -> FieldProblem:
        model = self.model.id
        path = list(error.absolute_path)
        field = str(path[0]) if path else ""
        value: Any = error.instance
        constraint: Any = error.validator_value
        if error.validator == "required" and not path:
            missing = next((name for name in constraint if name not in value), "?")
            return FieldProblem("", f"`{missing}` is required by {model}", f"add `{missing}` to `params` or the entry")
        if error.validator == "enum":
            allowed = ", ".join(_show(option) for option in constraint)
            message = f"`{field}` must be one of {allowed} for {model}, got {_show(value)}"
            return FieldProblem(field, message, _type_hint(field, value, constraint))
        if error.validator == "type":
            expected = constraint
            message = f"`{field}` must be of type {expected} for {model}, got {_show(value)} ({_json_type(value)})"
            examples = [_example_of(expected, value)]
            return FieldProblem(field, message, _type_hint(field, value, examples))
        if error.validator == "additionalProperties":
            return FieldProblem(field, f"{error.message} for {model}")
        return FieldProblem(field, f"`{field or 'request'}`: {error.message} for {model}")


def _free_string_properties(schema: Mapping[str, Any]) -> frozenset[str]:
    """Properties whose only constraint is "a string": any two strings get the same verdict there."""
    if not set(schema) <= _PLAIN_OBJECT and not all(str(key).startswith("x-") for key in set(schema) - _PLAIN_OBJECT):
        return frozenset()
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return frozenset()
    return frozenset(
        name
        for name, prop in properties.items()
        if isinstance(prop, Mapping)
        and prop.get("type") == "string"
        and all(key in _ANNOTATIONS or str(key).startswith("x-") for key in prop)
    )


def _show(value: Any) -> str:
    """A value in JSON spelling, so the string "4" and the number 4 look different."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _example_of(expected: Any, value: Any) -> Any:
    if expected == "string" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if expected in ("integer", "number") and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _type_hint(field: str, value: Any, allowed: Iterable[Any]) -> str:
    """Spot the number-versus-string slip (Sora's `seconds: 4`) and say how to write it."""
    for option in allowed:
        if isinstance(option, str) and not isinstance(value, str | bool) and option == str(value):
            return f'quote it: `{field}: "{value}"` (YAML reads 4 as a number)'
        if isinstance(value, str) and isinstance(option, int) and not isinstance(option, bool) and value == str(option):
            return f"write it without quotes: `{field}: {option}` (in a CSV, declare `rows.types: {{{field}: int}}`)"
    return ""


def sora_size_problem(model: ModelInfo, params: Mapping[str, Any], probe: ImageProbe) -> str | None:
    """Why Sora would reject this `input_image` (its size differs from the output size), or None."""
    if probe.size is None:
        return None
    aspect = str(params.get("aspect_ratio", model.default_of("aspect_ratio") or "landscape"))
    resolution = str(params.get("resolution", model.default_of("resolution") or "standard"))
    expected = SORA_OUTPUT_SIZES.get((aspect, resolution))
    if expected is None or probe.size == expected:
        return None
    width, height = probe.size
    return (
        f"`input_image` is {width}x{height}, but {model.id} with aspect_ratio {aspect!r} and resolution "
        f"{resolution!r} makes {expected[0]}x{expected[1]} videos and the first frame must match exactly"
    )


def probe_data_uri(uri: str) -> ImageProbe:
    """Read the size of an image given inline as a `data:` URI (no network needed)."""
    header, _, payload = uri.partition(",")
    try:
        data = base64.b64decode(payload[: 4 * 22000], validate=False) if ";base64" in header else payload.encode()
    except (binascii.Error, ValueError):
        return ImageProbe(None, "the data: URI is not valid base64")
    size = image_size(data)
    return ImageProbe(size, "" if size else "the data: URI is not a PNG, JPEG, WebP or GIF image")


def images_to_probe(jobs: Iterable[ExpandedJob]) -> set[str]:
    """The distinct `input_image` URLs of Sora jobs: the ones whose size matters."""
    urls: set[str] = set()
    for job in jobs:
        if is_sora(job.spec.model):
            url = job.spec.params.get("input_image")
            if isinstance(url, str) and url:
                urls.add(url)
    return urls


class ProblemSink(Protocol):
    """Where located problems go (a ProblemList, or anything that keeps them the same way)."""

    def add(self, where: str, message: str, hint: str = "", *, group: str | None = None) -> None: ...


class JobChecker:
    """Checks jobs one at a time, adding located problems to `problems` and collecting warnings: one schema
    checker per model, made when its first job comes. `probes` may be given late, before the first job that
    needs one (see `image_to_fetch`)."""

    def __init__(
        self, models: Mapping[str, ModelInfo], problems: ProblemSink, probes: Mapping[str, ImageProbe] | None = None
    ) -> None:
        self.models = models
        self.problems = problems
        self.probes: Mapping[str, ImageProbe] = probes if probes is not None else {}
        self.warnings: dict[str, None] = {}
        self._checkers: dict[str, SchemaChecker | None] = {}

    def schema_checker(self, model_id: str) -> SchemaChecker | None:
        """The model's schema checker (made once), or None when its entry or schema is unknown."""
        if model_id in self._checkers:
            return self._checkers[model_id]
        model = self.models.get(model_id)
        checker = None
        if model is not None and model.request_schema is not None:
            checker = SchemaChecker(model)
            if checker.schema_error:
                self.warnings[checker.schema_error] = None
        self._checkers[model_id] = checker
        return checker

    def image_to_fetch(self, job: ExpandedJob) -> str | None:
        """The URL whose probe checking this job needs (a Sora job's `input_image` that is not a data: URI)."""
        url = job.spec.params.get("input_image")
        if not isinstance(url, str) or not url or url.startswith("data:"):
            return None
        checker = self.schema_checker(job.spec.model)
        return url if checker is not None and checker.sora else None

    def check(self, job: ExpandedJob) -> None:
        """Validate one job (nothing to do when its model or schema is unknown)."""
        checker = self.schema_checker(job.spec.model)
        if checker is None:
            return
        self.locate(job, checker.check(job.spec.params))
        if checker.sora:
            self.check_first_frame(job, checker.model)

    def locate(self, job: ExpandedJob, found: Iterable[FieldProblem]) -> None:
        """Add a job's schema problems at the lines that wrote the fields they are about."""
        for problem in found:
            where = job.origin_of(problem.field) if problem.field else job.spec.origin
            self.problems.add(where, problem.message, problem.hint)

    def check_first_frame(self, job: ExpandedJob, model: ModelInfo) -> None:
        """Sora's rule: an `input_image` must be exactly the output size (needs its probe, or a data: URI)."""
        _check_first_frame(job, model, self.probes, self.problems, self.warnings)


def check_jobs(
    jobs: Iterable[ExpandedJob],
    models: Mapping[str, ModelInfo],
    probes: Mapping[str, ImageProbe],
    problems: ProblemSink,
) -> list[str]:
    """Validate every job whose model is known, adding located problems; return warnings."""
    checker = JobChecker(models, problems, probes)
    for job in jobs:
        checker.check(job)
    return list(checker.warnings)


def _check_first_frame(
    job: ExpandedJob,
    model: ModelInfo,
    probes: Mapping[str, ImageProbe],
    problems: ProblemSink,
    warnings: dict[str, None],
) -> None:
    url = job.spec.params.get("input_image")
    if not isinstance(url, str) or not url:
        return
    probe = probe_data_uri(url) if url.startswith("data:") else probes.get(url)
    if probe is None or probe.size is None:
        reason = probe.error if probe is not None else "it was not fetched"
        warnings[f"input_image {_shorten(url)} could not be read ({reason}); its size was not checked"] = None
        return
    mismatch = sora_size_problem(model, job.spec.params, probe)
    if mismatch:
        problems.add(job.origin_of("input_image"), mismatch, "resize the image, or change aspect_ratio/resolution")


def _shorten(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."
