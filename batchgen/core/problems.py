"""Collecting problems: every one is kept, but a message repeated across thousands of jobs is shown a few times."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from batchgen.errors import Problem

SHOWN_PER_GROUP = 3


class ProblemList:
    """Problems in the order found; each `group` (by default the message) is shown at most SHOWN_PER_GROUP times."""

    def __init__(self, shown_per_group: int = SHOWN_PER_GROUP) -> None:
        self._shown_per_group = shown_per_group
        self._problems: list[Problem] = []
        self._counts: dict[str, int] = {}
        self._examples: dict[str, str] = {}

    def add(self, where: str, message: str, hint: str = "", *, group: str | None = None) -> None:
        """Record one problem; beyond the cap for its group it is only counted."""
        group = message if group is None else group
        count = self._counts.get(group, 0) + 1
        self._counts[group] = count
        if count <= self._shown_per_group:
            self._problems.append(Problem(where, message, hint))
            self._examples.setdefault(group, message)

    def extend(self, problems: Iterable[Problem]) -> None:
        """Record problems found elsewhere (each in its own group)."""
        for problem in problems:
            self.add(problem.where, problem.message, problem.hint, group=str(problem))

    def __len__(self) -> int:
        return sum(self._counts.values())

    def __bool__(self) -> bool:
        return bool(self._counts)

    def as_list(self) -> list[Problem]:
        """The problems to show, with one summary line per group that was capped."""
        result = list(self._problems)
        for group, count in self._counts.items():
            hidden = count - self._shown_per_group
            if hidden > 0:
                example = self._examples[group]
                result.append(Problem("", f"... and {hidden} more like: {example}"))
        return result


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint naming the closest choice, or "" when nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else ""
