"""The one error base of batchgen, and its small tree.

    BatchgenError                 anything a user can cause or fix; never shown with a traceback
    ├── ManifestError             the manifest is unreadable or invalid (carries every Problem) -> exit 2
    ├── BudgetError               the estimate exceeds the budget / --max-cost -> exit 2
    │   └── BudgetExceededError   an intent would take spent + reserved past the run's budget: stop submitting
    ├── StateError                the state database is missing, busy, read-only, or has no such run
    │   ├── RunLockedError        another runner holds this run
    │   └── LeaseLostError        this runner's lease was taken over (it was paused past it): send nothing -> exit 4
    ├── OutputError               the output directory is unwritable or the disk is full
    └── ApiError                  the API answered something we cannot use
        ├── ApiUnreachableError   no connection / DNS / TLS: nothing was answered -> exit 3
        ├── AuthError             401: the key is missing or refused -> exit 3
        ├── RateLimitedError      429 (retry_after seconds when the server said so)
        ├── ServerError           5xx, malformed bodies: transient, retried
        │   └── EnqueueUnknownError   an enqueue whose reply was lost: it may have created generations
        ├── InsufficientCreditsError  the account is out of money: stop submitting
        └── RequestRejectedError  other 4xx: permanent for this request, never retried

Any other exception is a bug, and the CLI shows its traceback only with -v.
"""

from __future__ import annotations

from dataclasses import dataclass


class BatchgenError(Exception):
    """Base of every error a user can cause or fix."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One located complaint about the input: `where` is `file:line` (or `file` or a job key)."""

    where: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} ({self.hint})" if self.hint else text


class ManifestError(BatchgenError):
    """The manifest cannot be used; `problems` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class BudgetError(BatchgenError):
    """The estimated cost of the run exceeds the budget."""


class BudgetExceededError(BudgetError):
    """Committing this intent would take the run's spent + reserved money past its budget."""

    def __init__(self, *, spent: float, reserved: float, budget: float, needed: float) -> None:
        self.spent, self.reserved, self.budget, self.needed = spent, reserved, budget, needed
        left = max(0.0, budget - spent - reserved)
        super().__init__(
            f"the budget of ${budget:.2f} would be exceeded: ${spent:.2f} spent, ${reserved:.2f} reserved "
            f"for generations in flight, ${left:.2f} left, the next enqueue needs ${needed:.2f}"
        )


class StateError(BatchgenError):
    """The state database cannot be used as asked."""


class RunLockedError(StateError):
    """Another live runner holds the run."""


class LeaseLostError(StateError):
    """Another runner took this run over (this one was paused or cut off past its lease): it must send nothing."""


class OutputError(BatchgenError):
    """Results cannot be written where asked."""


class ApiError(BatchgenError):
    """The API answered something we cannot use."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ApiUnreachableError(ApiError):
    """No answer at all: connection refused, DNS, TLS, or timeouts."""


class AuthError(ApiError):
    """The API refused the key (401)."""


class RateLimitedError(ApiError):
    """429: slow down; `retry_after` is the server's hint in seconds, when it gave one."""

    def __init__(self, message: str, *, status: int | None = 429, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ServerError(ApiError):
    """A transient failure on the server's side (5xx, malformed or truncated replies)."""


class EnqueueUnknownError(ServerError):
    """The enqueue request may have reached the server, but no usable reply came back: reconcile, never resend."""


class InsufficientCreditsError(ApiError):
    """The account has no credits left: submitting more is pointless."""


class RequestRejectedError(ApiError):
    """A permanent 4xx for this request: retrying the same request cannot help."""
