"""The plain poller (benchmarks/plain_poller.py) as a process of its own, as benchmarks/bench.py runs it.

    python -m tests.network.poller_entry --base-url URL --jobs N --poll-every S --out DIR

(from the repository's root, which puts `tests` on the path.) It sends the bodies batchgen sends for
tests.kit.write_manifest(DIR, N, model=IMAGE_MODEL), all N at once, and downloads every result into DIR. The API
key comes from OXEN_API_KEY; the CA (SSL_CERT_FILE) and the proxy (HTTPS_PROXY) from the environment, which httpx
reads as it does in batchgen. Exits 0 when every job succeeded.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from tests.kit import IMAGE_MODEL, MODEL_PARAMS, clips

POLLER = Path(__file__).resolve().parents[2] / "benchmarks" / "plain_poller.py"


def bodies(jobs: int) -> list[dict[str, Any]]:
    """What batchgen enqueues for the same manifest (so the emulator gives both the same generation times)."""
    return [{"model": IMAGE_MODEL, "prompt": prompt, **MODEL_PARAMS[IMAGE_MODEL]} for prompt in clips(jobs)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--poll-every", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location("plain_poller", POLLER)
    assert spec is not None and spec.loader is not None
    poller = importlib.util.module_from_spec(spec)
    sys.modules["plain_poller"] = poller  # its dataclasses look their module up by name
    spec.loader.exec_module(poller)
    args.out.mkdir(parents=True, exist_ok=True)
    result = anyio.run(
        lambda: poller.run_plain(
            args.base_url,
            os.environ["OXEN_API_KEY"],
            bodies(args.jobs),
            concurrency=args.jobs,
            poll_every=args.poll_every,
            out_dir=args.out,
        )
    )
    print(f"plain poller: {len(result.noticed)} finished, {result.failed} failed in {result.elapsed_s:.2f} s")
    return 0 if result.failed == 0 and len(result.noticed) == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
