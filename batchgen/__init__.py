"""batchgen: run large batches of generations against Oxen.ai's async media API, resumably."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
