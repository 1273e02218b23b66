"""How a run's progress looks on stderr: on a terminal, a live bar (rich) with the counts per state, the rate,
the ETA, money spent of the estimate and of the budget, and the stream's state; off a terminal, one plain line
every 10 s (logs, CI, pipes)."""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batchgen.cli.app import stderr
from batchgen.core.jobs import JobStatus
from batchgen.core.progress import Progress

STATE_STYLES = {
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "red",
    JobStatus.UNKNOWN: "yellow",
    JobStatus.PROCESSING: "cyan",
    JobStatus.QUEUED: "cyan",
    JobStatus.SUBMITTING: "cyan",
    JobStatus.DOWNLOADING: "blue",
    JobStatus.PENDING: "dim",
}
PLAIN_EVERY_S = 10.0


def render(progress: Progress) -> RenderableType:
    """The bar and its two lines of detail, from a Progress snapshot."""
    top = Table.grid(padding=(0, 1))
    top.add_column(no_wrap=True)
    top.add_column(ratio=1)
    top.add_column(no_wrap=True)
    eta = f"eta {progress.eta_s:.0f}s" if progress.eta_s is not None else "eta ?"
    top.add_row(
        Text(progress.run, style="bold"),
        ProgressBar(total=max(progress.total, 1), completed=progress.finished),
        Text(
            f"{progress.finished}/{progress.total} {progress.fraction:4.0%}  {progress.finished_per_min:.1f}/min  {eta}"
        ),
    )
    counts = Text()
    for status in JobStatus:
        n = progress.counts.get(status, 0)
        if n:
            counts.append(f"{status.value} {n}", style=STATE_STYLES.get(status, ""))
            counts.append("  ")
    money = f"spent ${progress.cost_so_far:.2f} of ~${progress.estimated_total:.2f}"
    if progress.budget is not None:
        money += f" (budget ${progress.budget:.2f})"
    stream_style = "green" if progress.stream == "live" else "yellow"
    details = Text.assemble(money, "   ", (progress.stream_words, stream_style), f"   limit {progress.concurrency}")
    return Group(top, counts, details)


class ProgressView:
    """Progress on stderr: a live bar on a terminal, a plain line every 10 s otherwise."""

    def __init__(self) -> None:
        self.tty = stderr.is_terminal
        self.last_plain = 0.0
        self.live: Live | None = None
        self.latest: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        self.latest = progress
        if self.tty:
            if self.live is None:
                self.live = Live(render(progress), console=stderr, refresh_per_second=4, transient=False)
                self.live.start()
            else:
                self.live.update(render(progress))
        elif time.monotonic() - self.last_plain >= PLAIN_EVERY_S:
            self.last_plain = time.monotonic()
            stderr.print(progress.line())

    def close(self) -> None:
        if self.live is not None:
            if self.latest is not None:
                self.live.update(render(self.latest))
            self.live.stop()
        elif self.latest is not None:
            stderr.print(self.latest.line())
