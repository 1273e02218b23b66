"""Reading a manifest from disk: the file and its `rows` files are read here, at the edge, and handed to the pure
parser in `core/manifest.py`."""

from __future__ import annotations

from pathlib import Path

from batchgen.core.manifest import Manifest, parse_manifest
from batchgen.errors import ManifestError, Problem


def read_text(path: Path) -> str:
    """A manifest or rows file as text: UTF-8, without the byte-order mark Excel writes first."""
    return path.read_text(encoding="utf-8-sig")


def load_manifest(path: Path | str) -> Manifest:
    """Read and check a manifest file; raise ManifestError listing every problem found."""
    path = Path(path)
    filename = str(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise ManifestError([Problem(filename, "no such manifest file")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError([Problem(filename, f"cannot read the manifest: {error}")]) from None
    return parse_manifest(text, path, read_text)
