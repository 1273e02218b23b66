"""Whether the event stream can be trusted right now, and when to poll when it cannot. Pure: every method takes
the time (a monotonic clock, in seconds) from its caller.

A stream can be connected and deliver nothing: a proxy that buffers or compresses `text/event-stream` holds every
byte, keep-alives included, until its buffer fills or the stream ends. Waiting on such a stream is waiting
forever, so the stream is trusted only once it has delivered, and only while it keeps delivering:

    connecting --connect--> unproven --any byte--> live
    unproven/live --silent past the keep-alive period, or a poll found a completion the stream never told,
                   or its events arrive late--> buffered (polls; the stream is probed again later)
    buffered --FRESH_TO_RETURN timely events in a row--> live
    any --disconnect--> connecting (polls while it reconnects)

Poll-only runs are `polling` throughout. While the stream is not live, each job is polled on a schedule learned
from how long this run's jobs take (`PollSchedule`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

KEEPALIVE_PERIOD_S = 15.0  # the API sends `: keep-alive` this often on an idle stream
QUIET_FACTOR = 1.5  # silence past this many keep-alive periods means the stream is not delivering
LATE_EVENT_S = 10.0  # an event this long after its generation finished came through a buffer
FRESH_EVENT_S = 3.0  # an event within this of its generation's end came live
FRESH_TO_RETURN = 3
FIRST_PROBE_S = 60.0  # reconnect a buffered stream after this long, to see whether it delivers now
LAST_PROBE_S = 600.0


class StreamMode(StrEnum):
    CONNECTING = "connecting"
    UNPROVEN = "unproven"
    LIVE = "live"
    BUFFERED = "buffered"
    POLLING = "polling"

    @property
    def trusted(self) -> bool:
        """Completions can be left to the stream (the safety-net poll aside)."""
        return self is StreamMode.LIVE


@dataclass
class StreamHealth:
    """The stream's mode, from what it delivered and when; the listener and the tracker report to it."""

    poll_only: bool = False
    keepalive_period_s: float = KEEPALIVE_PERIOD_S
    mode: StreamMode = StreamMode.CONNECTING
    last_byte_at: float | None = None
    connected_at: float | None = None
    fresh_in_a_row: int = 0
    probe_after_s: float = FIRST_PROBE_S
    probe_at: float | None = None
    reasons: list[str] = field(default_factory=list)  # why it left `live`, newest last (bounded)

    def __post_init__(self) -> None:
        if self.poll_only:
            self.mode = StreamMode.POLLING

    @property
    def quiet_limit_s(self) -> float:
        return self.keepalive_period_s * QUIET_FACTOR

    # ---- what the listener reports --------------------------------------------------------------------------

    def connected(self, now: float) -> None:
        if self.poll_only:
            return
        self.connected_at, self.last_byte_at = now, None
        self.mode = StreamMode.UNPROVEN  # a new connection (a probe included) is trusted once it delivers

    def disconnected(self, now: float) -> None:
        if self.poll_only:
            return
        self.connected_at = None
        if self.mode is not StreamMode.BUFFERED:  # keep the verdict (and its probe) until a probe connects
            self.mode = StreamMode.CONNECTING

    def received(self, now: float) -> None:
        """Any bytes, a keep-alive comment included."""
        if self.poll_only:
            return
        self.last_byte_at = now
        if self.mode is StreamMode.UNPROVEN:
            self.mode = StreamMode.LIVE

    def event(self, now: float, age_s: float | None, news: bool) -> None:
        """A completion event arrived `age_s` after its generation finished (None: unknown); `news`: it told us
        something no poll had told us yet."""
        self.received(now)
        late = age_s is not None and age_s > LATE_EVENT_S
        if self.mode is StreamMode.LIVE and late:
            self._buffered(now, f"events arrive {age_s:.0f} s after their generation finished")
        elif self.mode is StreamMode.BUFFERED:
            fresh = news and (age_s is None or age_s <= FRESH_EVENT_S)
            self.fresh_in_a_row = self.fresh_in_a_row + 1 if fresh else 0
            if self.fresh_in_a_row >= FRESH_TO_RETURN:
                self.mode, self.fresh_in_a_row, self.probe_after_s, self.probe_at = (
                    StreamMode.LIVE, 0, FIRST_PROBE_S, None
                )  # fmt: skip

    # ---- what the tracker reports ---------------------------------------------------------------------------

    def missed(self, now: float, age_s: float | None) -> None:
        """A poll found a generation that finished `age_s` ago (None: unknown) with no completion event.

        It counts only when the generation finished while this connection was open and its event had time to
        come: one that finished while the stream was down is lost by design (no replay), not held back."""
        if self.mode not in (StreamMode.LIVE, StreamMode.UNPROVEN) or self.connected_at is None:
            return
        if age_s is None or age_s <= FRESH_EVENT_S or now - self.connected_at <= age_s + FRESH_EVENT_S:
            return
        self._buffered(now, f"a poll found a generation finished {age_s:.0f} s ago that the stream never announced")

    def check(self, now: float) -> None:
        """Call regularly: a connected stream silent past the keep-alive period is not delivering."""
        if self.mode not in (StreamMode.LIVE, StreamMode.UNPROVEN) or self.connected_at is None:
            return
        heard = self.last_byte_at if self.last_byte_at is not None else self.connected_at
        if now - heard > self.quiet_limit_s:
            self._buffered(now, f"the stream delivered nothing for {now - heard:.0f} s")

    def paused(self, now: float, seconds: float) -> None:
        """The process was paused for `seconds` (the runner reconnects at once)."""
        self.reasons = [*self.reasons[-9:], f"the runner was paused for {seconds:.0f} s"]

    def probe_due(self, now: float) -> bool:
        """Whether to reconnect a buffered stream now (each probe waits twice as long as the last)."""
        if self.mode is not StreamMode.BUFFERED or self.probe_at is None or now < self.probe_at:
            return False
        self.probe_after_s = min(LAST_PROBE_S, self.probe_after_s * 2)
        self.probe_at = now + self.probe_after_s
        return True

    @property
    def polls_needed(self) -> bool:
        return not self.mode.trusted

    def _buffered(self, now: float, reason: str) -> None:
        self.mode, self.fresh_in_a_row = StreamMode.BUFFERED, 0
        self.probe_at = now + self.probe_after_s
        self.reasons = [*self.reasons[-9:], reason]


PRIORS_S = {"image": 5.0, "video": 30.0}  # before any job finished: the API docs' polling cadence, a poller's
MIN_STEP_S, MAX_STEP_S = 1.0, 30.0
WINDOW = 50


@dataclass
class PollSchedule:
    """When to ask about a job while the stream cannot be trusted: first when nearly every job like it is done (the
    longest of this run's recent durations, at most twice their median), then every quarter of that, within
    [min_step_s, MAX_STEP_S]. Before any job finished it polls as a plain poller would, every `first_after_s` or
    the API docs' cadence for the media type (5 s for images, 30 s for videos). One poll per job is the usual
    cost: no more than a fixed-interval poller pays, and sooner."""

    first_after_s: float | None = None
    min_step_s: float = MIN_STEP_S
    durations: dict[str, deque[float]] = field(default_factory=dict)

    def finished(self, media_type: str, duration_s: float) -> None:
        if duration_s >= 0:
            self.durations.setdefault(media_type, deque(maxlen=WINDOW)).append(duration_s)

    def typical_s(self, media_type: str) -> float:
        seen = sorted(self.durations.get(media_type, ()))
        if not seen:
            if self.first_after_s is not None:
                return self.first_after_s
            return PRIORS_S.get(media_type, PRIORS_S["video"])
        # by the time the slowest recent job took, nearly every job is done: one read each, as a poller pays. A
        # long tail is cut at twice the median, so one outlier does not hold every job's slot for its duration
        return min(seen[-1], 2 * seen[len(seen) // 2])

    def step_s(self, media_type: str) -> float:
        if not self.durations.get(media_type):
            return max(self.min_step_s, self.typical_s(media_type))  # nothing learned yet: a poller's cadence
        return min(MAX_STEP_S, max(self.min_step_s, self.typical_s(media_type) / 4))

    def next_poll_at(self, media_type: str, sent_at: float, polled_at: float | None) -> float:
        """When a job sent at `sent_at` (last polled at `polled_at`, if ever) should be polled next."""
        if polled_at is None:
            return sent_at + max(self.min_step_s, self.typical_s(media_type))
        return polled_at + self.step_s(media_type)
