"""What an emulator instance is told: accounts, timing, limits and faults. Plain values, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchgen.emulator.faults import Faults

DEFAULT_KEY = "emulator-key"


@dataclass(frozen=True, slots=True)
class Account:
    """The user behind an API key. `namespaces` are extra namespaces (orgs) the user may list."""

    username: str
    credits_usd: float = 1000.0
    namespaces: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """E8: a token bucket per key over every `/api/ai/...` request, plus an optional cap on active generations."""

    requests_per_s: float = 1.0  # refill rate of the bucket
    burst: int = 60  # bucket size: this many requests may arrive at once
    retry_after: bool = True  # send a Retry-After header (production's behaviour is unknown)
    max_active_per_user: int | None = None  # queued+processing rows per user before enqueue answers 429


def _default_keys() -> dict[str, Account]:
    return {DEFAULT_KEY: Account(username="emulator")}


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes one emulator run. Times are real seconds unless said to be model seconds.

    `keys` maps an API key to an `Account` (or a mapping with `username`, `credits_usd`, `namespaces`).
    Model run times come from the catalogue (documented minutes) multiplied by `time_scale`;
    `duration_s` replaces that with a fixed run time (0 = instant) and then also makes the queue delay 0
    unless `queue_delay_s` says otherwise, so a benchmark sees exactly `duration_s` from enqueue to terminal.
    """

    keys: Mapping[str, Account | Mapping[str, Any]] = field(default_factory=_default_keys)
    seed: int = 0
    time_scale: float = 0.01
    duration_s: float | None = None
    queue_delay_s: float | None = None
    max_num_generations: int = 4  # the docs say 4, SPEC 0.243.1 says 12
    # Enqueue answers 402 when the balance is below the request's estimated cost (False: only when it is <= 0).
    # Reservations are taken when a generation starts, so generations queued but not started are not counted:
    # enough of them can still be accepted and then fail at run time with "Insufficient credits", as the API's do.
    strict_credit_check: bool = True
    insufficient_credits_status: int = 402  # what the API answers; 400 | 403 to test other clients' guesses
    lenient_types: bool = True  # coerce `seconds: 8` to "8" (and "5" to 5) before validating
    keepalive_s: float = 15.0
    presign_ttl_s: float = 3600.0
    redirect_presigned: bool = False  # result_url answers 302 to its presigned form
    cancel_terminal_status: int = 200  # 400 mimics a third-party client's expectation
    rate_limit: RateLimit | None = None
    # Hold/release (see hold.py): every generation stays `processing` once started, until the test calls
    # RunningEmulator.release(). Lets a test act "mid-run" without racing the run time. A start-time failure
    # (bad params, no credits) is held too and reported on release; sse_early_rate generations are not held.
    hold: bool = False
    faults: Faults = field(default_factory=Faults)

    def accounts(self) -> dict[str, Account]:
        """The key -> Account table, with plain mappings turned into Accounts."""
        table: dict[str, Account] = {}
        for key, value in self.keys.items():
            if isinstance(value, Account):
                table[key] = value
            else:
                table[key] = Account(
                    username=str(value["username"]),
                    credits_usd=float(value.get("credits_usd", 1000.0)),
                    namespaces=tuple(value.get("namespaces", ())),
                )
        return table

    @property
    def api_key(self) -> str:
        """The first configured key: the one tests and the CLI use by default."""
        return next(iter(self.keys))
