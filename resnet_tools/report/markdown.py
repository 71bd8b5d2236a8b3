"""Markdown primitives for the README and the notebooks' tables: the one table writer, and the
escaping that keeps text from a results file plain text in Markdown and HTML (no markup, no
comment such as the README's own markers, no line break that ends a table). Imports nothing of
the project."""

from __future__ import annotations

import re
from typing import Any, Iterable

# Characters that start markup in CommonMark/GFM or HTML wherever they stand; "_" only where it
# can open or close emphasis (not inside a word such as x86_64).
_MD_SPECIALS = {"\\": "\\\\", "`": "\\`", "*": "\\*", "[": "\\[", "]": "\\]", "|": "\\|",
                "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LOOSE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_PLAIN_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]*")


def md(text: Any) -> str:
    """Text from a results file as Markdown that shows exactly that text, on one line."""
    flat = _LINE_BREAKS.sub(" ", str(text))
    escaped = "".join(_MD_SPECIALS.get(ch, ch) for ch in flat)
    return _LOOSE_UNDERSCORE.sub(r"\\_", escaped)


def cell(text: Any) -> str:
    """Text this project wrote (its own phrases, the committed experiments index, which may use
    Markdown on purpose) as one table cell: only what would break the table is escaped."""
    return _LINE_BREAKS.sub(" ", str(text)).replace("|", "\\|")


def code(name: Any) -> str:
    """A run name in code type where it is a plain name; escaped text otherwise (a code span
    shows backslashes and entities as typed, so it cannot hold every name safely)."""
    text = str(name)
    return f"`{text}`" if _PLAIN_NAME.fullmatch(text) else md(text)


def codes(names: Iterable[Any]) -> str:
    """Run names as code, comma-separated."""
    return ", ".join(code(n) for n in names)


def table(header: list[str], aligns: list[str], rows: Iterable[list[str] | str]) -> list[str]:
    """A GFM table's lines: header, alignment row (":---", "---:"), one line per row; cells as
    given (already escaped); a row given as a str is a whole line (see spanning_row)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    return lines + [row if isinstance(row, str) else "| " + " | ".join(row) + " |" for row in rows]


def spanning_row(cells: list[str], n_cols: int) -> str:
    """A row whose last given cell stands for the rest (e.g. *not measured*), the others left blank."""
    return "| " + " | ".join(cells) + " |" + " |" * (n_cols - len(cells))
