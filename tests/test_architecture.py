"""The shape of the package: a pure core, imports in one direction, one edge that talks to the user, a small public
API, and exit codes documented where a reader looks for them."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import batchgen
from batchgen import cli
from batchgen.cli.app import ExitCode

PACKAGE = Path(batchgen.__file__).parent
ROOT = PACKAGE.parent
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
# What only batchgen/cli/ may touch: printing, exiting, argv and the environment.
USER_EDGE_NAMES = {"print", "exit", "quit", "SystemExit"}
USER_EDGE_ATTRIBUTES = {
    ("sys", "exit"),
    ("sys", "argv"),
    ("sys", "stdout"),
    ("sys", "stderr"),
    ("os", "_exit"),
    ("os", "environ"),
    ("os", "environb"),
    ("os", "getenv"),
    ("os", "putenv"),
}


def tree_of(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports; `from batchgen import cli` counts as importing `batchgen.cli`."""
    names: set[str] = set()
    for node in ast.walk(tree_of(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(folder: Path = PACKAGE) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def is_cli(path: Path) -> bool:
    return path.relative_to(PACKAGE).parts[0] == "cli"


def user_edge_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """Where `tree` prints, exits, or reads argv or the environment."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in USER_EDGE_NAMES:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in USER_EDGE_ATTRIBUTES:
                found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "sys"):
            found += [
                (node.lineno, f"{node.module}.{a.name}")
                for a in node.names
                if (node.module, a.name) in USER_EDGE_ATTRIBUTES
            ]
    return found


def test_core_does_no_io() -> None:
    offenders = {
        path.name: sorted(n for n in imports_of(path) if n.split(".")[0] in IO_LIBRARIES)
        for path in (PACKAGE / "core").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_imports_point_one_way() -> None:
    # core imports nothing above it; engine never imports cli, api or the emulator; the emulator never the engine;
    # the settings resolver is a leaf, but for the pure core
    forbidden = {
        "core": ("batchgen.engine", "batchgen.cli", "batchgen.api", "batchgen.emulator", "batchgen.settings"),
        "engine": ("batchgen.cli", "batchgen.api", "batchgen.emulator", "batchgen.settings"),
        "emulator": ("batchgen.engine", "batchgen.cli", "batchgen.api", "batchgen.settings"),
    }
    bad = []
    for folder, prefixes in forbidden.items():
        for path in (PACKAGE / folder).glob("*.py"):
            bad += [f"{folder}/{path.name} imports {n}" for n in imports_of(path) if n.startswith(prefixes)]
    settings_imports = {
        n for n in imports_of(PACKAGE / "settings.py") if n.startswith("batchgen") and not n.startswith("batchgen.core")
    }
    bad += [f"settings.py imports {n}" for n in sorted(settings_imports)]
    assert bad == []


def test_nothing_imports_the_cli_but_itself_and_the_console_entry() -> None:
    bad = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in modules()
        if not is_cli(path)
        for name in imports_of(path)
        if name == "batchgen.cli" or name.startswith("batchgen.cli.")
    ]
    assert bad == []
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["scripts"] == {"batchgen": "batchgen.cli:main"}


def test_command_modules_share_only_the_app_and_the_options() -> None:
    # a group of commands can be read (and moved) alone: it imports app.py, options.py and the progress view (no
    # command of its own), no other group
    shared = {"batchgen.cli", "batchgen.cli.app", "batchgen.cli.options", "batchgen.cli.progress_view"}
    bad = []
    for path in modules(PACKAGE / "cli"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        own = {n for n in imports_of(path) if n.startswith("batchgen.cli")}
        bad += [f"cli/{path.name} imports {n}" for n in sorted(own) if n.rsplit(".", 1)[0] not in shared]
    assert bad == []


def test_only_the_cli_prints_exits_or_reads_argv_and_the_environment() -> None:
    bad = [
        f"{path.relative_to(PACKAGE)}:{line} uses {what}"
        for path in modules()
        if not is_cli(path) and path.name != "api.py"
        for line, what in user_edge_uses(tree_of(path))
    ]
    assert bad == []


def test_api_reads_the_environment_only_in_its_public_entry_points() -> None:
    bad = []
    for node in tree_of(PACKAGE / "api.py").body:
        public = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_")
        for line, what in user_edge_uses(node):
            if not (public and what == "os.environ"):
                bad.append(f"api.py:{line} uses {what}")
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
    assert set(cli.__all__) == {"app", "main", "exit_code_for"}


def test_every_exit_code_is_documented_in_the_readme_and_in_app_py() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    in_readme = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    docstring = ast.get_docstring(tree_of(PACKAGE / "cli" / "app.py")) or ""
    in_app_py = {int(code) for code in re.findall(r"^ {4}(\d+) ", docstring, flags=re.MULTILINE)}
    assert in_readme == in_app_py == {int(code) for code in ExitCode}


PATH_METHODS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "mkdir", "unlink", "exists", "iterdir"}


def test_core_reads_and_writes_no_files() -> None:
    """Files are read at the edge and passed in (engine/manifests.py reads a manifest and its rows files)."""
    offenders: dict[str, list[str]] = {}
    for path in (PACKAGE / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            # open(...) itself, or a pathlib method (a `read_text` passed in by the edge is a plain name: allowed)
            if (isinstance(node.func, ast.Name) and node.func.id == "open") or (
                isinstance(node.func, ast.Attribute) and node.func.attr in PATH_METHODS
            ):
                offenders.setdefault(path.name, []).append(f"line {node.lineno}")
    assert offenders == {}
