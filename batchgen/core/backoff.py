"""How long to wait before trying again: the one backoff of batchgen, a pure function of the attempt number, so
a decision survives a restart (the attempt count is in the store)."""

from __future__ import annotations


def backoff(attempt: int, *, initial: float, maximum: float) -> float:
    """Exponential: `initial` for the first attempt, doubling each time, never above `maximum`."""
    return float(min(maximum, initial * 2 ** max(0, min(attempt - 1, 30))))
