"""The plan: every job of a manifest with its estimated cost, every problem found, and the budget verdict.

`build_plan` and `draft_plan` are pure: the engine (engine/planning.py) fetches model entries and image headers.
`draft_plan` expands, validates and prices a job at a time, so a million-job plan holds each job once, as the
PlannedJob the run needs, and no list of expanded jobs beside it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from batchgen.core.expansion import ExpandedJob, Expander, Expansion
from batchgen.core.jobs import JobSpec, exact_key
from batchgen.core.layers import Layer
from batchgen.core.manifest import Manifest
from batchgen.core.models import MediaType, ModelInfo
from batchgen.core.pricing import PRICE_NAMES, Estimate, PriceList
from batchgen.core.problems import SHOWN_PER_GROUP, ProblemList, did_you_mean
from batchgen.core.validation import FieldProblem, ImageProbe, JobChecker, SchemaChecker
from batchgen.errors import BudgetError, ManifestError, Problem


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """One job as planned: the spec to send, its estimated cost in USD (None = unknown) and its output kind."""

    spec: JobSpec
    estimated_cost: float | None
    media_type: MediaType


@dataclass(frozen=True, slots=True)
class RegistryView:
    """What the registry (or its cache) said about the manifest's models."""

    models: Mapping[str, ModelInfo] = field(default_factory=dict)
    unknown: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # id -> known ids, for suggestions
    unavailable: Mapping[str, str] = field(default_factory=dict)  # id -> why there is no entry (and no cache)


@dataclass(frozen=True, slots=True)
class Plan:
    """A manifest, fully expanded, validated and priced. Nothing has been enqueued."""

    manifest: Manifest
    jobs: tuple[PlannedJob, ...]
    models: Mapping[str, ModelInfo]
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]
    total_cost: float  # USD, the sum of the known estimates
    total_cost_exact: Decimal
    validated: bool  # every job was checked against its model's schema
    priced: bool  # every job has an estimate (total_cost is then the whole estimate)
    budget: float | None  # the stricter of the manifest's `budget` and --max-cost
    unpriced_jobs: int = 0

    def __repr__(self) -> str:
        # Short at any size: asyncio's repr of a finished task shows its result, and anyio.run has it formatted
        # when it restores SIGINT; the whole repr of a million-job plan took 12 s and 700 MB after the work.
        return (
            f"Plan(manifest={self.manifest.name!r}, jobs={len(self.jobs)}, problems={len(self.problems)}, "
            f"total_cost={self.total_cost_exact})"
        )

    @property
    def over_budget(self) -> bool:
        """True when the known estimate alone already exceeds the budget."""
        return self.budget is not None and self.total_cost_exact > Decimal(str(self.budget))

    def check(self) -> None:
        """Raise ManifestError when any job is invalid, or BudgetError when the estimate exceeds the budget."""
        if self.problems:
            raise ManifestError(list(self.problems))
        if self.over_budget:
            raise BudgetError(
                f"{self.manifest.path}: the estimated cost ${self.total_cost_exact:.2f} of {len(self.jobs)} jobs "
                f"exceeds the budget of ${self.budget:.2f}; nothing was enqueued "
                "(raise `budget` / --max-cost, or plan fewer jobs)"
            )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description of the plan (what `batchgen plan --json` prints)."""
        return {**self.summary_json(), "jobs": [job_json(job) for job in self.jobs]}

    def summary_json(self) -> dict[str, Any]:
        """`to_json()` but its last key, "jobs" (which `batchgen plan --json` writes a job at a time)."""
        return {
            "manifest": {
                "name": self.manifest.name,
                "path": str(self.manifest.path),
                "concurrency": self.manifest.settings.concurrency,
                "budget": self.budget,
                "out_dir": str(self.manifest.settings.out_dir),
            },
            "valid": not self.problems,
            "validated": self.validated,
            "priced": self.priced,
            "job_count": len(self.jobs),
            "total_cost": float(round(self.total_cost_exact, 6)),
            "unpriced_jobs": self.unpriced_jobs,
            "over_budget": self.over_budget,
            "problems": [{"where": p.where, "message": p.message, "hint": p.hint} for p in self.problems],
            "warnings": list(self.warnings),
        }


def job_json(job: PlannedJob) -> dict[str, Any]:
    """One job of `Plan.to_json()`."""
    return {
        "key": job.spec.key,
        "model": job.spec.model,
        "params": dict(job.spec.params),
        "repeat": job.spec.repeat,
        "variables": dict(job.spec.variables),
        "origin": job.spec.origin,
        "media_type": job.media_type,
        "estimated_cost": job.estimated_cost,
    }


def build_plan(
    manifest: Manifest,
    expansion: Expansion,
    registry: RegistryView,
    probes: Mapping[str, ImageProbe],
    *,
    max_cost: float | None = None,
) -> Plan:
    """Validate and price an expansion; collects every problem instead of stopping at the first."""
    draft = PlanDraft(manifest, registry)
    for job in expansion.jobs:
        draft.add(job)
    draft.note_expansion(expansion.problems, expansion.warnings)
    return draft.finish(probes, max_cost=max_cost)


def draft_plan(manifest: Manifest, registry: RegistryView) -> PlanDraft:
    """Expand, validate and price in one pass, one job at a time: a job is kept only as its PlannedJob (except
    those that wait for an image's size). Finish it with the probes of `draft.images_to_probe`."""
    expander = Expander(manifest, registry.models)
    draft = PlanDraft(manifest, registry)
    for spec, layers in expander.specs():
        draft.add_spec(spec, layers)
    draft.note_expansion(expander.problems(), expander.warnings())
    return draft


class _Findings:
    """Problems kept as a ProblemList keeps them (a few shown per group, the rest counted), to be replayed, in
    order, after the ones that must come first (the expansion's, unknown models)."""

    def __init__(self, shown_per_group: int = SHOWN_PER_GROUP) -> None:
        self.shown_per_group = shown_per_group
        self.shown: list[tuple[Problem, str]] = []
        self.counts: dict[str, int] = {}

    def add(self, where: str, message: str, hint: str = "", *, group: str | None = None) -> None:
        group = message if group is None else group
        count = self.counts[group] = self.counts.get(group, 0) + 1
        if count <= self.shown_per_group:
            self.shown.append((Problem(where, message, hint), group))

    def replay(self, problems: ProblemList) -> None:
        for problem, group in self.shown:
            problems.add(problem.where, problem.message, problem.hint, group=group)
        for group, count in self.counts.items():
            for _ in range(count - min(count, self.shown_per_group)):
                problems.add("", group, group=group)  # counted only: past the cap, nothing more is shown


@dataclass(slots=True)
class _ModelVerdicts:
    """What a plan knows of one model: its schema checker, prices and output kind, and the verdicts reached."""

    checker: SchemaChecker | None
    prices: PriceList | None
    media: MediaType
    # free-string parameters that change no price: any two of their strings get one verdict (the prompt)
    masked: frozenset[str]
    verdicts: dict[tuple[Hashable, ...], tuple[tuple[FieldProblem, ...], Estimate | None]] = field(default_factory=dict)


VERDICTS_KEPT = 65_536  # per model; a parameter unique to each job (a seed) would otherwise keep them all


class PlanDraft:
    """A plan made one job at a time: each job is validated and priced as it comes and kept as a PlannedJob.

    A job's schema verdict and price are looked up by its parameters less the strings no schema tells apart
    (the prompt): a million jobs of a dozen distinct settings are checked and priced a dozen times.
    A Sora job whose `input_image` must be fetched to be checked cannot be finished before the fetch: from the
    first such job on, jobs are held in order (`images_to_probe` lists what to fetch) and finished by `finish`.
    """

    def __init__(self, manifest: Manifest, registry: RegistryView) -> None:
        self.manifest = manifest
        self.registry = registry
        self.findings = _Findings()
        self.checker = JobChecker(registry.models, self.findings)
        self.by_model: dict[str, _ModelVerdicts] = {}
        self.planned: list[PlannedJob] = []
        self.total = Decimal(0)
        self.unpriced: dict[str, int] = {}
        self.first_origin: dict[str, str] = {}  # model -> where its first job names it
        self.held: list[ExpandedJob] | None = None
        self.images_to_probe: set[str] = set()
        self.expansion_problems: list[Problem] = []
        self.expansion_warnings: list[str] = []

    def add(self, job: ExpandedJob) -> None:
        """Validate and price one job (or hold it until the images are probed)."""
        self.add_spec(job.spec, job.layers)

    def add_spec(self, spec: JobSpec, layers: tuple[Layer, ...]) -> None:
        """`add` for a job given as its spec and the layers it was made from (no ExpandedJob made unless needed)."""
        model = spec.model
        entry = self.by_model.get(model)
        if entry is None:
            entry = self._model(model)
            self.first_origin[model] = ExpandedJob(spec, layers).origin_of("model")
        if "input_image" in spec.params:
            url = self.checker.image_to_fetch(ExpandedJob(spec, layers))
            if url is not None:
                self.images_to_probe.add(url)
                if self.held is None:
                    self.held = []
        if self.held is not None:
            self.held.append(ExpandedJob(spec, layers))
        else:
            self._settle(spec, layers, entry)

    def note_expansion(self, problems: list[Problem], warnings: list[str]) -> None:
        """What expansion found: shown before everything the plan finds."""
        self.expansion_problems = problems
        self.expansion_warnings = warnings

    def _model(self, model_id: str) -> _ModelVerdicts:
        info = self.registry.models.get(model_id)
        checker = self.checker.schema_checker(model_id)
        masked = checker.free_strings - PRICE_NAMES if checker is not None else frozenset()
        prices = PriceList(info) if info is not None else None
        entry = self.by_model[model_id] = _ModelVerdicts(
            checker, prices, info.media_type if info is not None else "video", masked
        )
        return entry

    def _settle(self, spec: JobSpec, layers: tuple[Layer, ...], entry: _ModelVerdicts) -> None:
        params = spec.params
        masked = entry.masked
        parts: list[Hashable] = []
        for name, value in params.items():
            parts.append(name)
            if value.__class__ is str:
                parts.append("" if name in masked else value)
            else:
                parts.append(exact_key(value))
        key = tuple(parts)
        verdict = entry.verdicts.get(key)
        if verdict is None:
            found = entry.checker.check(params) if entry.checker is not None else ()
            estimate = entry.prices.estimate(params) if entry.prices is not None else None
            if len(entry.verdicts) >= VERDICTS_KEPT:
                entry.verdicts.clear()
            verdict = entry.verdicts[key] = (found, estimate)
        found, estimate = verdict
        if found:
            self.checker.locate(ExpandedJob(spec, layers), found)
        if entry.checker is not None and entry.checker.sora and "input_image" in params:
            self.checker.check_first_frame(ExpandedJob(spec, layers), entry.checker.model)
        if estimate is None:
            reason = f"{spec.model}: no registry entry"
            self.unpriced[reason] = self.unpriced.get(reason, 0) + 1
            usd = None
        else:
            usd = estimate.usd
            if estimate.cost is None:
                self.unpriced[estimate.reason] = self.unpriced.get(estimate.reason, 0) + 1
            else:
                self.total += estimate.cost
        self.planned.append(PlannedJob(spec, usd, entry.media))

    def finish(self, probes: Mapping[str, ImageProbe], *, max_cost: float | None = None) -> Plan:
        """The plan, once the images it asked for are probed (an image missing from `probes` is not checked)."""
        self.checker.probes = probes
        for job in self.held or ():
            self._settle(job.spec, job.layers, self.by_model[job.spec.model])
        self.held = None
        manifest, registry = self.manifest, self.registry
        problems = ProblemList()
        problems.extend(self.expansion_problems)
        warnings = dict.fromkeys(self.expansion_warnings)
        for model_id, known in registry.unknown.items():
            where = self.first_origin.get(model_id, str(manifest.path))
            hint = did_you_mean(model_id, known) or "see GET /api/ai/models"
            problems.add(where, f"unknown model `{model_id}`", hint)
        for model_id, why in registry.unavailable.items():
            warnings[f"{model_id}: {why}; its jobs were not validated and not priced"] = None
        self.findings.replay(problems)
        warnings.update(self.checker.warnings)
        for reason, count in self.unpriced.items():
            warnings[f"price unknown for {count} job(s): {reason}"] = None

        planned = self.planned
        budgets = [value for value in (manifest.settings.budget, max_cost) if value is not None]
        budget = min(budgets) if budgets else None
        unpriced_jobs = sum(self.unpriced.values())
        if budget is not None and unpriced_jobs:
            warnings[f"the budget can only be checked against the {len(planned) - unpriced_jobs} priced jobs"] = None
        models = registry.models
        validated = bool(planned) and all(
            (info := models.get(model_id)) is not None and info.request_schema is not None
            for model_id in self.first_origin
        )
        return Plan(
            manifest=manifest,
            jobs=tuple(planned),
            models=dict(models),
            problems=tuple(problems.as_list()),
            warnings=tuple(warnings),
            total_cost=float(self.total),
            total_cost_exact=self.total,
            validated=validated,
            priced=unpriced_jobs == 0,
            budget=budget,
            unpriced_jobs=unpriced_jobs,
        )
