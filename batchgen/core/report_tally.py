"""What a report says of a run as a whole (counts, money, times, the axes every job shares), added up one job at a
time, so a run of any size is summed in constant memory while its rows stream past."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from batchgen.core.jobs import JobRow, JobStatus

__all__ = ["PSEUDO_AXES", "RunTally", "axis_value"]

PSEUDO_AXES = ("model", "prompt")


def axis_value(row: JobRow, name: str) -> Any:
    """The value of one axis for a job: a parameter wins over a same-named variable, as in the export."""
    if name == "prompt":
        return row.prompt
    if name == "model":
        return row.model
    if name in row.params:
        return row.params[name]
    return row.variables.get(name)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # 1, 1.0 and True are three values of an axis, as canonical JSON has it


class RunTally:
    """Counts per status, cost and estimate, the first and last moment, the axes in first-seen order (variables,
    then parameters, then `model` and `prompt`) and which of them never vary."""

    def __init__(self) -> None:
        self.jobs = 0
        self.counts: dict[JobStatus, int] = {}
        self.cost: float | None = None
        self.estimated: float | None = None
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.unfinished = 0
        self._variables: dict[str, None] = {}
        self._params: dict[str, None] = {}
        self._first_values: dict[str, Any] = {}
        self._varying: set[str] = set()

    @classmethod
    def of(cls, rows: Iterable[JobRow]) -> RunTally:
        tally = cls()
        for row in rows:
            tally.add(row)
        return tally

    def add(self, row: JobRow) -> None:
        """Count one more job."""
        self.counts[row.status] = self.counts.get(row.status, 0) + 1
        if row.cost is not None:
            self.cost = (self.cost or 0.0) + row.cost
        if row.estimated_cost is not None:
            self.estimated = (self.estimated or 0.0) + row.estimated_cost
        for moment in (row.intent_at, row.enqueued_at, row.started_at, row.completed_at):
            if isinstance(moment, datetime) and moment.tzinfo is not None:
                self.first = moment if self.first is None or moment < self.first else self.first
                self.last = moment if self.last is None or moment > self.last else self.last
        if not row.status.is_terminal:
            self.unfinished += 1
        for names, source in ((self._variables, row.variables), (self._params, row.params)):
            for name in source:
                if name not in names and name not in PSEUDO_AXES:
                    names[name] = None
                    self._meet(name, row)
        for name in PSEUDO_AXES:
            if name not in self._first_values:
                self._meet(name, row)
        for name, first in self._first_values.items():
            if name not in self._varying and not _same(axis_value(row, name), first):
                self._varying.add(name)
        self.jobs += 1

    def _meet(self, name: str, row: JobRow) -> None:
        """An axis first seen on this job: every job before it had None there."""
        value = axis_value(row, name)
        self._first_values.setdefault(name, value if self.jobs == 0 else None)

    @property
    def axis_names(self) -> list[str]:
        """Every axis a grid can use, in the order `report.axis_names` gives them."""
        return [*self._variables, *(p for p in self._params if p not in self._variables), *PSEUDO_AXES]

    def fixed_axes(self) -> list[tuple[str, Any]]:
        """The axes with one value for every job, and that value."""
        if not self.jobs:
            return []
        return [(n, self._first_values[n]) for n in self.axis_names if n not in self._varying]

    @property
    def done(self) -> bool:
        return self.unfinished == 0
