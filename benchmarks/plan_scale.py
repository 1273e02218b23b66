"""How long planning a 100,000-job manifest takes, and its peak memory.

    .venv/bin/python benchmarks/plan_scale.py [--jobs 100000]

Two shapes: a matrix (templated prompts x seconds x aspect ratios) and a CSV of one row per job.
The registry is the emulator's model catalogue, read from the package (no network): this measures
expansion, schema validation and pricing, which is what must scale.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from batchgen.core.expansion import expand
from batchgen.core.models import ModelInfo
from batchgen.core.plan import RegistryView, build_plan
from batchgen.engine.manifests import load_manifest


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


def measure(label: str, path: Path, view: RegistryView) -> None:
    started = time.perf_counter()
    manifest = load_manifest(path)
    loaded = time.perf_counter()
    expansion = expand(manifest, view.models)
    expanded = time.perf_counter()
    plan = build_plan(manifest, expansion, view, {})
    done = time.perf_counter()
    print(
        f"{label:7} {len(plan.jobs):>7} jobs  load {loaded - started:5.2f}s  expand {expanded - loaded:5.2f}s  "
        f"validate+price {done - expanded:5.2f}s  total {done - started:5.2f}s  "
        f"problems {len(plan.problems)}  total ${plan.total_cost_exact:,.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    view = registry()
    with tempfile.TemporaryDirectory() as directory:
        measure("matrix", write_matrix(Path(directory), args.jobs), view)
        measure("rows", write_rows(Path(directory), args.jobs), view)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    print(f"peak RSS {peak / (1024 * 1024 if sys.platform == 'darwin' else 1024):.0f} MiB")


if __name__ == "__main__":
    main()
