"""The helper process of a split export (engine/exports.py): `python -m batchgen.cli.export_part` reads its task as
JSON on stdin, writes the jobs it names into the task's part file, and answers `write_part`'s result as JSON on
stdout. Not a command for users: `batchgen export` starts it on a large run."""

from __future__ import annotations

import json
import sys

from batchgen.engine.exports import write_part


def main() -> None:
    task = json.load(sys.stdin)
    sys.stdout.write(json.dumps(write_part(task)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
