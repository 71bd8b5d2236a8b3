"""The paper's figure fragments (fig_*.tex): which figures the notebooks
drew (facts.collect_figures), where pdflatex finds them, and their captions. A figure drawn from one
run per configuration says so, and which seed, rather than pointing at the table of means."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from resnet_tools.report import facts, latex
from resnet_tools.report.facts import Figures, epochs_of, expected_runs, key_runs
from resnet_tools.report.latex import missing_figures_note, stale_note, tex, tt_list
from resnet_tools.report.words import data_brief, duration, plural
from resnet_tools.results import ResultsError, best_run


def tex_path(path: Path, tex_dir: Path) -> str:
    """A figure path as \\includegraphics should see it from the folder pdflatex runs in."""
    rel = os.path.relpath(path.resolve(), tex_dir.resolve()).replace(os.sep, "/")
    bad = sorted(set(rel) & set("%#&{}~^\\$") | {c for c in rel if not " " <= c <= "~"})  # LaTeX's specials, non-ASCII
    if bad:
        raise ResultsError(
            f"{path}: LaTeX cannot include a file whose path contains {' '.join(bad)}; "
            "move the figures folder (FIGURES_DIR) to a plainer path"
        )
    return rel


def figure_tex(
    path: Path | None, caption: str, label: str, tex_dir: Path, wide: bool = False, width: str = ""
) -> str:
    """latex.figure_tex for a figure file (None: no figure), its path as pdflatex in tex_dir sees it."""
    return latex.figure_tex(tex_path(path, tex_dir) if path else None, caption, label, wide=wide, width=width)


def provenance_brief(runs: dict[str, dict[str, Any]]) -> str:
    """Data, epochs, device and wall time per group of runs, for table and figure captions."""
    if not runs:
        return "no results file (\\texttt{results.json}) was found for these runs."
    groups: dict[tuple[str, int, str], list[str]] = {}
    for name, res in runs.items():
        groups.setdefault((data_brief(res["data"]), epochs_of(res), str(res["device"])), []).append(name)
    parts = []
    for (data, epochs, device), names in groups.items():
        wall = sum(runs[n]["wall_seconds"] for n in names)
        who = "" if len(groups) == 1 else tt_list(names) + ": "
        parts.append(
            f"{who}{tex(data)}; {plural(epochs, 'epoch')}; {tex(device)}; "
            f"wall time {tex(duration(wall))}{' in all' if len(names) > 1 else ''}"
        )
    return "; ".join(parts) + "."


def provenance_ref(group: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]]) -> str:
    """What a figure or secondary table says about its runs: a pointer to the results table,
    which states data, epochs and device once, or, where these runs differ from each other in
    data or epochs, which runs used what (a comparison across them is then not like for like)."""
    if not group:
        return "No results file (\\texttt{results.json}) was found for these runs."
    kinds = {(data_brief(r["data"]), epochs_of(r)) for r in group.values()}
    if len(kinds) == 1:
        return "Runs as in Table~\\ref{tab:results}."
    return "These runs differ in data or epochs, so they do not compare like for like: " + provenance_brief(group)


def one_run_each(group: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]]) -> str:
    """A caption's provenance for a figure of one run per configuration (facts.drawn_seeds): which
    seed it shows, which table rows average more, and the data and epochs; where the runs differ in
    data or epochs, provenance_ref's warning instead."""
    drawn = facts.drawn_seeds(group, runs)
    kinds = {(data_brief(r["data"]), epochs_of(r)) for r in group.values()}
    if not drawn or len(kinds) != 1:
        return provenance_ref(group, runs)
    seeds = {s for _, s, _ in drawn}
    which = f"seed {drawn[0][1]}" if len(seeds) == 1 else ", ".join(f"{tt_list([n])} seed {s}" for n, s, _ in drawn)
    text = f"One run per configuration, its first seed ({which})"
    averaged = [(n, k) for n, _, k in drawn if k > 1]
    if averaged:
        counts = "/".join(sorted({str(k) for _, k in averaged}))
        text += f"; Table~\\ref{{tab:results}} gives the mean of {counts} seeds for {tt_list(n for n, _ in averaged)}"
    data, epochs = next(iter(kinds))
    return f"{text}. Data: {tex(data)}; {plural(epochs, 'epoch')}."


def data_figures_tex(figs: Figures, tex_dir: Path) -> str:
    out = figure_tex(
        figs.get("samples_per_class"),
        "Training images, a seeded sample per class (notebook 01).",
        "fig:samples",
        tex_dir,
    )
    out += figure_tex(
        figs.get("augmentation_preview"),
        "The \\texttt{modern} recipe's augmentation: random crops of "
        "the zero-padded image and horizontal flips, several draws per image (notebook 01).",
        "fig:augment",
        tex_dir,
    )
    return out + missing_figures_note([n for n in ("samples_per_class", "augmentation_preview") if n in figs.missing])


def curve_figures_tex(figs: Figures, runs: dict[str, dict[str, Any]], tex_dir: Path) -> str:
    out = ""
    for model, nb in (("lite", "02"), ("improved", "03")):
        group = {n: runs[n] for n in facts.figure_runs(f"{model}_training_curves", runs)}
        prov = one_run_each(group, runs)
        out += figure_tex(
            figs.get(f"{model}_training_curves"),
            f"{model.capitalize()} model: loss, accuracy and learning rate per epoch (notebook {nb}). {prov}"
            + stale_note(figs.newer_than(f"{model}_training_curves")),
            f"fig:{model}curves",
            tex_dir,
            wide=True,
            width="0.85\\textwidth",
        )
    shown = [f"Figure~\\ref{{fig:{m}curves}}" for m in ("lite", "improved") if figs.get(f"{m}_training_curves")]
    intro = (
        (" and ".join(shown) + (" shows" if len(shown) == 1 else " show") + " the training curves.\n") if shown else ""
    )
    return (
        intro
        + out
        + missing_figures_note([n for n in ("lite_training_curves", "improved_training_curves") if n in figs.missing])
    )


def optimizer_figure_tex(figs: Figures, runs: dict[str, dict[str, Any]], tex_dir: Path) -> str:
    group = {n: runs[n] for n in expected_runs() if n.startswith("improved-") and n in runs}
    return figure_tex(
        figs.get("optimizer_comparison"),
        "Improved model under one budget: training (dashed) and "
        "validation (solid) curves of the three optimizer settings (notebook 04). "
        + one_run_each(group, runs)
        + stale_note(figs.newer_than("optimizer_comparison")),
        "fig:optimizer",
        tex_dir,
        wide=True,
        width="0.85\\textwidth",
    ) + missing_figures_note(["optimizer_comparison"] if "optimizer_comparison" in figs.missing else [])


def confusion_grid(
    cms: list[tuple[str, Path]],
    runs: dict[str, dict[str, Any]],
    tex_dir: Path,
    width: str,
    per_row: int,
    caption: str,
    label: str,
    note: str,
) -> str:
    cells = [
        f"\\begin{{minipage}}[t]{{{width}}}\\centering\n"
        f"\\includegraphics[width=\\linewidth]{{{tex_path(p, tex_dir)}}}\\\\\\footnotesize\\texttt{{{tex(r)}}}"
        f"\n\\end{{minipage}}"
        for r, p in cms
    ]
    rows = ["\\hfill".join(cells[i : i + per_row]) for i in range(0, len(cells), per_row)]
    return (
        "\\begin{figure*}[tbp]\n\\centering\n"
        + "\\\\[6pt]\n".join(rows)
        + "\n\\caption{"
        + caption
        + one_run_each({r: runs[r] for r, _ in cms}, runs)
        + note
        + "}\\label{"
        + label
        + "}\n\\end{figure*}\n"
    )


def confusion_figures_tex(figs: Figures, runs: dict[str, dict[str, Any]], tex_dir: Path) -> str:
    """Every run's confusion matrix in one figure, on one page: each model's best run by validation
    accuracy first, two to a row up to four matrices (a readable size), three to a row beyond."""
    key = key_runs(runs)
    order = key + [r for r in runs if r not in key]
    cms = [(r, figs.get(f"confusion_matrix_{r}")) for r in order if figs.get(f"confusion_matrix_{r}")]
    out = ""
    if cms:
        two = len(cms) <= 4
        first = [f"\\texttt{{{tex(r)}}}" for r, _ in cms if r in key]
        out += confusion_grid(
            cms,
            runs,
            tex_dir,
            "0.46\\textwidth" if two else "0.32\\textwidth",
            2 if two else 3,
            "Confusion matrices on the test split (rows: true class, each normalized to 100\\%; notebook 05)"
            + (f"; first each model's run with the highest validation accuracy ({', '.join(first)})" if first else "")
            + ". ",
            "fig:confusion",
            stale_note(figs.newer_than(*(f"confusion_matrix_{r}" for r, _ in cms))),
        )
    out += figure_tex(
        figs.get("per_class_accuracy"),
        "Test accuracy per class, one bar per run (notebook 05). "
        + one_run_each(runs, runs)
        + stale_note(figs.newer_than("per_class_accuracy")),
        "fig:perclass",
        tex_dir,
        wide=True,
        width="0.85\\textwidth",
    )
    focus = best_run(runs)
    if focus:
        out += figure_tex(
            figs.get(f"misclassified_{focus}"),
            f"A seeded random sample of \\texttt{{{tex(focus)}}}'s "
            "misclassified test images, with the predicted class's probability (notebook 05)."
            + stale_note(figs.newer_than(f"misclassified_{focus}")),
            "fig:misclassified",
            tex_dir,
            wide=True,
            width="0.8\\textwidth",
        )
    missing = [n for n in figs.missing if n.startswith("confusion_matrix_") or n == "per_class_accuracy"]
    return out + missing_figures_note(missing)

