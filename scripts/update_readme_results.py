#!/usr/bin/env python3
"""Write the README's results section from the results files, between two markers.

    python scripts/update_readme_results.py [--readme README.md] [--results results] [--figures figures] [--stdout]

Replaces whatever lies between `<!-- results:start -->` and `<!-- results:end -->` (each
must appear exactly once, in that order) with a block generated from RESULTS/<run>/results.json
and notebook 05's per-class CSV files, the same sources and caveats as the paper
(scripts/make_report_inputs.py): what produced the numbers, the results table, the seed
report's claims beside our repetitions, and a figure or two from FIGURES. --stdout prints
the block instead of writing the README.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # scripts/, the root

import make_report_inputs as mri  # noqa: E402
import resnet_lib as rl  # noqa: E402
from resnet_tools import results  # noqa: E402
from resnet_tools.results import finished_at, written_at  # noqa: E402
from resnet_tools.safeio import atomic_write  # noqa: E402

START, END = "<!-- results:start -->", "<!-- results:end -->"


class MarkerError(ValueError):
    """The README lacks the markers, or has them more than once or out of order."""


def md(text: Any) -> str:
    """Plain text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|")


def provenance_md(runs: dict[str, dict[str, Any]]) -> list[str]:
    if not runs:
        return [
            "No training run has produced results yet, so no accuracy is shown here.",
            "",
            f"To produce them: `{mri.FULL_RUN_HINT}`, then regenerate (below).",
        ]
    lines = ["**What produced these numbers:**", ""]
    for names, data, epochs, device in mri.provenance_groups(runs):
        wall = sum(runs[n]["wall_seconds"] for n in names)
        lines.append(
            f"- {', '.join(f'`{n}`' for n in names)}: {data}; {mri.plural(epochs, 'epoch')} on "
            f"{device}, {mri.duration(wall)} wall time{' in all' if len(names) > 1 else ''}."
        )
    lines.append("")
    full = [n for n, r in runs.items() if mri.is_full(r)]
    jpeg = [n for n, r in runs.items() if mri.is_jpeg_full(r)]
    missing = [n for n in mri.expected_runs() if n not in runs]
    if jpeg and not full:
        lines += [
            "> **No run here used the official CIFAR-10 files.** "
            + ", ".join(f"`{n}`" for n in jpeg)
            + f" used {mri.JPEG_NOTE} (‡)."
            + (
                " " + ", ".join(f"`{n}`" for n in missing) + " were not measured yet (`results/README.md`: which "
                "runs are missing, and why)."
                if missing
                else ""
            ),
            "",
        ]
    elif len(full) < len(runs):
        lines += [
            "> **"
            + (
                "No run here used the full CIFAR-10: these are not CIFAR-10 results, and they cannot be "
                "compared with the seed report's."
                if not full
                else "Only " + ", ".join(f"`{n}`" for n in full) + " used the full CIFAR-10; the other rows "
                "are not CIFAR-10 results."
            )
            + "** The full-data, 40-epoch results appear here once "
            f"someone runs `{mri.FULL_RUN_HINT.split('#')[0].strip()}` on a machine with a GPU and "
            "regenerates this section (command below).",
            "",
        ]
    return lines


def results_table_md(runs: dict[str, dict[str, Any]]) -> list[str]:
    expected = mri.expected_runs()
    names = list(expected) + [n for n in runs if n not in expected]
    lines = [
        "| Run | Optimizer | Params | Train acc (%) | Val acc (%) | Test acc (%) | Seeds | Epochs | Data | Device "
        "| Wall time |",
        "|:---|:---|---:|---:|---:|---:|---:|---:|:---|:---|---:|",
    ]
    for name in names:
        res = runs.get(name)
        if res is None:
            lines.append(f"| `{name}` | *not measured* | | | | | | | | | |")
            continue
        c, fin = res["config"], res["final"]
        acc = {k: mri.pct_sd(res, k, latex=False) for k in ("train_acc", "val_acc", "test_acc")}
        test = acc["test_acc"] + (" †" if fin.get("tta") else "")
        lines.append(
            f"| `{name}` | {md(results.optimizer_label(c))} | {res['num_params']:,} | {acc['train_acc']} | "
            f"{acc['val_acc']} | {test} | {mri.n_seeds(res)} | {mri.epochs_of(res)} | "
            f"{md(mri.data_short(res['data']))} | {md(res['device'])} | {mri.duration(res['wall_seconds'])} |"
        )
    lines += [
        "",
        "Accuracy of the final model: mean ± sample standard deviation over the seeds where a configuration "
        "ran with several (Seeds). Train: running accuracy over the last epoch's augmented batches. "
        "Val: the held-out validation split, which model selection uses. † test accuracy with flip "
        "test-time augmentation.",
        "",
    ]
    return lines


def seed_md(runs: dict[str, dict[str, Any]]) -> list[str]:
    epochs = rl.RECIPES["seed"]["epochs"]
    lines = [
        f"**The seed report's claims** (copied from its results table: its numbers after {epochs} epochs on "
        "CIFAR-10, not runs of ours), beside our repetitions of the same runs. Δ only where our run used "
        f"all 60,000 CIFAR-10 images for {epochs} epochs (n/c: not comparable; ‡: on the JPEG copy of CIFAR-10, "
        "a different data version from the seed's).",
        "",
        "| Run | Seed train (%) | Seed test (%) | Our train (%) | Our test (%) | Δ test |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    for name, (s_train, s_test) in mri.seed_claims().items():
        res = runs.get(name)
        if res is None:
            lines.append(f"| `{name}` | {s_train:.2f} | {s_test:.2f} | *not measured* | | |")
            continue
        delta = (
            f"{100 * res['final']['test_acc'] - s_test:+.2f}{mri.delta_mark(res)}"
            if mri.comparable_to_seed(res)
            else "n/c"
        )
        lines.append(
            f"| `{name}` | {s_train:.2f} | {s_test:.2f} | {mri.pct(res['final']['train_acc'])} | "
            f"{mri.pct(res['final']['test_acc'])} | {delta} |"
        )
    return lines + [""]


def targets_md(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Whether the recipes meet their targets on the full-size JPEG copy (make_report_inputs.TARGETS)."""
    lines = [
        f"**Targets** (40 epochs, full-size JPEG copy of CIFAR-10, mean test accuracy with flip TTA over "
        f"{mri.TARGET_SEEDS} seeds):",
        "",
        "| Run | Target (%) | Measured (%) | Verdict |",
        "|:---|:---|:---|:---|",
    ]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in mri.target_rows(runs)]
    return lines + [""]


def ablation_md() -> list[str]:
    """The recipe ablation on validation (report/experiments/ablation.json)."""
    base, variants, data = mri.ablation()
    if base is None:
        return []
    lines = [
        "**Recipe ablation** (Lite, 40 epochs; a variant replaces `modern` only where its validation accuracy "
        "beats it by more than the seeds' noise). Runs of ours, " + data,
        "",
        "| Variant | Change from `modern` | Runs (seeds) | Train (%) | Val (%) | Test (%) | Δ val (points) "
        "| Verdict |",
        "|:---|:---|:---|---:|---:|---:|---:|:---|",
    ]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in mri.ablation_rows(base, variants)]
    summary = mri.ablation_summary(base, variants)
    return lines + ([""] + [summary] if summary else []) + [""]


def seed_readings_md() -> list[str]:
    """The readings of the seed recipe against the seed's Lite row (report/experiments/)."""
    readings, data = mri.seed_readings()
    if not readings:
        return []
    lines = [
        f"**Which reading of the seed's recipe reproduces its rows** ({mri.seed_rows_text()} on official "
        "CIFAR-10)? Runs of ours, " + data,
        "",
        "| Reading | Recipe | Train (%) | Test (%) | Best test over epochs (%) | Distance (points) |",
        "|:---|:---|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in mri.reading_rows(readings)]
    lines += [
        "",
        "Train: running accuracy over the last epoch's batches, as the seed measured it; test: the final "
        "model, no TTA. Best test over epochs: what a script that keeps its best test epoch reports (a "
        "diagnostic of how the seed may have measured; nothing here is chosen by it). Distance: |Δ train| + "
        "|Δ test| against the seed's row for the same model and optimizer.",
        "",
    ]
    return lines


def per_class_md(runs: dict[str, dict[str, Any]], per_class: mri.PerClass | None) -> list[str]:
    if per_class is None:
        return []
    focus = mri.per_class_focus(runs, per_class, per_class.accuracy)
    if focus is None:
        return []
    acc, hi, lo = focus.accuracy, focus.best, focus.worst
    text = (
        f"**Per class** (`{focus.run}`, of the runs notebook 05 draws, one seed per configuration, the one with the "
        "highest validation accuracy): easiest "
        f"{', '.join(c for c, v in acc.items() if v == hi)} ({hi:.1f}%), hardest "
        f"{', '.join(c for c, v in acc.items() if v == lo)} ({lo:.1f}%)."
    )
    if focus.top_pair:
        p = focus.top_pair
        text += (
            f" Most confused pair: {p['a']}/{p['b']} ({p['ab']} {p['a']} images predicted as {p['b']}, "
            f"{p['ba']} the other way)."
        )
    if per_class.stale:
        text += " (Warning: notebook 05's per-class files are older than some results; rerun it.)"
    return [text, ""]


def figures_md(runs: dict[str, dict[str, Any]], results_dir: Path, figures_dir: Path, readme_dir: Path) -> list[str]:
    """One or two PNG figures, linked relative to the README; never one drawn before the
    results it shows (from another run)."""
    focus = mri.best_run(runs)
    wanted = [
        ("improved_training_curves", "Improved ResNet: loss, accuracy and learning rate per epoch"),
        ("lite_training_curves", "Lite ResNet: loss, accuracy and learning rate per epoch"),
    ]
    if focus:
        wanted.insert(1, (f"confusion_matrix_{focus}", f"Confusion matrix of {focus}"))
    lines = []
    for name, alt in wanted:
        png = figures_dir / f"{name}.png"
        if not png.is_file() or len(lines) == 2:
            continue
        shown = mri.figure_runs(name, runs)
        drawn = written_at(png)
        if drawn is None or all(finished_at(runs[r]) <= drawn for r in shown):
            rel = os.path.relpath(png.resolve(), readme_dir.resolve()).replace(os.sep, "/")
            lines.append(f"![{alt}]({rel})")
    return [*lines, ""] if lines else []


def render_block(results_dir: Path, figures_dir: Path, readme_dir: Path) -> str:
    """The Markdown between the markers (markers excluded)."""
    runs = mri.load_runs(results_dir)
    per_class = mri.load_per_class(results_dir, runs)
    lines = ["<!-- Generated by scripts/update_readme_results.py from the results files: do not edit by hand. -->", ""]
    lines += provenance_md(runs)
    if runs:
        lines += results_table_md(runs)
        lines += targets_md(runs)
        lines += seed_md(runs)
    lines += seed_readings_md()
    lines += ablation_md()
    if runs:
        lines += per_class_md(runs, per_class)
        lines += figures_md(runs, results_dir, figures_dir, readme_dir)
    lines += [
        "Regenerate every result, figure, the paper (`report/report.pdf`) and this section:",
        "",
        "```bash",
        mri.REGENERATE,
        "```",
        "",
    ]
    return "\n".join(lines)


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
    ap.add_argument("--readme", default=str(mri.ROOT / "README.md"))
    ap.add_argument("--results", default=os.environ.get("RESULTS_DIR") or str(mri.ROOT / "results"))
    ap.add_argument("--figures", default=os.environ.get("FIGURES_DIR") or str(mri.ROOT / "figures"))
    ap.add_argument("--stdout", action="store_true", help="print the block instead of writing the README")
    args = ap.parse_args(argv)
    readme = Path(args.readme)
    try:
        block = render_block(Path(args.results), Path(args.figures), readme.parent)
        if args.stdout:
            print(block)
            return 0
        text = replace_block(readme.read_text(), block)
    except (mri.ResultsError, MarkerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write(readme, "w", lambda f: f.write(text))
    print(f"results section of {readme} regenerated from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
