"""A built-in emulator of Oxen.ai's async media API (docs: docs/oxen-api.md, contract E1-E12).

    from batchgen.emulator import EmulatorConfig, Faults, running_emulator

    with running_emulator(EmulatorConfig(seed=1, time_scale=0.001, faults=Faults(sse_drop_rate=0.2))) as emu:
        ...  # emu.base_url, emu.api_key, emu.ledger, emu.state

    with running_emulator(EmulatorConfig(hold=True)) as emu:  # generations stay processing...
        ...
        emu.release()  # ...until the test lets them finish (emu.held, emu.release(n), emu.hold(): see hold.py)

It must never import batchgen.engine: the engine is tested against it, not built on it.
"""

from __future__ import annotations

from batchgen.emulator.config import DEFAULT_KEY, Account, EmulatorConfig, RateLimit
from batchgen.emulator.faults import Faults
from batchgen.emulator.ledger import DownloadRecord, EnqueueRecord, EventRecord, FaultRecord, Ledger, RequestRecord
from batchgen.emulator.server import RunningEmulator, running_emulator, serve
from batchgen.emulator.state import EmulatorState, Generation, Status

__all__ = [
    "DEFAULT_KEY",
    "Account",
    "DownloadRecord",
    "EmulatorConfig",
    "EmulatorState",
    "EnqueueRecord",
    "EventRecord",
    "FaultRecord",
    "Faults",
    "Generation",
    "Ledger",
    "RateLimit",
    "RequestRecord",
    "RunningEmulator",
    "Status",
    "running_emulator",
    "serve",
]
