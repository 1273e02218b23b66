"""The emulator's own clock: the true time plus `Faults.clock_offset_s`, as a server with a wrong clock has.

Everything the emulator reports (row timestamps, presigned expiries, the sync `created`, the HTTP `Date`
header) reads this clock; the Ledger keeps the true time, so tests compare like with like.
"""

from __future__ import annotations

import time
from email.utils import formatdate


class Clock:
    """`now()` is `time.time()` shifted by `offset_s` seconds."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset_s = offset_s

    def now(self) -> float:
        return time.time() + self.offset_s

    def http_date(self) -> str:
        """`now()` as an RFC 7231 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`."""
        return formatdate(self.now(), usegmt=True)
