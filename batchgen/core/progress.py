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
    stream_connected: bool

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED))

    def line(self) -> str:
        """One plain line for logs and non-TTY output."""
        parts = [
            f"{s.value}={n}" for s, n in sorted(self.counts.items(), key=lambda kv: list(JobStatus).index(kv[0])) if n
        ]
        eta = f"{self.eta_s:.0f}s" if self.eta_s is not None else "?"
        return (
            f"[{self.run}] {self.finished}/{self.total} done ({' '.join(parts)}) "
            f"{self.finished_per_min:.1f}/min eta {eta} cost ${self.cost_so_far:.2f} of ~${self.estimated_total:.2f} "
            f"limit {self.concurrency}{'' if self.stream_connected else ' (polling)'}"
        )


def safe_file_stem(run: str, key: str, prompt: str, limit: int = 40) -> str:
    """A file name stem made only of [a-z0-9-], so no prompt can escape the output directory or hide a path."""
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in prompt.lower())
    slug = "-".join(part for part in slug.split("-") if part)[:limit].strip("-")
    return f"{key}-{slug}" if slug else key
