"""Where a run's money stands, as values: what the ledger says was spent and is reserved, against the budget, and
the generations that are paid for but used by no job. The store computes them (engine/ledger.py); status, export
and the report show them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Money:
    """Where a run's money stands. spent: what the API charged (or will, for finished generations whose cost is
    not read yet); reserved: estimates of what is in flight or may have been sent."""

    spent: float
    reserved: float
    budget: float | None
    unused: int = 0  # paid (or running) generations no job uses
    unused_cost: float = 0.0

    @property
    def left(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget - self.spent - self.reserved)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One generation in the ledger: its job (None: paid, unused), what was asked, and what the API says."""

    generation_id: str
    job_id: int | None
    model: str
    params: Mapping[str, Any]
    how: str
    remote_status: str
    estimated_cost: float | None
    cost: float | None
    result_url: str | None
    seen_at: datetime
