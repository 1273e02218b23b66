"""batchgen: run large batches of generations against Oxen.ai's async media API, resumably.

    import batchgen
    summary = batchgen.run("manifests/demo.yaml", emulate=True)   # or await batchgen.run_async(...)
    summary = batchgen.resume()                                     # finish the latest run from the database

The public names are loaded lazily, so importing the pure core (batchgen.core.*) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchgen.errors import BatchgenError

if TYPE_CHECKING:
    from batchgen.api import RunSummary, resume, resume_async, run, run_async

__version__ = "0.1.0"
__all__ = ["BatchgenError", "RunSummary", "__version__", "resume", "resume_async", "run", "run_async"]


def __getattr__(name: str) -> Any:
    if name in {"RunSummary", "resume", "resume_async", "run", "run_async"}:
        from batchgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'batchgen' has no attribute {name!r}")
