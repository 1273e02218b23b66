"""Proof that a fault fired: for every knob of `Faults`, how often the emulator's ledger shows it acting.

A fault test that never met its fault proves nothing, and a rate below 1 can miss: so every test that turns a knob
on asserts `assert_fired(emu, ...)`. Many knobs leave a trace of their own in the ledger: a FaultRecord
(`ledger.fired`), an unanswered enqueue, a dropped, doubled, late or extra event, an enqueue or download answered
429/5xx/cut short, a failed or foreign row. The others leave none (a cut-off JSON body, a poll answered "running",
a wrong Content-Type, an early event, a row left processing), or only in the request log, which is written after
the reply has gone (a reader right after a reply may not see it yet). For those this module recomputes the
emulator's own decision, `batchgen.emulator.faults.decide` (a pure function of the seed, the knob and a stable id),
for each request the ledger counted before answering it, with the stable ids faults.py documents: the canonical
body and its attempt number for an enqueue, the generation id and the attempt for a poll or a download, the
number of the call for a list. tests/emulator checks each count against what a client saw on the wire.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable

from batchgen.emulator import Faults, RunningEmulator, Status
from batchgen.emulator.faults import decide

NOT_FAULTS = {  # settings of other knobs, not faults of their own
    "seed",
    "retry_after",
    "fail_messages",
    "sse_buffer_bytes",
    "download_cut_at",
}
COMPLETED = "media_generation_completed"
_STATUS_PATH = re.compile(r"^/api/ai/queue/([^/]+)$")


def knobs_on(faults: Faults) -> list[str]:
    """The knobs of `faults` set away from their default (off)."""
    default = Faults()
    return [
        f.name
        for f in dataclasses.fields(faults)
        if f.name not in NOT_FAULTS and getattr(faults, f.name) != getattr(default, f.name)
    ]


def assert_fired(emu: RunningEmulator, *knobs: str) -> dict[str, int]:
    """Fail unless every one of `knobs` (default: every knob turned on in `emu`) acted at least once; returns
    how often each acted."""
    wanted = knobs or tuple(knobs_on(emu.config.faults))
    assert wanted, "no fault knob is on: nothing to prove"
    reader = _Reader(emu)
    seen = {knob: EVIDENCE[knob](reader) for knob in wanted}
    assert all(seen.values()), f"these faults never fired, so the test proves nothing about them: {seen}"
    return seen


def fired(emu: RunningEmulator, knob: str) -> int:
    """How many times `knob` acted, by the emulator's ledger (0 when it is off)."""
    return EVIDENCE[knob](_Reader(emu))


class _Reader:
    """One consistent copy of what the emulator recorded, and its decisions."""

    def __init__(self, emu: RunningEmulator) -> None:
        self.faults = emu.config.faults
        self.seed = emu.services.seed
        ledger = emu.ledger
        self.rows = emu.state.all()
        sync = {row.generation_id for row in self.rows if row.source == "sync"}
        # the synchronous endpoints record their requests as enqueues too, but no enqueue knob acts on them
        self.enqueues = [e for e in ledger.enqueues if not sync.intersection(e.generation_ids)]
        self.requests = ledger.requests
        self.events = ledger.events
        self.downloads = ledger.downloads
        self.polls = ledger.polls
        self.list_calls = len(ledger.list_calls)
        self.terminal_times = ledger.terminal_times
        self.streams = ledger.stream_connections
        self.dropped = ledger.dropped_events
        self.records = ledger.faults
        self.created = set(ledger.created_ids)

    def decide(self, knob: str, stable_id: str) -> bool:
        rate = getattr(self.faults, knob)
        return decide(self.seed, knob, stable_id, float(rate))

    def fault_records(self, knob: str) -> int:
        return sum(1 for f in self.records if f.knob == knob)

    # -- per site

    def enqueue_ids(self) -> list[tuple[str, int, bool, bool]]:
        """(stable id, status, created rows, replied) of every enqueue."""
        return [(f"{e.canonical_body}#{e.attempt}", e.status, bool(e.generation_ids), e.replied) for e in self.enqueues]

    def polls_answered_by(self) -> list[tuple[str, str]]:
        """(stable id, what answered it) of every status poll of an existing row: "status_429_rate",
        "status_5xx_rate" or "html_error_rate" when a transient fault did, else "row". The emulator counts a poll
        before it answers, so this is complete as soon as the client has its reply (the request log is not)."""
        known = {row.generation_id for row in self.rows}
        found = []
        for gid, count in self.polls.items():
            for attempt in range(count if gid in known else 0):
                stable = f"{gid}#{attempt}"
                if self.decide("status_429_rate", stable):
                    found.append((stable, "status_429_rate"))
                elif self.decide("status_5xx_rate", stable):
                    found.append((stable, "status_5xx_rate"))
                elif self.decide("html_error_rate", f"status:{stable}"):
                    found.append((stable, "html_error_rate"))
                else:
                    found.append((stable, "row"))
        return found

    def answered_polls(self) -> list[str]:
        """Stable ids of the polls the row answered (none in legacy mode, where a finished row answers 404 before
        the bad-answer knobs are asked, and the ledger does not say when a row finished relative to a poll)."""
        if self.faults.legacy_mode:
            return []
        return [stable for stable, by in self.polls_answered_by() if by == "row"]

    def lists_answered_by(self) -> list[tuple[str, str]]:
        """(stable id, "html_error_rate" or "row") of every list call (GET /api/ai/queue). A call refused before
        the knobs are asked (403 for another namespace, 400 for an unknown status) counts too: keep those out of tests
        that turn on html_error_rate or malformed_json_rate."""
        calls = (f"list#{n}" for n in range(1, self.list_calls + 1))
        return [(s, "html_error_rate" if self.decide("html_error_rate", s) else "row") for s in calls]

    def download_ids(self) -> list[tuple[str, int]]:
        """(stable id, status) of every download; the attempt is its number among its generation's downloads."""
        attempts: Counter[str] = Counter()
        found = []
        for d in self.downloads:
            found.append((f"{d.generation_id}#{attempts[d.generation_id]}", d.status))
            attempts[d.generation_id] += 1
        return found

    def completions(self) -> list[tuple[int, str, float]]:
        """(stream, generation id, time written) of every completion event."""
        return [(e.stream, e.generation_id, e.time) for e in self.events if e.event == COMPLETED and e.generation_id]


def _enqueue_5xx(r: _Reader) -> int:
    return sum(1 for s, status, _, _ in r.enqueue_ids() if status >= 500 and r.decide("enqueue_5xx_rate", s))


def _html(r: _Reader) -> int:
    enqueues = sum(
        1 for s, status, _, _ in r.enqueue_ids() if status == 502 and not r.decide("enqueue_5xx_rate", s)
    )  # the other 502s of an enqueue are the 5xx knob's
    polls = sum(1 for _, by in r.polls_answered_by() if by == "html_error_rate")
    lists = sum(1 for _, by in r.lists_answered_by() if by == "html_error_rate")
    return enqueues + polls + lists


def _malformed(r: _Reader) -> int:
    enqueues = sum(
        1
        for s, status, created, replied in r.enqueue_ids()
        if created and replied and status == 200 and r.decide("malformed_json_rate", f"enqueue:{s}")
    )
    polls = sum(1 for s in r.answered_polls() if r.decide("malformed_json_rate", f"status:{s}"))
    lists = sum(1 for s, by in r.lists_answered_by() if by == "row" and r.decide("malformed_json_rate", s))
    return enqueues + polls + lists


def _wrong_content_type(r: _Reader) -> int:
    polls = sum(
        1
        for s in r.answered_polls()
        if not r.decide("malformed_json_rate", f"status:{s}") and r.decide("wrong_content_type_rate", f"status:{s}")
    )
    downloads = sum(
        1
        for s, status in r.download_ids()
        if status in (200, 206) and r.decide("wrong_content_type_rate", f"download:{s}")
    )
    return polls + downloads


def _late(r: _Reader) -> int:
    late = r.faults.sse_late_s
    if late <= 0:
        return 0
    return sum(1 for _, gid, at in r.completions() if gid in r.terminal_times and at - r.terminal_times[gid] >= late)


def _cut_after_events(r: _Reader) -> int:
    limit = r.faults.sse_disconnect_after_events
    if limit is None:
        return 0
    per_stream = Counter(e.stream for e in r.events)
    return sum(1 for n in per_stream.values() if n >= limit)


def _cut_after_seconds(r: _Reader) -> int:
    # the ledger does not record a stream's end: count the reconnections the other knob does not explain, which
    # holds for one client (in a test with several runners each one's first stream counts too)
    if r.faults.sse_disconnect_after_s is None:
        return 0
    return max(0, r.streams - 1 - _cut_after_events(r))


def _stuck(r: _Reader) -> int:
    return sum(
        1
        for row in r.rows
        if row.started_at is not None
        and row.status in (Status.PROCESSING, Status.CANCELLED)
        and r.decide("stuck_rate", row.generation_id)
    )


def _legacy(r: _Reader) -> int:
    # a finished row's 404 is only in the request log (written just after the reply) and the knob's FaultRecords
    if not r.faults.legacy_mode:
        return 0
    gone = sum(
        1
        for q in r.requests
        if q.method == "GET" and q.status == 404 and (m := _STATUS_PATH.match(q.path)) and m.group(1) in r.created
    )
    return gone + r.fault_records("finished_missing_from_list")


EVIDENCE: dict[str, Callable[[_Reader], int]] = {
    # the event stream
    "sse_drop_rate": lambda r: len(r.dropped),
    "sse_duplicate_rate": lambda r: sum(1 for n in Counter((s, g) for s, g, _ in r.completions()).values() if n > 1),
    "sse_late_s": _late,
    "sse_early_rate": lambda r: sum(
        1 for s, _, created, replied in r.enqueue_ids() if created and replied and r.decide("sse_early_rate", s)
    ),
    "sse_disconnect_after_events": _cut_after_events,
    "sse_disconnect_after_s": _cut_after_seconds,
    "sse_foreign_rate": lambda r: sum(1 for row in r.rows if row.source == "elsewhere"),
    "sse_noise_rate": lambda r: sum(1 for e in r.events if e.event == "deployment_status_changed"),
    "sse_garbage_rate": lambda r: sum(1 for e in r.events if e.event == "garbage"),
    "sse_buffering": lambda r: r.fault_records("sse_buffering"),
    "sse_gzip": lambda r: r.fault_records("sse_gzip"),
    # transient HTTP failures
    "enqueue_5xx_rate": _enqueue_5xx,
    "enqueue_429_rate": lambda r: sum(1 for _, status, _, _ in r.enqueue_ids() if status == 429),
    "status_5xx_rate": lambda r: sum(1 for _, by in r.polls_answered_by() if by == "status_5xx_rate"),
    "status_429_rate": lambda r: sum(1 for _, by in r.polls_answered_by() if by == "status_429_rate"),
    "download_5xx_rate": lambda r: sum(1 for _, status in r.download_ids() if status == 503),
    "download_429_rate": lambda r: sum(1 for _, status in r.download_ids() if status == 429),
    "lost_reply_rate": lambda r: sum(1 for e in r.enqueues if not e.replied),
    # generations
    "stuck_rate": _stuck,
    "fail_rate": lambda r: sum(
        1
        for row in r.rows
        if row.status == Status.FAILED
        and row.error_message in r.faults.fail_messages
        and r.decide("fail_rate", row.generation_id)  # not a `__fail__` prompt, which fails the same way
    ),
    "legacy_mode": _legacy,
    "finished_missing_from_list": lambda r: r.fault_records("finished_missing_from_list"),
    # bad answers
    "malformed_json_rate": _malformed,
    "html_error_rate": _html,
    "unknown_status_rate": lambda r: sum(1 for s in r.answered_polls() if r.decide("unknown_status_rate", s)),
    "wrong_content_type_rate": _wrong_content_type,
    "truncated_download_rate": lambda r: sum(
        1 for s, status in r.download_ids() if status == 0 and r.decide("truncated_download_rate", s)
    ),  # the other cut downloads are download_cut_rate's
    "result_host": lambda r: sum(1 for d in r.downloads if d.host.split(":")[0] == r.faults.result_host),
    # result files on a real network
    "result_size_bytes": lambda r: r.fault_records("result_size_bytes"),
    "download_bandwidth_bps": lambda r: r.fault_records("download_bandwidth_bps"),
    "cancel_5xx_rate": lambda r: r.fault_records("cancel_5xx_rate"),
    "download_cut_rate": lambda r: r.fault_records("download_cut_rate"),
    "download_ignores_range": lambda r: r.fault_records("download_ignores_range"),
    # the server's clock and speed
    "clock_offset_s": lambda r: r.fault_records("clock_offset_s"),
    "latency_s": lambda r: r.fault_records("latency_s"),
}
