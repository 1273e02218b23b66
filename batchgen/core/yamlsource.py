"""YAML with line numbers: plain Python values plus a map from each value's path to the line it came from.

The manifest is composed into PyYAML's node tree (which carries marks) and then constructed with the safe
constructor, so values keep their YAML types (`4` stays an int, `"4"` a string) and every problem found later
can point at `file:line`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from batchgen.errors import Problem

Path_ = tuple[str | int, ...]  # a path into the document: mapping keys and sequence indexes
_C_LOADER: Any = getattr(yaml, "CSafeLoader", None)  # present when PyYAML was built with libyaml


@dataclass(frozen=True, slots=True)
class LocatedDocument:
    """A parsed YAML document and where each of its values starts."""

    filename: str
    value: Any
    lines: Mapping[Path_, int]  # 1-based line of the value at each path
    key_lines: Mapping[Path_, int]  # 1-based line of the mapping key that names each path

    def line(self, path: Path_) -> int:
        """The line of the value at `path`, or of its nearest located ancestor."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def where(self, path: Path_ = ()) -> str:
        """`file:line` for the value at `path`."""
        return f"{self.filename}:{self.line(path)}"

    def where_key(self, path: Path_) -> str:
        """`file:line` for the key naming `path` (falls back to the value's line)."""
        line = self.key_lines.get(path)
        return f"{self.filename}:{line}" if line is not None else self.where(path)


class YamlSyntaxError(Exception):
    """The text is not YAML; `problem` locates it."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def parse_yaml(text: str, filename: str) -> tuple[LocatedDocument, list[Problem]]:
    """Parse one YAML document; return it with its line map and any duplicate-key problems.

    Raises YamlSyntaxError (with the line) when the text is not YAML.
    """

    def syntax_error(line: int, message: str) -> YamlSyntaxError:
        return YamlSyntaxError(Problem(f"{filename}:{line}", f"YAML syntax error: {message}"))

    fast = _composed_by_libyaml(text)
    if fast is not None:
        node, value = fast
    else:
        node, value = _composed(text, filename, syntax_error)
    lines: dict[Path_, int] = {}
    key_lines: dict[Path_, int] = {}
    problems: list[Problem] = []
    if node is not None:
        _walk(node, (), lines, key_lines, problems, filename, frozenset())
    return LocatedDocument(filename, value, lines, key_lines), problems


def _composed_by_libyaml(text: str) -> tuple[yaml.Node | None, Any] | None:
    """The node tree and value by libyaml's parser (ten times faster on a long matrix), or None when PyYAML was
    built without it or it refuses the text: then the pure-Python parser reads it and says what is wrong, in the
    words and with the line it always has."""
    if _C_LOADER is None or yaml.reader.Reader.NON_PRINTABLE.search(text):
        return None  # control characters: refused by the Python reader, with its message
    loader = _C_LOADER(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    except Exception:
        return None
    finally:
        loader.dispose()


def _composed(
    text: str, filename: str, syntax_error: Callable[[int, str], YamlSyntaxError]
) -> tuple[yaml.Node | None, Any]:
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters at once
    except yaml.reader.ReaderError as error:
        raise syntax_error(text.count("\n", 0, error.position) + 1, str(error).split("\n")[0]) from None
    node = None
    try:
        node = loader.get_single_node()
        # Construct before walking: construction flattens merge keys (`<<: *defaults`) in the node tree.
        value = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise syntax_error(line, error.problem or str(error)) from None
    except yaml.reader.ReaderError as error:
        raise syntax_error(text.count("\n", 0, error.position) + 1, str(error).split("\n")[0]) from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(Problem(filename, f"YAML error: {error}")) from None
    except RecursionError:
        raise syntax_error(loader.get_mark().line + 1, "nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as error:  # an explicit tag its text cannot take: `!!int abc`
        bad = _unconstructable(node) if node is not None else None
        line = bad.start_mark.line + 1 if bad is not None else loader.get_mark().line + 1
        raise syntax_error(
            line, f"{bad.tag if bad is not None else 'a tagged value'} cannot be read ({error})"
        ) from None
    finally:
        loader.dispose()
    return node, value


def _unconstructable(root: yaml.Node) -> yaml.ScalarNode | None:
    """The first scalar whose tag its text cannot take, found by constructing each scalar on its own."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                yaml.SafeLoader("").construct_object(node)
            except Exception:
                return node
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            stack.extend(item for pair in reversed(node.value) for item in reversed(pair))
    return None


def _walk(
    node: yaml.Node,
    path: Path_,
    lines: dict[Path_, int],
    key_lines: dict[Path_, int],
    problems: list[Problem],
    filename: str,
    ancestors: frozenset[int],
) -> None:
    if id(node) in ancestors:  # `&a [*a]`: a value that contains itself has no end to expand
        raise YamlSyntaxError(
            Problem(
                f"{filename}:{node.start_mark.line + 1}",
                "YAML syntax error: an alias refers to a value that contains it",
            )
        )
    ancestors = ancestors | {id(node)}
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str | int, int] = {}
        for key_node, value_node in node.value:
            key = _key_of(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                # YAML silently keeps the last one; in a manifest that is almost always a mistake.
                problems.append(Problem(f"{filename}:{line}", f"duplicate key `{key}` (first set on line {seen[key]})"))
            seen[key] = line
            key_lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, key_lines, problems, filename, ancestors)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, key_lines, problems, filename, ancestors)


def _key_of(node: yaml.Node) -> str | int:
    if isinstance(node, yaml.ScalarNode):
        value = node.value
        return int(value) if node.tag.endswith(":int") and value.lstrip("-").isdigit() else str(value)
    return str(node.value)
