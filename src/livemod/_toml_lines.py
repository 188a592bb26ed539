"""Where a key sits in a TOML text: the line locator behind livemod.toml's error messages.

``tomllib`` gives values, not positions. This maps every table header and ``key =`` line
to its line number, skipping the insides of multi-line strings and arrays, so a config
error can say ``livemod.toml:12``. Approximate by design: a key it cannot place gets the
line of its nearest table, or none.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["key_lines"]

_KEY_PART: Final = r"(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
_KEY_PATH: Final = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
# A header holds a key path, so an array row such as "  [1, 2]" is not taken for one.
_HEADER_RE: Final = re.compile(rf"\s*\[\[?\s*({_KEY_PATH})\s*\]\]?\s*(?:#.*)?$")
_KEYLINE_RE: Final = re.compile(rf"\s*({_KEY_PATH})\s*=")
_PART_RE: Final = re.compile(_KEY_PART)
_STRING_RE: Final = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'")


def _split_key(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART_RE.findall(dotted))


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each table header and ``key =`` line to its 1-based line number (first wins)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string = False
    depth = 0  # brackets still open in a multi-line array or inline table
    for number, line in enumerate(text.splitlines(), 1):
        # Skip the inside of multi-line strings, where "x = 1" is text, not a key.
        quotes = line.count('"""') + line.count("'''")
        if in_string:
            in_string = quotes % 2 == 0
            continue
        # Skip the rows of a multi-line array too: '  ["a"]' looks like a header.
        if depth > 0:
            depth += _brackets(line)
            continue
        header = _HEADER_RE.match(line)
        if header:
            table = _split_key(header.group(1))
            lines.setdefault(table, number)
        else:
            key = _KEYLINE_RE.match(line)
            if key:
                lines.setdefault(table + _split_key(key.group(1)), number)
                depth = max(_brackets(line[key.end():]), 0)
        in_string = quotes % 2 == 1
    return lines


def _brackets(code: str) -> int:
    """Opening minus closing brackets and braces, outside strings and comments."""
    code = _STRING_RE.sub("", code).split("#", 1)[0]
    return code.count("[") + code.count("{") - code.count("]") - code.count("}")
