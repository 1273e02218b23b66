from __future__ import annotations

from batchgen.core.jobs import JobStatus
from batchgen.core.progress import Progress, safe_file_stem
from batchgen.core.remote import failure_class


def test_rate_and_eta_come_from_recent_finishes() -> None:
    counts = {JobStatus.SUCCEEDED: 3, JobStatus.QUEUED: 2, JobStatus.PENDING: 4, JobStatus.UNKNOWN: 1}
    p = Progress.measure(
        run="r", counts=counts, elapsed_s=10.0, finish_times=[0.0, 1.0, 2.0], cost_so_far=1.0,
        estimated_total=5.0, concurrency=4, stream="live",
    )  # fmt: skip
    assert p.total == 10 and p.finished == 3
    assert p.finished_per_min == 60.0  # 2 intervals in 2 s
    assert p.eta_s == 6 * 1.0  # six unfinished jobs at one a second; unknown ones wait for the user
    assert "3/10 done" in p.line() and "$1.00 of ~$5.00" in p.line()


def test_no_rate_no_eta() -> None:
    p = Progress.measure(
        run="r", counts={JobStatus.PENDING: 2}, elapsed_s=0.0, finish_times=[], cost_so_far=0.0,
        estimated_total=0.0, concurrency=1, stream="polling",
    )  # fmt: skip
    assert p.eta_s is None and "(polling)" in p.line()


def test_file_stems_cannot_carry_a_path() -> None:
    stem = safe_file_stem("run", "abc123", '../../etc/passwd =HYPERLINK("x")')
    assert stem == "run-abc123-etc-passwd-hyperlink-x"
    assert safe_file_stem("run", "k", "///") == "run-k"


def test_two_runs_sharing_an_output_directory_never_write_the_same_file() -> None:
    # the same manifest under two run names gives the same job keys: the run's name must tell the files apart
    assert safe_file_stem("ads-v1", "k", "an ox") != safe_file_stem("ads-v2", "k", "an ox")
    assert safe_file_stem("../Ads V1", "k", "x").startswith("ads-v1-k")


def test_failure_classes() -> None:
    assert failure_class("Insufficient credits") == "insufficient_credits"
    assert failure_class("Content moderation flagged the prompt") == "moderation"
    assert failure_class("Getting model response error: 422 - Value error, bad seconds") == "validation"
    assert failure_class("upstream timed out") == "remote"
