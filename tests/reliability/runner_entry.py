"""A runner process for the crash tests, with fast timings.

    python -m tests.reliability.runner_entry run --manifest M --db DB --base-url URL --out DIR
    python -m tests.reliability.runner_entry resume --db DB --base-url URL
    ... --option silent_after=600 (any RunOptions timing, repeated)

(from the repository's root, which puts `tests` on the path; tests/kit_processes.entry_cmd does that.)

It runs batchgen's Python API as `batchgen run`/`resume` would, but with the timings of the runner tests (the
CLI's are for a real API: a 60 s safety net), so a test can SIGKILL it at any moment and still finish in seconds.
The API key comes from OXEN_API_KEY. Exit codes are the CLI's.
"""

from __future__ import annotations

import argparse
import sys

from batchgen import api, errors
from batchgen.cli import exit_code_for
from tests.kit import FAST, FAST_RETRY


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run", "resume"])
    parser.add_argument("--manifest")
    parser.add_argument("--db", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--out")
    parser.add_argument("--lease-seconds", type=float, default=30.0)
    parser.add_argument("--option", action="append", default=[], help="NAME=SECONDS: a RunOptions timing")
    args = parser.parse_args(argv)
    options: dict[str, object] = {**FAST, "lease_seconds": args.lease_seconds}
    for assignment in args.option:
        name, _, value = assignment.partition("=")
        options[name] = float(value)
    try:
        if args.command == "run":
            summary = api.run(
                args.manifest, db=args.db, base_url=args.base_url, out=args.out, retry=FAST_RETRY, **options
            )
        else:
            summary = api.resume(None, db=args.db, base_url=args.base_url, retry=FAST_RETRY, **options)
    except errors.BatchgenError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_code_for(error)
    print(summary.csv_path)
    return summary.exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
