"""The README's results section and the full results page (docs/results.md), in Markdown, from the
same facts as the paper (resnet_tools.report.facts). The README's section is short: what produced the
numbers in a sentence, the results table, the reading of the seed's recipe closest to its Lite row, two
figures and a link; the page holds the rest (each run's provenance, the targets, the seed report's
claims beside our repetitions, the readings, the ablation, per-class results), each fact in one of the
two. The section replaces whatever lies between `<!-- results:start -->` and `<!-- results:end -->`
(each exactly once, in that order). `python scripts/update_readme_results.py` runs main.

Everything a results file contributes is escaped (markdown.md, markdown.code)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from resnet_lib import RECIPES
from resnet_tools.report import facts, words
from resnet_tools.report.facts import FULL_RUN_HINT, REGENERATE, ROOT, PerClass
from resnet_tools.report.markdown import cell, code, codes, md, spanning_row, table
from resnet_tools.results import ResultsError, best_run, finished_at, optimizer_label, written_at
from resnet_tools.safeio import atomic_write


START, END = "<!-- results:start -->", "<!-- results:end -->"


class MarkerError(ValueError):
    """The README lacks the markers, or has them more than once or out of order."""


def provenance_md(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Each group of runs' data, epochs, device and wall time (docs/results.md)."""
    lines = ["**What produced these numbers, run by run:**", ""]
    for names, data, epochs, device in words.provenance_groups(runs):
        wall = sum(runs[n]["wall_seconds"] for n in names)
        lines.append(
            f"- {codes(names)}: {md(data)}; {words.plural(epochs, 'epoch')} on "
            f"{md(device)}, {words.duration(wall)} wall time{' in all' if len(names) > 1 else ''}."
        )
    return lines + [""]


def provenance_sentence_md(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The README's provenance in one sentence (facts.provenance), and what the runs are not."""
    if not runs:
        return [
            "No training run has produced results yet, so no accuracy is shown here.",
            "",
            f"To produce them: `{FULL_RUN_HINT}`, then regenerate (below).",
        ]
    p, cov = facts.provenance(runs), facts.coverage(runs)
    when = f", finished {p.first}" + (f" to {p.last}" if p.last != p.first else "") if p.first else ""
    data = "; ".join(md(words.DATA_WORDS[k][0]) for k in p.data_kinds)
    epochs = words.plural(p.epochs[0], "epoch") if len(p.epochs) == 1 else f"{'/'.join(map(str, p.epochs))} epochs"
    text = (
        f"**What produced these numbers:** {words.plural(p.n_runs, 'run')} of ours "
        f"({words.plural(p.n_configs, 'configuration')}, seeds counted apart){when}, "
        f"{epochs} each, on {data}, on {', '.join(md(d) for d in p.devices)}; "
        + coverage_clause_md(cov, runs)
    )
    return [text, ""]


def coverage_clause_md(cov: facts.Coverage, runs: dict[str, dict[str, Any]]) -> str:
    """What the runs are not: official scores, CIFAR-10 results (facts.coverage)."""
    if cov.everything_full:
        return "all of them on the official CIFAR-10 files."
    if cov.jpeg and not cov.full:
        return (
            "none on the official CIFAR-10 files: the JPEG copy is the official split's 60,000 images, "
            "JPEG-compressed, so these are not official CIFAR-10 scores."
        )
    head = (
        "**No run here used the full CIFAR-10: these are not CIFAR-10 results, and they cannot be compared with "
        "the seed report's.**"
        if not cov.full
        else f"**Only {codes(cov.full)} used the full CIFAR-10; the other rows are not CIFAR-10 results.**"
    )
    return (
        f"{head} The full-data, 40-epoch results appear here once someone runs "
        f"`{FULL_RUN_HINT.split('#')[0].strip()}` on a machine with a GPU and regenerates this section "
        "(command below)."
    )


def results_table_md(runs: dict[str, dict[str, Any]]) -> list[str]:
    expected = facts.expected_runs()
    names = list(expected) + [n for n in runs if n not in expected]
    header = ["Run", "Optimizer", "Params", "Train acc (%)", "Val acc (%)", "Test acc (%)", "Seeds", "Epochs", "Data",
              "Device", "Wall time"]
    rows: list[list[str] | str] = []
    for name in names:
        res = runs.get(name)
        if res is None:
            rows.append(spanning_row([code(name), "*not measured*"], len(header)))
            continue
        acc = {k: words.pct_sd(res, k) for k in ("train_acc", "val_acc", "test_acc")}
        rows.append(
            [code(name), md(optimizer_label(res["config"])), f"{res['num_params']:,}", acc["train_acc"],
             acc["val_acc"], acc["test_acc"] + (" †" if res["final"].get("tta") else ""), str(facts.n_seeds(res)),
             str(facts.epochs_of(res)), md(words.data_short(res["data"])), md(res["device"]),
             words.duration(res["wall_seconds"])]
        )
    lines = table(header, [":---"] * 2 + ["---:"] * 6 + [":---"] * 2 + ["---:"], rows)
    lines += [
        "",
        "Accuracy of the final model: mean ± sample standard deviation over the seeds where a configuration "
        "ran with several (Seeds). Train: running accuracy over the last epoch's augmented batches. "
        "Val: the held-out validation split, which model selection uses. † test accuracy with flip "
        "test-time augmentation."
        + (" *Not measured*: no results file yet (`results/README.md` says why)." if len(names) > len(runs) else ""),
        "",
    ]
    return lines


def seed_md(runs: dict[str, dict[str, Any]]) -> list[str]:
    epochs = RECIPES["report"]["epochs"]
    lines = [
        f"**The seed report's claims** (copied from its results table: its numbers after {epochs} epochs on "
        "CIFAR-10, not runs of ours), beside our repetitions of the same runs. Δ only where our run used "
        f"all 60,000 CIFAR-10 images for {epochs} epochs (n/c: not comparable; ‡: on the JPEG copy of CIFAR-10, "
        "a different data version from the seed's).",
        "",
    ]
    header = ["Run", "Seed train (%)", "Seed test (%)", "Our train (%)", "Our test (%)", "Δ test"]
    rows: list[list[str] | str] = []
    for name, (s_train, s_test) in facts.seed_claims().items():
        res = runs.get(name)
        if res is None:
            rows.append(spanning_row([code(name), f"{s_train:.2f}", f"{s_test:.2f}", "*not measured*"], len(header)))
            continue
        delta = (
            f"{100 * res['final']['test_acc'] - s_test:+.2f}{words.delta_mark(res)}"
            if facts.comparable_to_seed(res)
            else "n/c"
        )
        fin = res["final"]
        rows.append([code(name), f"{s_train:.2f}", f"{s_test:.2f}", words.pct(fin["train_acc"]),
                     words.pct(fin["test_acc"]), delta])
    return lines + table(header, [":---"] + ["---:"] * 5, rows) + [""]


def targets_md(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Whether the recipes meet their targets on the full-size JPEG copy (facts.targets)."""
    lines = [
        f"**Targets** (40 epochs, full-size JPEG copy of CIFAR-10, mean test accuracy with flip TTA over "
        f"{facts.TARGET_SEEDS} seeds):",
        "",
    ]
    rows = [[cell(c) for c in row] for row in words.target_rows(runs)]
    return lines + table(["Run", "Target (%)", "Measured (%)", "Verdict"], [":---"] * 4, rows) + [""]


def ablation_md() -> list[str]:
    """The recipe ablation on validation (report/experiments/ablation.json)."""
    base, variants, data = facts.ablation()
    if base is None:
        return []
    lines = [
        "**Recipe ablation** (Lite, 40 epochs; a variant replaces `modern` only where its validation accuracy "
        "beats it by more than the seeds' noise, twice the difference's standard error: 2 SE). Runs of ours, " + data,
        "",
    ]
    header = ["Variant", "Change from `modern`", "Runs (seeds)", "Train (%)", "Val (%)", "Test (%)", "Δ val (points)",
              "Verdict"]
    rows = [[cell(c) for c in row] for row in words.ablation_rows(base, variants)]
    lines += table(header, [":---"] * 3 + ["---:"] * 4 + [":---"], rows)
    summary = words.ablation_summary(base, variants)
    return lines + ([""] + [summary] if summary else []) + [""]


def seed_readings_md() -> list[str]:
    """The readings of the seed report's recipe against the seed's Lite row (report/experiments/)."""
    readings, data = facts.seed_readings()
    if not readings:
        return []
    lines = [
        f"**Which reading of the seed's recipe reproduces its rows** ({words.seed_rows_text()} on official "
        "CIFAR-10)? Runs of ours, " + data,
        "",
    ]
    header = ["Reading", "Recipe", "Runs (seeds)", "Train (%)", "Test (%)", "Best test over epochs (%)",
              "Distance (points)"]
    rows = [[cell(c) for c in row] for row in words.reading_rows(readings)]
    lines += table(header, [":---"] * 3 + ["---:"] * 4, rows)
    lines += [
        "",
        "Train: running accuracy over the last epoch's batches, as the seed measured it; test: the final "
        "model, no TTA; mean ± sample standard deviation where a reading ran with several seeds. Best test over "
        "epochs: what a script that keeps its best test epoch reports, averaged over the seeds (a "
        "diagnostic of how the seed may have measured; nothing here is chosen by it). Distance: |Δ train| + "
        "|Δ test| of the means against the seed's row for the same model and optimizer.",
        "",
    ]
    return lines


def closest_reading_md() -> list[str]:
    """Which reading of the seed's recipe comes closest to its Lite row (the README; the table: docs)."""
    closest = words.closest_text(facts.seed_readings()[0])
    return [f"**Reading the seed's recipe.** {cell(closest)} (Every reading and its distance: the full results.)",
            ""] if closest else []


def per_class_md(runs: dict[str, dict[str, Any]], per_class: PerClass | None) -> list[str]:
    if per_class is None:
        return []
    focus = facts.per_class_focus(runs, per_class, per_class.accuracy)
    if focus is None:
        return []
    acc, hi, lo = focus.accuracy, focus.best, focus.worst
    text = (
        f"**Per class** ({code(focus.run)}, of the runs notebook 05 draws, one seed per configuration, the one "
        "with the highest validation accuracy): easiest "
        f"{', '.join(c for c, v in acc.items() if v == hi)} ({hi:.1f}%), hardest "
        f"{', '.join(c for c, v in acc.items() if v == lo)} ({lo:.1f}%)."
    )
    if focus.top_pair:
        p = focus.top_pair
        a, b = md(p["a"]), md(p["b"])
        text += f" Most confused pair: {a}/{b} ({p['ab']} {a} images predicted as {b}, {p['ba']} the other way)."
    if per_class.stale:
        text += " (Warning: notebook 05's per-class files are older than some results; rerun it.)"
    return [text, ""]


def figures_md(runs: dict[str, dict[str, Any]], results_dir: Path, figures_dir: Path, readme_dir: Path) -> list[str]:
    """One or two PNG figures, linked relative to the README; never one drawn before the
    results it shows (from another run)."""
    focus = best_run(runs)
    wanted = [
        ("improved_training_curves", "Improved ResNet: loss, accuracy and learning rate per epoch"),
        ("lite_training_curves", "Lite ResNet: loss, accuracy and learning rate per epoch"),
    ]
    if focus:
        wanted.insert(1, (f"confusion_matrix_{focus}", f"Confusion matrix of {md(focus)}"))
    lines = []
    for name, alt in wanted:
        png = figures_dir / f"{name}.png"
        if not png.is_file() or len(lines) == 2:
            continue
        shown = facts.figure_runs(name, runs)
        drawn = written_at(png)
        if drawn is None or all(finished_at(runs[r]) <= drawn for r in shown):
            rel = os.path.relpath(png.resolve(), readme_dir.resolve()).replace(os.sep, "/")
            lines.append(f"![{alt}]({rel})")
    return [*lines, ""] if lines else []


GENERATED = "<!-- Generated by scripts/update_readme_results.py from the results files: do not edit by hand. -->"
DOC = Path("docs") / "results.md"  # the full results, beside the README


def render_block(results_dir: Path, figures_dir: Path, readme_dir: Path) -> str:
    """The Markdown between the README's markers (markers excluded): provenance in a sentence, the
    results table, the closest reading of the seed's recipe, two figures and the link to DOC."""
    runs = facts.load_runs(results_dir)
    lines = [GENERATED, ""] + provenance_sentence_md(runs)
    if runs:
        lines += results_table_md(runs)
    lines += closest_reading_md()
    if runs:
        lines += figures_md(runs, results_dir, figures_dir, readme_dir)
    lines += [
        f"The full results, generated from the same files: [{DOC.as_posix()}]({DOC.as_posix()}) (each run's data, "
        "device and wall time; the targets; the seed report's claims beside our runs; every reading of its recipe; "
        "the recipe ablation; per-class results). The paper: [report/README.md](report/README.md).",
        "",
    ] + regenerate_md()
    return "\n".join(lines)


def render_doc(results_dir: Path) -> str:
    """DOC: the results the README leaves out, from the same facts."""
    runs = facts.load_runs(results_dir)
    per_class = facts.load_per_class(results_dir, runs)
    lines = ["# Results in full", "", "[Back to the README](../README.md)", "", GENERATED, "",
             "The README shows the results table; this page shows the rest, from the same results files.", ""]
    if runs:
        lines += provenance_md(runs) + targets_md(runs) + seed_md(runs)
    lines += seed_readings_md() + ablation_md()
    if runs:
        lines += per_class_md(runs, per_class)
    return "\n".join(lines + regenerate_md()).rstrip() + "\n"


def regenerate_md() -> list[str]:
    return [
        "Regenerate every result, figure, the paper (`report/report.pdf`), the README's results section and "
        f"`{DOC.as_posix()}`:",
        "",
        "```bash",
        REGENERATE,
        "```",
        "",
    ]


def replace_block(readme: str, block: str) -> str:
    """readme with the text between the markers replaced by block."""
    n_start, n_end = readme.count(START), readme.count(END)
    if n_start != 1 or n_end != 1:
        raise MarkerError(
            f"the README must contain {START} and {END} exactly once each "
            f"(found {n_start} and {n_end}); add them where the results section goes"
        )
    head, rest = readme.split(START)
    if END not in rest:
        raise MarkerError(f"{END} comes before {START} in the README")
    _, tail = rest.split(END)
    return f"{head}{START}\n{block.rstrip()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--results", default=os.environ.get("RESULTS_DIR") or str(ROOT / "results"))
    ap.add_argument("--figures", default=os.environ.get("FIGURES_DIR") or str(ROOT / "figures"))
    ap.add_argument("--doc", default=None, help=f"the full results page (default: {DOC} beside the README)")
    ap.add_argument("--stdout", action="store_true", help="print the block instead of writing the README")
    args = ap.parse_args(argv)
    readme = Path(args.readme)
    doc = Path(args.doc) if args.doc else readme.parent / DOC
    try:
        block = render_block(Path(args.results), Path(args.figures), readme.parent)
        if args.stdout:
            print(block)
            return 0
        text, full = replace_block(readme.read_text(), block), render_doc(Path(args.results))
        doc.parent.mkdir(parents=True, exist_ok=True)
    except (ResultsError, MarkerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write(readme, "w", lambda f: f.write(text))
    atomic_write(doc, "w", lambda f: f.write(full))
    print(f"results section of {readme} and {doc} regenerated from {args.results}")
    return 0


