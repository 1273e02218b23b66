"""What a run looks like at a moment: counts, throughput, ETA and money, as a value the CLI renders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from batchgen.core.jobs import JobStatus


@dataclass(frozen=True, slots=True)
class Progress:
    run: str
    counts: Mapping[JobStatus, int]
    total: int
    elapsed_s: float
    finished_per_min: float
    eta_s: float | None
    cost_so_far: float
    estimated_total: float
    concurrency: int
    stream: str  # live, unproven, buffered, connecting, polling (core/stream_health.py)
    bytes_downloaded: int = 0
    budget: float | None = None  # the run's, in USD

    @classmethod
    def measure(
        cls,
        *,
        run: str,
        counts: Mapping[JobStatus, int],
        elapsed_s: float,
        finish_times: list[float],
        cost_so_far: float,
        estimated_total: float,
        concurrency: int,
        stream: str,
        bytes_downloaded: int = 0,
        budget: float | None = None,
    ) -> Progress:
        """A snapshot with throughput and ETA computed from the monotonic times of recent finishes."""
        window = finish_times
        span = window[-1] - window[0] if len(window) > 1 else 0.0
        rate = (len(window) - 1) / span * 60 if span > 0 else 0.0
        unfinished = sum(
            n for status, n in counts.items() if not status.is_terminal and status is not JobStatus.UNKNOWN
        )
        return cls(
            run=run,
            counts=counts,
            total=sum(counts.values()),
            elapsed_s=elapsed_s,
            finished_per_min=rate,
            eta_s=unfinished / rate * 60 if rate > 0 else None,
            cost_so_far=cost_so_far,
            estimated_total=estimated_total,
            concurrency=concurrency,
            stream=stream,
            bytes_downloaded=bytes_downloaded,
            budget=budget,
        )

    @property
    def fraction(self) -> float:
        """Finished jobs over all jobs (1.0 for an empty run)."""
        return self.finished / self.total if self.total else 1.0

    @property
    def stream_words(self) -> str:
        """The stream's state as a user reads it."""
        return STREAM_WORDS.get(self.stream, self.stream)

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED))

    def line(self) -> str:
        """One plain line for logs and non-TTY output."""
        parts = [
            f"{s.value}={n}" for s, n in sorted(self.counts.items(), key=lambda kv: list(JobStatus).index(kv[0])) if n
        ]
        eta = f"{self.eta_s:.0f}s" if self.eta_s is not None else "?"
        received = f" {human_bytes(self.bytes_downloaded)} downloaded" if self.bytes_downloaded >= 1 << 20 else ""
        return (
            f"[{self.run}] {self.finished}/{self.total} done ({' '.join(parts)}) "
            f"{self.finished_per_min:.1f}/min eta {eta} cost ${self.cost_so_far:.2f} of ~${self.estimated_total:.2f} "
            f"limit {self.concurrency}{_stream_note(self.stream)}{received}"
        )


STREAM_WORDS = {
    "live": "stream live",
    "unproven": "stream connected, nothing yet: polling",
    "connecting": "stream reconnecting: polling",
    "buffered": "stream buffered: polling",
    "polling": "polling (no stream)",
}


def _stream_note(stream: str) -> str:
    if stream == "live":
        return ""
    return " (polling)" if stream == "polling" else f" (stream {stream}: polling)"


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _slug(text: str, limit: int) -> str:
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in slug.split("-") if part)[:limit].strip("-")


def safe_file_stem(run: str, key: str, prompt: str, limit: int = 40) -> str:
    """A file name stem made only of [a-z0-9-], so no prompt can escape the output directory or hide a path.
    It starts with the run's name: two runs sharing an output directory never write the same file."""
    run_slug = _slug(run, 24) or "run"
    slug = _slug(prompt, limit)
    return f"{run_slug}-{key}-{slug}" if slug else f"{run_slug}-{key}"
