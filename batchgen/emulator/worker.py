"""E3: the life of a generation (queued -> processing -> succeeded | failed) and its completion event.

Each generation runs as a task in the server's task group; every random choice hashes the seed and the
generation id (see faults.py), so a generation's fate does not depend on what else is running.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.abc

from batchgen.emulator.catalog import Catalog
from batchgen.emulator.clock import Clock
from batchgen.emulator.config import EmulatorConfig
from batchgen.emulator.events import COMPLETED, NOISE, EventHub, frame
from batchgen.emulator.faults import decide, roll, uniform
from batchgen.emulator.hold import Hold
from batchgen.emulator.ledger import Ledger
from batchgen.emulator.state import EmulatorState, Generation, Status, event_payload, make_generation_id

INSUFFICIENT_CREDITS = "Insufficient credits"
FOREIGN_PROMPT = "made elsewhere (Workbench)"


class Worker:
    """Runs generations and announces them on the event hub."""

    def __init__(
        self,
        config: EmulatorConfig,
        catalog: Catalog,
        state: EmulatorState,
        ledger: Ledger,
        hub: EventHub,
        clock: Clock | None = None,
    ):
        self.config = config
        self.faults = config.faults
        self.seed = config.faults.seed if config.faults.seed is not None else config.seed
        self.catalog = catalog
        self.state = state
        self.ledger = ledger
        self.hub = hub
        self.clock = clock or Clock()
        self.hold = Hold(holding=config.hold, alive=self._processing, on_hold=self._record_hold)
        self.tasks: anyio.abc.TaskGroup | None = None  # set by the app's lifespan

    def _processing(self, generation_id: str) -> bool:
        row = self.state.get(generation_id)
        return row is not None and row.status == Status.PROCESSING

    def _record_hold(self, generation_id: str) -> None:
        self.ledger.record_fault("hold", generation_id)

    def spawn(self, generation_id: str) -> None:
        """Run the generation in the background."""
        assert self.tasks is not None, "the emulator app is not started"
        self.tasks.start_soon(self.run, generation_id)

    # -- timing

    def queue_delay(self, generation_id: str) -> float:
        """Real seconds from enqueue to processing: fixed when configured, else U(0.5, 3) model s × time_scale."""
        if self.config.queue_delay_s is not None:
            return self.config.queue_delay_s
        if self.config.duration_s is not None:
            return 0.0  # a fixed duration means "exactly this long from enqueue to terminal"
        return uniform(self.seed, "queue_delay", generation_id, 0.5, 3.0) * self.config.time_scale

    def run_time(self, row: Generation) -> float:
        """Real seconds from processing to terminal."""
        if self.config.duration_s is not None:
            seconds = self.config.duration_s
        else:
            low, high = self.catalog.runtime_range(row.model)
            seconds = uniform(self.seed, "run_time", row.generation_id, low, high) * self.config.time_scale
        if "__slow__" in str(row.params.get("prompt", "")):
            seconds *= 10
        return seconds

    # -- the life

    async def run(self, generation_id: str) -> None:
        """queued -> processing -> (held, when the test holds) -> terminal, then the event."""
        await anyio.sleep(self.queue_delay(generation_id))
        row, failure = self._pick_up(generation_id)
        if row is None:
            return  # cancelled while queued (or finished by another path): nothing to run, nothing to announce
        await self.hold.wait(generation_id)  # a test holding generations keeps this one processing
        if failure is not None:
            failed = self._fail_at_start(generation_id, failure)
            if failed is not None:
                await self.announce(failed)
            return
        if decide(self.seed, "stuck_rate", generation_id, self.faults.stuck_rate):
            return  # stays processing forever; the client has to give up on its own
        await anyio.sleep(self.run_time(row))
        done = self.finish(generation_id)
        if done is not None:
            await self.announce(done)

    def start(self, generation_id: str) -> Generation | None:
        """Move to processing and check what the model runner checks; a bad request fails right here."""
        row, failure = self._pick_up(generation_id)
        if row is not None and failure is not None:
            return self._fail_at_start(generation_id, failure)
        return row

    def _pick_up(self, generation_id: str) -> tuple[Generation | None, str | None]:
        """queued -> processing, and the failure the model runner would report at once (not applied yet).

        (None, None) when the row is gone or past processing; a row already processing is returned as is.
        """
        row = self.state.get(generation_id)
        if row is None or row.status != Status.QUEUED:
            return (row if row is not None and row.status == Status.PROCESSING else None), None
        params, error = self.catalog.validate(row.model, row.params, lenient_types=self.config.lenient_types)
        started = self.state.update(generation_id, status=Status.PROCESSING, started_at=self.clock.now())
        self.state.unpledge(generation_id)  # from here on the reservation (or the failure) decides
        if error:
            return started, error
        if not self.state.reserve(generation_id, self.catalog.cost(row.model, params)):
            return started, INSUFFICIENT_CREDITS
        return self.state.get(generation_id), None

    def _fail_at_start(self, generation_id: str, message: str) -> Generation | None:
        """Report a start-time failure, unless the row was cancelled meanwhile (while held)."""
        row = self.state.get(generation_id)
        if row is None or row.status != Status.PROCESSING:
            return None
        return self._terminal(generation_id, Status.FAILED, error_message=message)

    def finish(self, generation_id: str) -> Generation | None:
        """processing -> succeeded or failed (fault knobs, `__fail__` prompts); None if it was cancelled."""
        row = self.state.get(generation_id)
        if row is None or row.status != Status.PROCESSING:
            return None
        prompt = str(row.params.get("prompt", ""))
        if "__fail__" in prompt or decide(self.seed, "fail_rate", generation_id, self.faults.fail_rate):
            messages = self.faults.fail_messages or ("Generation failed",)
            message = messages[int(roll(self.seed, "fail_message", generation_id) * len(messages))]
            self.state.release(generation_id)
            return self._terminal(generation_id, Status.FAILED, error_message=message)
        return self._terminal(generation_id, Status.SUCCEEDED, result_url=self.state.result_url(row), cost=row.reserved)

    def finish_now(self, generation_id: str) -> Generation | None:
        """Run a generation to its end at once (sse_early_rate, and sync endpoints with instant duration)."""
        row = self.start(generation_id)
        if row is None or row.status.is_terminal:
            return row
        return self.finish(generation_id)

    def _terminal(self, generation_id: str, status: Status, **changes: Any) -> Generation:
        row = self.state.update(generation_id, status=status, completed_at=self.clock.now(), **changes)
        self.ledger.record_terminal(generation_id, time.time())  # the ledger keeps the true time
        return row

    # -- the event

    async def announce(self, row: Generation, *, allow_late: bool = True) -> None:
        """Broadcast the completion event of a terminal row, through the SSE fault knobs."""
        if row.source == "sync" or row.status == Status.CANCELLED:
            return  # sync generations and cancellations emit nothing (E6, E10)
        if allow_late and self.faults.sse_late_s > 0:
            await anyio.sleep(self.faults.sse_late_s)
        gid = row.generation_id
        if decide(self.seed, "sse_noise_rate", gid, self.faults.sse_noise_rate):
            self.hub.publish(row.username, frame(NOISE, {}), NOISE, None)
        if decide(self.seed, "sse_garbage_rate", gid, self.faults.sse_garbage_rate):
            self.hub.publish(row.username, self._garbage(gid), "garbage", None)
        if decide(self.seed, "sse_foreign_rate", gid, self.faults.sse_foreign_rate):
            self._announce_foreign(row)
        if decide(self.seed, "sse_drop_rate", gid, self.faults.sse_drop_rate):
            self.ledger.record_dropped(gid)
            return
        data = self._completed_frame(row)
        self.hub.publish(row.username, data, COMPLETED, gid)
        if decide(self.seed, "sse_duplicate_rate", gid, self.faults.sse_duplicate_rate):
            self.hub.publish(row.username, data, COMPLETED, gid)

    def _completed_frame(self, row: Generation) -> bytes:
        url = None
        if row.status == Status.SUCCEEDED:
            url = self.state.presigned_url(row.generation_id, self.config.presign_ttl_s)
        return frame(COMPLETED, event_payload(row, url))

    def _announce_foreign(self, row: Generation) -> None:
        """A generation of the same user made by another client (the Workbench): real row, real event."""
        foreign_id = make_generation_id(self.seed, f"foreign:{row.generation_id}", 0, 0)
        now = self.clock.now()
        foreign = Generation(
            generation_id=foreign_id,
            username=row.username,
            model=row.model,
            media_type=row.media_type,
            params={"prompt": FOREIGN_PROMPT},
            enqueued_at=now,
            source="elsewhere",
            status=Status.SUCCEEDED,
            started_at=now,
            completed_at=now,
        )
        foreign.result_url = self.state.result_url(foreign)
        self.state.add(foreign)
        self.ledger.record_terminal(foreign_id, time.time())
        self.hub.publish(row.username, self._completed_frame(foreign), COMPLETED, foreign_id)

    def _garbage(self, generation_id: str) -> bytes:
        """A truncated, an oversized, or a meaningless SSE line (chosen by the id)."""
        kind = int(roll(self.seed, "sse_garbage_kind", generation_id) * 3)
        if kind == 0:
            return f'event: {COMPLETED}\ndata: {{"generation_id":"{generation_id[:8]}","sta\n\n'.encode()
        if kind == 1:
            return b"data: " + b"x" * (256 * 1024) + b"\n\n"
        return b"%%% not an sse line {{{\n\n"
