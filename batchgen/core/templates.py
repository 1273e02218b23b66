"""Prompt templates: `"A {animal} driving a {car}"`, with `{{` and `}}` for literal braces.

Deliberately smaller than str.format: only bare names, no attribute access, indexing or format specs, so a
template cannot do anything surprising with the values it is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class TemplateError(ValueError):
    """The template text is malformed (an unclosed `{`, a stray `}`, or a name that is not a name)."""


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal pieces and the names between them (`parts` alternates text, name, text...)."""

    parts: tuple[str, ...]
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)  # the variables used, in order of first use
    name_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # asked of every job of a matrix: worked out once, when the template is parsed
        object.__setattr__(self, "names", tuple(dict.fromkeys(self.parts[1::2])))
        object.__setattr__(self, "name_set", frozenset(self.names))

    @property
    def is_literal(self) -> bool:
        """True when the text has no variables (it may still have had `{{` escapes)."""
        return len(self.parts) == 1

    def render(self, variables: Mapping[str, Any]) -> str:
        """Fill in the names; a missing name raises KeyError (callers check `names` first)."""
        if len(self.parts) == 1:
            return self.parts[0]
        pieces = list(self.parts)
        for index in range(1, len(pieces), 2):
            pieces[index] = _as_text(variables[pieces[index]])
        return "".join(pieces)


def _as_text(value: Any) -> str:
    # YAML booleans and None would otherwise render as Python's `True` / `None`.
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


@lru_cache(maxsize=4096)
def parse_template(text: str) -> Template:
    """Parse `text` once (cached: the same prompt template recurs across thousands of jobs)."""
    if "{" not in text and "}" not in text:
        return Template((text,))
    parts: list[str] = []
    literal: list[str] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == "{":
            if text.startswith("{{", index):
                literal.append("{")
                index += 2
                continue
            end = text.find("}", index + 1)
            if end < 0:
                raise TemplateError(f"unclosed `{{` at character {index + 1}; write `{{{{` for a literal brace")
            name = text[index + 1 : end].strip()
            if not _NAME.match(name):
                raise TemplateError(f"`{{{name}}}` is not a variable name; write `{{{{` for a literal brace")
            parts.append("".join(literal))
            parts.append(name)
            literal = []
            index = end + 1
        elif char == "}":
            if text.startswith("}}", index):
                literal.append("}")
                index += 2
                continue
            raise TemplateError(f"stray `}}` at character {index + 1}; write `}}}}` for a literal brace")
        else:
            literal.append(char)
            index += 1
    parts.append("".join(literal))
    return Template(tuple(parts))
