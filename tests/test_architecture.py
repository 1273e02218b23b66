"""The shape of the package: a pure core, imports in one direction, a small public API."""

from __future__ import annotations

import ast
from pathlib import Path

import batchgen

PACKAGE = Path(batchgen.__file__).parent
IO_LIBRARIES = {
    "httpx",
    "httpx_sse",
    "anyio",
    "sqlmodel",
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "rich",
    "typer",
    "click",
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_does_no_io() -> None:
    offenders = {
        path.name: sorted(n for n in imports_of(path) if n.split(".")[0] in IO_LIBRARIES)
        for path in (PACKAGE / "core").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_imports_point_one_way() -> None:
    # core imports nothing above it; engine never imports cli, api or the emulator; the emulator never the engine
    forbidden = {
        "core": ("batchgen.engine", "batchgen.cli", "batchgen.api", "batchgen.emulator"),
        "engine": ("batchgen.cli", "batchgen.api", "batchgen.emulator"),
        "emulator": ("batchgen.engine", "batchgen.cli", "batchgen.api"),
    }
    bad = []
    for folder, prefixes in forbidden.items():
        for path in (PACKAGE / folder).glob("*.py"):
            bad += [f"{folder}/{path.name} imports {n}" for n in imports_of(path) if n.startswith(prefixes)]
    assert bad == []


def test_only_cli_prints_or_exits() -> None:
    bad = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("cli.py",) or "emulator" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "exit"):
                bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert bad == []


def test_public_api() -> None:
    assert set(batchgen.__all__) == {
        "__version__",
        "run",
        "resume",
        "run_async",
        "resume_async",
        "RunSummary",
        "BatchgenError",
    }
    for name in batchgen.__all__:
        assert getattr(batchgen, name) is not None
