"""The notebooks' tables as files: each DataFrame as CSV (raw numbers), Markdown and a booktabs LaTeX
`tabular` (the paper \\inputs it inside its own table environment). Only formats: the numbers come from
resnet_tools.results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from resnet_tools.report import latex, markdown
from resnet_tools.report.latex import tex_escape
from resnet_tools.results import stamp
from resnet_tools.safeio import atomic_write


def _format_cell(v: Any, tex: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "--" if tex else "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        text = f"{int(v):,}"
    elif isinstance(v, (float, np.floating)):
        text = f"{float(v):.2f}"
    else:
        text = str(v)
    return tex_escape(text) if tex else text.replace("|", "\\|")


def write_table(table: Any, stem: str | Path) -> tuple[Path, Path, Path]:
    """Write a DataFrame as stem.csv (raw numbers), stem.md and stem.tex (a booktabs
    `tabular`, for \\input inside the report's own table environment)."""
    stem = Path(stem)
    paths = stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")
    atomic_write(paths[0], "w", lambda f: table.to_csv(f, index=False))
    cols = list(table.columns)
    numeric = [table[c].dtype.kind in "iuf" for c in cols]
    body = [[_format_cell(v, tex=False) for v in row] for row in table.itertuples(index=False)]
    md = markdown.table(cols, ["---:" if n else ":---" for n in numeric], body)
    atomic_write(paths[1], "w", lambda f: f.write("\n".join(md) + "\n"))
    tex = (
        f"% written by resnet_tools.report.tables.write_table at {stamp()}; needs \\usepackage{{booktabs}}\n"
        + latex.tabular(
            "".join("r" if n else "l" for n in numeric),
            [_format_cell(c, tex=True) for c in cols],
            [[_format_cell(v, tex=True) for v in row] for row in table.itertuples(index=False)],
        )
    )
    atomic_write(paths[2], "w", lambda f: f.write(tex))
    return paths
