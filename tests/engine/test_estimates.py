"""A run whose first plan had no prices (the registry was unreachable) takes a later plan's estimates for the jobs
still pending, and never changes the estimate of a job already sent."""

from __future__ import annotations

from pathlib import Path

from batchgen.core.jobs import JobSpec
from batchgen.engine.store import NewJob, Store


def test_a_later_priced_plan_fills_in_the_estimates_of_pending_jobs_only(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "batchgen.db")
    try:
        run = store.ensure_run("r", manifest_path="m.yaml", manifest_sha256="0", base_url="http://127.0.0.1:1",
                               out_dir=str(tmp_path / "out"), settings={}, budget=None)  # fmt: skip
        lease = store.acquire_run(run.id)
        specs = [JobSpec("openai-sora-2-pro", {"prompt": p}) for p in ("ox", "yak", "gnu")]
        assert store.add_jobs(lease, [NewJob(spec, None) for spec in specs]) == 3
        sent = store.claim_jobs(lease, 1)[0]
        store.record_intents(lease, [sent])
        store.record_enqueued(lease, [(sent, "g-1")])
        assert store.estimated_total(run.id) == 0.0

        assert store.add_jobs(lease, [NewJob(spec, 1.2) for spec in specs]) == 0
        estimates = {row.job_key: row.estimated_cost for row in store.job_rows(run.id)}
        assert estimates[sent.key] is None, "a job already sent keeps its estimate"
        assert sorted(v for k, v in estimates.items() if k != sent.key) == [1.2, 1.2]
        assert store.estimated_total(run.id) == 2.4
        store.release_run(lease)
    finally:
        store.close()
