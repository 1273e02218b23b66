"""The plan: every job of a manifest with its estimated cost, every problem found, and the budget verdict.

`build_plan` is pure: the engine (engine/planning.py) fetches model entries and image headers, then calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from batchgen.core.expansion import Expansion
from batchgen.core.jobs import JobSpec
from batchgen.core.manifest import Manifest
from batchgen.core.models import MediaType, ModelInfo
from batchgen.core.pricing import PriceList
from batchgen.core.problems import ProblemList, did_you_mean
from batchgen.core.validation import ImageProbe, check_jobs
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
            "jobs": [
                {
                    "key": job.spec.key,
                    "model": job.spec.model,
                    "params": dict(job.spec.params),
                    "repeat": job.spec.repeat,
                    "variables": dict(job.spec.variables),
                    "origin": job.spec.origin,
                    "media_type": job.media_type,
                    "estimated_cost": job.estimated_cost,
                }
                for job in self.jobs
            ],
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
    problems = ProblemList()
    problems.extend(expansion.problems)
    warnings = dict.fromkeys(expansion.warnings)
    first_job_of: dict[str, int] = {}
    for index, job in enumerate(expansion.jobs):
        first_job_of.setdefault(job.spec.model, index)
    for model_id, known in registry.unknown.items():
        first = first_job_of.get(model_id)
        where = expansion.jobs[first].origin_of("model") if first is not None else str(manifest.path)
        problems.add(where, f"unknown model `{model_id}`", did_you_mean(model_id, known) or "see GET /api/ai/models")
    for model_id, why in registry.unavailable.items():
        warnings[f"{model_id}: {why}; its jobs were not validated and not priced"] = None
    for warning in check_jobs(expansion.jobs, registry.models, probes, problems):
        warnings[warning] = None

    price_lists = {model_id: PriceList(info) for model_id, info in registry.models.items()}
    total = Decimal(0)
    unpriced: dict[str, int] = {}
    planned: list[PlannedJob] = []
    for job in expansion.jobs:
        info = registry.models.get(job.spec.model)
        cost: Decimal | None = None
        if info is not None:
            estimate = price_lists[info.id].estimate(job.spec.params)
            cost = estimate.cost
            reason = estimate.reason
        else:
            reason = f"{job.spec.model}: no registry entry"
        if cost is None:
            unpriced[reason] = unpriced.get(reason, 0) + 1
        else:
            total += cost
        media: MediaType = info.media_type if info is not None else "video"
        planned.append(PlannedJob(job.spec, float(cost) if cost is not None else None, media))
    for reason, count in unpriced.items():
        warnings[f"price unknown for {count} job(s): {reason}"] = None

    budgets = [value for value in (manifest.settings.budget, max_cost) if value is not None]
    budget = min(budgets) if budgets else None
    unpriced_jobs = sum(unpriced.values())
    if budget is not None and unpriced_jobs:
        warnings[f"the budget can only be checked against the {len(planned) - unpriced_jobs} priced jobs"] = None
    validated = bool(planned) and all(
        (info := registry.models.get(job.spec.model)) is not None and info.request_schema is not None for job in planned
    )
    return Plan(
        manifest=manifest,
        jobs=tuple(planned),
        models=dict(registry.models),
        problems=tuple(problems.as_list()),
        warnings=tuple(warnings),
        total_cost=float(total),
        total_cost_exact=total,
        validated=validated,
        priced=unpriced_jobs == 0,
        budget=budget,
        unpriced_jobs=unpriced_jobs,
    )
