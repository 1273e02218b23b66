"""The helper process of a split export (engine/exports.py): `python -m batchgen.cli.export_part` reads its task as
JSON on stdin, writes the jobs it names into the task's part file, and answers `write_part`'s result as JSON on
stdout. Not a command for users: `batchgen export` starts it on a large run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from batchgen.engine.exports import write_part


def main() -> None:
    parent = os.getppid()
    task = json.load(sys.stdin)
    try:
        result = write_part(task)
        if os.getppid() != parent:
            raise SystemExit("the export that started this helper is gone")  # nobody will append or remove it
        sys.stdout.write(json.dumps(result))
        sys.stdout.flush()
    except BaseException:
        Path(task["part"]).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    main()
