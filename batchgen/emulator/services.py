"""Services: the parts of one emulator that every route needs, and the checks every route makes first."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from batchgen.emulator import replies
from batchgen.emulator.catalog import Catalog
from batchgen.emulator.clock import Clock
from batchgen.emulator.config import Account, EmulatorConfig
from batchgen.emulator.events import EventHub
from batchgen.emulator.faults import decide
from batchgen.emulator.ledger import Ledger
from batchgen.emulator.state import EmulatorState
from batchgen.emulator.worker import Worker


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key they used and its account."""

    key: str
    account: Account


class Services:
    """Everything one emulator instance holds."""

    def __init__(self, config: EmulatorConfig, ledger: Ledger | None = None, state: EmulatorState | None = None):
        self.config = config
        self.faults = config.faults
        self.seed = config.faults.seed if config.faults.seed is not None else config.seed
        self.accounts = config.accounts()
        self.catalog = Catalog()
        self.clock = Clock(config.faults.clock_offset_s)
        self.ledger = ledger or Ledger()
        self.state = state or EmulatorState(
            {a.username: a.credits_usd for a in self.accounts.values()},
            result_host=config.faults.result_host,
            clock=self.clock,
        )
        self.hub = EventHub(self.ledger)
        self.worker = Worker(config, self.catalog, self.state, self.ledger, self.hub, self.clock)
        limit = config.rate_limit
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's loop, set at startup
        self.bucket = None if limit is None else replies.TokenBucket(limit.requests_per_s, limit.burst)

    def fault(self, knob: str, stable_id: str) -> bool:
        """Whether the rate knob `knob` fires for this stable id."""
        rate = getattr(self.faults, knob)
        assert isinstance(rate, float | int)
        return decide(self.seed, knob, stable_id, float(rate))

    def authenticate(self, request: Request, *, optional: bool = False) -> Caller | Response | None:
        """The caller, or a 401 reply. With `optional`, no key at all is fine (None), a wrong key is not."""
        header = request.headers.get("authorization")
        if header is None and optional:
            return None
        scheme, _, key = (header or "").partition(" ")
        account = self.accounts.get(key.strip()) if scheme.lower() == "bearer" else None
        if account is None:
            return replies.unauthenticated()
        return Caller(key.strip(), account)

    def rate_check(self, caller: Caller) -> Response | None:
        """E8 token bucket: a 429 reply when this key is over its rate, else None."""
        if self.bucket is None or self.config.rate_limit is None:
            return None
        wait = self.bucket.take(caller.key)
        if wait is None:
            return None
        return replies.rate_limited(round(wait, 3) if self.config.rate_limit.retry_after else None)

    def may_read_namespace(self, caller: Caller, namespace: str) -> bool:
        """The user's own namespace and any org namespaces of the account."""
        return namespace == caller.account.username or namespace in caller.account.namespaces
