"""Rows for the export and report tests: a factory, and a realistic run (3 subjects x 2 styles x 2 durations x 2
repeats) with successes, failures and jobs still under way."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from batchgen.core.jobs import JobRow, JobStatus, job_key

T0 = datetime(2026, 8, 1, 12, 0, 0, tzinfo=UTC)
MakeRow = Callable[..., JobRow]


def make_row(
    prompt: str = "an ox in a field",
    *,
    params: dict[str, Any] | None = None,
    variables: dict[str, Any] | None = None,
    repeat: int = 0,
    status: JobStatus = JobStatus.SUCCEEDED,
    model: str = "openai-sora-2-pro",
    **fields: Any,
) -> JobRow:
    all_params = {"prompt": prompt, **(params or {})}
    key = job_key(model, all_params, repeat)
    return JobRow(
        job_key=key,
        run="demo",
        model=model,
        params=all_params,
        variables=variables or {},
        repeat=repeat,
        status=status,
        **fields,
    )


def demo_rows() -> list[JobRow]:
    """24 jobs as a finished-but-messy run leaves them: mostly succeeded, two failed, a few still in flight."""
    rows: list[JobRow] = []
    subjects = ["a red fox", "an ox at dawn", "a lighthouse in a storm"]
    styles = ["35mm film", "watercolour"]
    n = 0
    for seconds in ("4", "8"):
        for subject in subjects:
            for style in styles:
                for repeat in (0, 1):
                    n += 1
                    prompt = f"{subject}, {style} style, slow dolly-in"
                    key = job_key("openai-sora-2-pro", {"prompt": prompt, "seconds": seconds}, repeat)
                    enqueued = T0 + timedelta(seconds=3 * n)
                    started: datetime | None = enqueued + timedelta(seconds=20 + n)
                    done: datetime | None = enqueued + timedelta(seconds=80 + 5 * n)
                    status, extra = JobStatus.SUCCEEDED, {}
                    if n in (7, 18):
                        status = JobStatus.FAILED
                        extra = {
                            "error_class": "content_policy",
                            "error": "The prompt was rejected by the safety system.",
                        }
                    elif n in (22, 23):
                        status, done = JobStatus.PROCESSING, None
                    elif n == 24:
                        status, started, done = JobStatus.QUEUED, None, None
                    ok = status == JobStatus.SUCCEEDED
                    rows.append(
                        make_row(
                            prompt,
                            params={"seconds": seconds, "size": "1280x720"},
                            variables={"subject": subject, "style": style},
                            repeat=repeat,
                            status=status,
                            generation_id=f"gen_{key}",
                            result_url=f"https://cdn.example/{key}.mp4" if ok else None,
                            output_path=f"demo/{key}.mp4" if ok else None,
                            estimated_cost=0.3 * int(seconds),
                            cost=0.3 * int(seconds) if ok else None,
                            attempts=1,
                            intent_at=enqueued - timedelta(seconds=1),
                            enqueued_at=enqueued,
                            started_at=started,
                            completed_at=done,
                            **extra,
                        )
                    )
    return rows
