"""LaTeX primitives for the paper and the notebooks' tables: the one escaper (any text a results
file brings becomes something pdflatex typesets, whatever its characters), the one booktabs table
writer, table and figure environments. Imports nothing of the project."""

from __future__ import annotations

import unicodedata
from typing import Any, Iterable

_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
# Beyond ASCII, the paper's fonts (mathptmx, OT1) typeset only what a command spells; anything else
# (CJK, emoji, control characters) would stop pdflatex, so it is spelled, decomposed or replaced.
_TEX_SYMBOLS = {
    "±": "$\\pm$", "×": "$\\times$", "‡": "$^\\ddagger$", "†": "$^\\dagger$", "–": "--", "—": "---",
    "‘": "`", "’": "'", "“": "``", "”": "''", "…": "\\ldots{}", "°": "$^\\circ$", "Δ": "$\\Delta$",
    "→": "$\\to$", "≥": "$\\ge$", "≤": "$\\le$", "µ": "$\\mu$", "ß": "{\\ss}", "æ": "{\\ae}", "Æ": "{\\AE}",
    "ø": "{\\o}", "Ø": "{\\O}", "œ": "{\\oe}", "Œ": "{\\OE}", "å": "{\\aa}", "Å": "{\\AA}", "ł": "{\\l}",
    "Ł": "{\\L}", "ı": "{\\i}",
}
_TEX_ACCENTS = {"\u0301": "'", "\u0300": "`", "\u0302": "^", "\u0308": '"', "\u0303": "~", "\u0304": "=",
                "\u0327": "c", "\u030a": "r", "\u030c": "v", "\u0306": "u", "\u030b": "H", }
UNTYPESET = "?"  # what stands for a character the paper's fonts cannot show


def _tex_char(ch: str) -> str:
    if ch in _TEX_SPECIALS:
        return _TEX_SPECIALS[ch]
    if " " <= ch <= "~":
        return ch
    if ch in _TEX_SYMBOLS:
        return _TEX_SYMBOLS[ch]
    if unicodedata.category(ch)[0] in "CZ":  # line breaks (a blank line ends a paragraph), tabs, controls
        return " "
    base, *marks = unicodedata.normalize("NFD", ch)
    if " " <= base <= "~" and marks and all(m in _TEX_ACCENTS for m in marks):
        out = _tex_char(base)
        for m in marks:
            out = f"\\{_TEX_ACCENTS[m]}{{{out}}}"
        return out
    return UNTYPESET


def tex_escape(text: Any) -> str:
    """Any text as LaTeX that typesets it: specials escaped, line breaks as spaces, accented
    Latin letters as accent commands, characters the fonts lack as UNTYPESET."""
    return "".join(_tex_char(ch) for ch in str(text))


tex = tex_escape


def tt_list(names: Iterable[str]) -> str:
    """Run names in typewriter type, comma-separated, breakable after their hyphens (TeX
    does not hyphenate typewriter text, which leaves wide gaps in two-column prose)."""
    return ", ".join("\\texttt{" + tex(n).replace("-", "-\\allowbreak{}") + "}" for n in names)


def signed(x: float) -> str:
    """+1.23 / $-$1.23: a typographic minus in LaTeX."""
    text = f"{x:+.2f}"
    return "$-$" + text[1:] if text.startswith("-") else text


def macro(name: str, value: str) -> str:
    return f"\\newcommand{{\\{name}}}{{{value}}}"


def fit_width(body: str) -> str:
    """Shrink a tabular to the text width only if it is wider (never enlarge it)."""
    return "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n" + body + "}\n"


def tabular(spec: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(header) + " \\\\", "\\midrule"]
    lines += [" & ".join(r) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def table_env(body: str, caption: str, label: str, wide: bool = False) -> str:
    env = "table*" if wide else "table"
    return (
        f"\\begin{{{env}}}[tbp]\n\\centering\\small\n\\caption{{{caption}}}\\label{{{label}}}\n"
        f"{fit_width(body)}\\end{{{env}}}\n"
    )


def figure_tex(path: str | None, caption: str, label: str, wide: bool = False, width: str = "") -> str:
    """A figure environment around `path` (as \\includegraphics reads it); "" for no figure."""
    if path is None:
        return ""
    env = "figure*" if wide else "figure"
    width = width or ("\\textwidth" if wide else "\\linewidth")
    return (
        f"\\begin{{{env}}}[tbp]\n\\centering\n\\includegraphics[width={width}]{{{path}}}\n"
        f"\\caption{{{caption}}}\\label{{{label}}}\n\\end{{{env}}}\n"
    )


def missing_figures_note(names: list[str]) -> str:
    if not names:
        return ""
    return (
        "\\noindent\\emph{Not in this build (the notebook that draws them has not run):} "
        + ", ".join(f"\\texttt{{{tex(n)}}}" for n in names)
        + ".\n"
    )


def stale_note(newer: list[str]) -> str:
    """A caption warning when a figure predates the results it shows (drawn by another run)."""
    if not newer:
        return ""
    return (
        f" \\textbf{{Warning: drawn before the current results of {tt_list(newer)} were written; "
        "rerun the notebooks.}"
    )
