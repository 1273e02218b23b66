"""How long planning a large manifest takes, and its peak memory (issue 15: a million jobs in <= 10 s, <= 1 GB).

    .venv/bin/python benchmarks/plan_scale.py [--jobs 100000] [--phases]

Two shapes: a matrix (templated prompts x seconds x aspect ratios x resolutions) and a CSV of one row per job.
The registry is the emulator's model catalogue, read from the package (no network): this measures reading the
manifest, expansion, schema validation and pricing, which is what must scale.

Each shape is planned in a fresh process, so each peak RSS is that shape's alone. By default the plan is made as
`batchgen plan` and `batchgen run` make it (engine/planning.py: one pass, the collector paused); `--phases` makes
it in separate steps instead, `expand` then `build_plan`, to see what each costs. Times are wall clock and, in
brackets, the CPU time of the process: on a shared machine the second is the steadier.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from batchgen.core.expansion import expand
from batchgen.core.models import ModelInfo
from batchgen.core.plan import Plan, RegistryView, build_plan, draft_plan
from batchgen.engine.manifests import load_manifest
from batchgen.engine.planning import collector_paused

SHAPES = ("matrix", "rows")


def registry() -> RegistryView:
    catalogue = json.loads(resources.files("batchgen.emulator").joinpath("models.json").read_text("utf-8"))
    return RegistryView(models={entry["id"]: ModelInfo.from_api(entry) for entry in catalogue["data"]})


def write_matrix(directory: Path, jobs: int) -> Path:
    prompts = max(1, jobs // (3 * 2 * 2))  # x seconds x aspect ratios x resolutions
    animals = "\n".join(f"    - animal number {i}" for i in range(prompts))
    text = (
        "model: openai-sora-2-pro\n"
        "params: {prompt: 'A {animal} driving a tractor'}\n"
        "matrix:\n"
        f"  animal:\n{animals}\n"
        "  seconds: ['4', '8', '12']\n"
        "  aspect_ratio: [landscape, portrait]\n"
        "  resolution: [standard, high]\n"
    )
    path = directory / "matrix.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def write_rows(directory: Path, jobs: int) -> Path:
    with (directory / "rows.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "seconds", "aspect_ratio"])
        for index in range(jobs):
            writer.writerow([f"An ox, take {index}", ("4", "8", "12")[index % 3], ("landscape", "portrait")[index % 2]])
    path = directory / "rows.yaml"
    path.write_text("model: openai-sora-2-pro\nrows: rows.csv\n", encoding="utf-8")
    return path


class Clock:
    """Wall and CPU time since the last `lap`."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.started = (self.wall, self.cpu)

    def lap(self) -> str:
        wall, cpu = time.perf_counter(), time.process_time()
        text = f"{wall - self.wall:5.2f}s [{cpu - self.cpu:5.2f}]"
        self.wall, self.cpu = wall, cpu
        return text

    def total(self) -> str:
        return f"{self.wall - self.started[0]:5.2f}s [{self.cpu - self.started[1]:5.2f}]"


def measure(label: str, path: Path, phases: bool) -> None:
    """Plan one manifest in this process and print one line."""
    view = registry()
    clock = Clock()
    if phases:
        manifest = load_manifest(path)
    else:
        with collector_paused():
            manifest = load_manifest(path)
    steps = [f"load {clock.lap()}"]
    plan: Plan
    if phases:
        expansion = expand(manifest, view.models)
        steps.append(f"expand {clock.lap()}")
        plan = build_plan(manifest, expansion, view, {})
        steps.append(f"validate+price {clock.lap()}")
    else:
        with collector_paused():
            plan = draft_plan(manifest, view).finish({})
        steps.append(f"expand+validate+price {clock.lap()}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    print(
        f"{label:7} {len(plan.jobs):>8} jobs  {'  '.join(steps)}  total {clock.total()}  max RSS {peak:5.0f} MiB  "
        f"problems {len(plan.problems)}  total ${plan.total_cost_exact:,.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--phases", action="store_true", help="expand, then validate and price, timed apart")
    parser.add_argument("--shape", choices=SHAPES, help=argparse.SUPPRESS)  # a child: plan this one
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shape:
        measure(args.shape, args.manifest, args.phases)
        return
    how = "expand, then validate and price (--phases)" if args.phases else "as `batchgen plan` does: one pass"
    print(f"{args.jobs:,} jobs, {how}; wall time [CPU time]", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        for shape, write in zip(SHAPES, (write_matrix, write_rows), strict=True):
            manifest = write(Path(directory), args.jobs)
            command = [sys.executable, __file__, "--shape", shape, "--manifest", str(manifest)]
            subprocess.run([*command, *(["--phases"] if args.phases else [])], check=True)
    # the children's peaks, as the larger of the two: the one figure benchmarks/bench.py reads
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    print(f"peak RSS {peak:.0f} MiB (the larger shape's; each shape is planned in a process of its own)")


if __name__ == "__main__":
    main()
