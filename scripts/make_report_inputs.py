#!/usr/bin/env python3
"""Generate every number, table and figure reference the report shows, from results files.

    python scripts/make_report_inputs.py [--results results] [--figures figures] [--out report/generated]

Reads what the notebooks wrote (the single source of truth):
  RESULTS/<run>/results.json          one training run (resnet_tools.job.train_and_evaluate)
  RESULTS/per_class_accuracy.csv      notebook 05: test accuracy (%) per class and run
  RESULTS/confused_pairs.csv          notebook 05: the most confused class pairs per run
  FIGURES/<name>.pdf (or .png)        the notebooks' figures

and writes LaTeX fragments into OUT (numbers.tex, results_table.tex, ...), which
report/report.tex `\\input`s, plus OUT/manifest.json (what was found). Missing runs,
figures or CSV files are not errors: the fragments say "not run" / "not available", so the
paper builds from a partial or smoke run and says what it lacks. The architecture tables,
parameter counts and recipes come from resnet_lib itself. No number is typed here, except
the seed report's own claims, which live in resnet_lib.SEED_REPORTED and are labelled as
the seed's wherever they appear.

scripts/update_readme_results.py renders the same content as Markdown for the README.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import resnet_lib as rl  # noqa: E402
from resnet_tools import safeio  # noqa: E402
from resnet_tools import results  # noqa: E402

# The one command that regenerates every result, figure, the paper and the README section
# (the notebooks write results/ and figures/; `make report` reads them).
# `make run` with no DATA_DIR uses data/ and downloads the official archive there if missing.
REGENERATE = "make run && make report && .venv/bin/python scripts/update_readme_results.py"
# How to get the full-CIFAR-10 numbers: the recipes' 40 epochs on the official data, on a GPU.
FULL_RUN_HINT = "make run   # on a machine with a GPU: full CIFAR-10 (downloaded to data/ if missing), 40 epochs"

# The shared real subset (../shared/data/cifar10-mini/README.md): real CIFAR-10 training
# images; its test_batch is held-out *training* images, not the official test set.
MINI_NAME = "cifar10-mini"

ResultsError = results.ResultsError


# ---------------------------------------------------------------------------------------
# Which runs the report expects: the notebooks' five, named by resnet_lib.run_name
# ---------------------------------------------------------------------------------------
@functools.cache
def expected_runs() -> tuple[str, ...]:
    """The runs the notebooks make, in the report's order (resnet_tools.results.expected_runs)."""
    return tuple(results.expected_runs())


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def load_runs(results_dir: Path) -> dict[str, dict[str, Any]]:
    """{configuration: its runs merged over seeds (resnet_tools.results.merge_seeds: mean in
    "final", std in "final_std", per-seed values in "seeds")}, in load_results' order."""
    return results.merge_seeds(results.load_results(results_dir)) if results_dir.is_dir() else {}


def n_seeds(res: dict[str, Any]) -> int:
    return res.get("seeds", {}).get("n", 1)


def pct_sd(res: dict[str, Any], key: str, latex: bool = True) -> str:
    """Mean accuracy in %, with "+- std" over the seeds where there are several."""
    std = res.get("final_std", {}).get(key, math.nan)
    text = pct(res["final"].get(key))
    if n_seeds(res) < 2 or std is None or math.isnan(std) or text == "--":
        return text
    sign = "$\\pm$" if latex else "±"
    return f"{text} {sign} {100 * std:.2f}"


def read_csv(path: Path) -> list[dict[str, str]] | None:
    """Rows of a CSV file as dicts, or None if it does not exist."""
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@dataclass
class PerClass:
    """Notebook 05's per-class test accuracy (%) and confused pairs, checked for layout."""

    accuracy: dict[str, dict[str, float]]  # run -> class -> accuracy in %
    pairs: dict[str, list[dict[str, Any]]]  # run -> most confused pairs, most first
    stale: list[str]  # runs whose results.json is newer than the CSV file


def load_per_class(results_dir: Path, runs: dict[str, dict[str, Any]]) -> PerClass | None:
    """Notebook 05's tables, or None if it has not run. Raises ResultsError on a layout
    this script does not understand (so a change in the notebook is noticed, not hidden)."""
    acc_path, pairs_path = results_dir / "per_class_accuracy.csv", results_dir / "confused_pairs.csv"
    rows = read_csv(acc_path)
    if rows is None:
        return None
    if not rows or "class" not in rows[0]:
        raise ResultsError(f"{acc_path}: expected a 'class' column and one column per run")
    classes = [r["class"] for r in rows]
    if classes != list(rl.CLASSES):
        raise ResultsError(f"{acc_path}: classes {classes} are not CIFAR-10's {list(rl.CLASSES)}")
    try:
        accuracy = {run: {r["class"]: float(r[run]) for r in rows} for run in rows[0] if run != "class"}
    except ValueError as e:
        raise ResultsError(f"{acc_path}: non-numeric accuracy ({e})") from None
    pairs: dict[str, list[dict[str, Any]]] = {}
    for r in read_csv(pairs_path) or []:
        try:
            pairs.setdefault(r["run"], []).append(
                {
                    "a": r["class A"],
                    "b": r["class B"],
                    "ab": int(r["A predicted as B"]),
                    "ba": int(r["B predicted as A"]),
                    "total": int(r["confusions"]),
                    "pct": float(r["% of A and B test images"]),
                }
            )
        except (KeyError, ValueError) as e:
            raise ResultsError(f"{pairs_path}: unexpected layout ({type(e).__name__}: {e})") from None
    written = results.written_at(acc_path)  # None: no stamp (written before stamps), never called stale
    stale = [run for run in accuracy if run in runs and written and results.finished_at(runs[run]) > written]
    return PerClass(accuracy, pairs, stale)


def find_figure(figures_dir: Path, name: str) -> Path | None:
    """FIGURES/name.pdf (vector) or else name.png, or None."""
    for ext in (".pdf", ".png"):
        p = figures_dir / f"{name}{ext}"
        if p.is_file():
            return p
    return None


# ---------------------------------------------------------------------------------------
# Facts about a run, as plain values (shared by the LaTeX and the Markdown renderers)
# ---------------------------------------------------------------------------------------
def pct(x: float | None, digits: int = 2) -> str:
    """0.8987 -> '89.87'; None or NaN -> '--'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "--"
    return f"{100 * x:.{digits}f}"


def duration(seconds: float | None) -> str:
    """Seconds as '42 s', '3.5 min' or '1.25 h'."""
    if seconds is None:
        return "--"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def epochs_of(res: dict[str, Any]) -> int:
    """Completed epochs (the history's length)."""
    return len(res["history"].get("epoch", []))


def data_kind(d: dict[str, Any]) -> str:
    """'full' (the official 50,000 + 10,000), 'jpeg' (the full JPEG copy), 'official-subset',
    'mini' or 'other', from the run's data label (resnet_tools.results.data_label)."""
    label = results.data_label(d)
    full = d.get("n_test") == results.FULL_TEST and d.get("n_train", 0) + d.get("n_val", 0) == results.FULL_TRAIN
    if label == "CIFAR-10 (official)":
        return "full" if full else "official-subset"
    if label == "CIFAR-10 (JPEG copy)":
        return "jpeg" if full else "other"
    if label.startswith("subset of CIFAR-10 (official)"):
        return "official-subset"
    return "mini" if Path(str(d.get("root", ""))).name == MINI_NAME else "other"


def data_short(d: dict[str, Any]) -> str:
    """A table cell: which data, in a few words."""
    return {
        "full": "CIFAR-10",
        "jpeg": "CIFAR-10 (JPEG copy)",
        "official-subset": "CIFAR-10 subset",
        "mini": "real subset",
        "other": "non-official",
    }[data_kind(d)]


def data_sentence(d: dict[str, Any]) -> str:
    """What the data was, with its split sizes and what its test split is (plain text)."""
    sizes = (
        f"{d.get('n_train', 0):,} training, {d.get('n_val', 0):,} validation and {d.get('n_test', 0):,} test images"
    )
    kind = data_kind(d)
    if kind == "full":
        return f"the full official CIFAR-10 ({sizes}; the test images are the official test set)"
    if kind == "jpeg":
        return (
            f"CIFAR-10 (JPEG copy): all 60,000 images of the official split as JPEG files ({sizes}); "
            "JPEG-compressed pixels, so accuracies are not official CIFAR-10 scores"
        )
    if kind == "official-subset":
        return (
            f"a subset of the official CIFAR-10 files ({sizes}); accuracies on so few images "
            "are not CIFAR-10 test scores"
        )
    if kind == "mini":
        return (
            f"the real-image subset {MINI_NAME} ({sizes}); its test split is held-out CIFAR-10 "
            "training images, not the official test set, so accuracies are a learning signal, not CIFAR-10 test scores"
        )
    name = results.data_label(d)
    return (
        f"'{name}' ({sizes}; its files differ from the official CIFAR-10), "
        "so accuracies are not CIFAR-10 test scores"
    )


def provenance_groups(runs: dict[str, dict[str, Any]]) -> list[tuple[list[str], str, int, str]]:
    """Runs grouped by (data sentence, epochs, device): [(run names, data, epochs, device)]."""
    groups: dict[tuple[str, int, str], list[str]] = {}
    for name, res in runs.items():
        groups.setdefault((data_sentence(res["data"]), epochs_of(res), str(res["device"])), []).append(name)
    return [(names, d, e, dev) for (d, e, dev), names in groups.items()]


def is_jpeg_full(res: dict[str, Any]) -> bool:
    """All 60,000 images, as the JPEG copy of CIFAR-10: full size, but not the official pixels."""
    return data_kind(res["data"]) == "jpeg"


JPEG_NOTE = (
    "the JPEG copy of CIFAR-10 (the official split's 60,000 images, JPEG-compressed, about 30 dB PSNR against the "
    "official pixels): full size, but not official CIFAR-10 scores; beside the seed report's numbers they stand as "
    "a different data version"
)


def is_full(res: dict[str, Any]) -> bool:
    return data_kind(res["data"]) == "full"


def comparable_to_seed(res: dict[str, Any]) -> bool:
    """All 60,000 CIFAR-10 images (official files, or the JPEG copy: a different data version,
    marked as such) and the seed's epoch count: the only runs whose numbers may stand beside
    the seed report's."""
    return data_kind(res["data"]) in ("full", "jpeg") and epochs_of(res) == rl.RECIPES["seed"]["epochs"]


def delta_mark(res: dict[str, Any]) -> str:
    """A Δ against the seed's number on the JPEG copy is across data versions: mark it."""
    return "‡" if data_kind(res["data"]) == "jpeg" else ""


# The seed-recipe reading experiments (issue: which reading of the report's recipe reproduces
# its numbers): their results.json files and an index saying what each run is, committed in
# report/experiments/ (small JSON, no checkpoints).
EXPERIMENTS = ROOT / "report" / "experiments"


class Reading(NamedTuple):
    name: str
    what: str  # the reading in words
    res: dict[str, Any] | None  # its results.json, None where not measured
    note: str  # where not measured: why


def seed_readings(folder: Path | None = None) -> tuple[list[Reading], str]:
    """([Reading], the data note) from folder/index.json (default EXPERIMENTS) and the results
    files it names."""
    folder = folder or EXPERIMENTS
    index_path = folder / "index.json"
    if not index_path.is_file():
        return [], ""
    index = json.loads(index_path.read_text())
    out = []
    for item in index["readings"]:
        path = folder / item["file"] if item.get("file") else None
        res = json.loads(path.read_text()) if path and path.is_file() else None
        out.append(Reading(item["name"], item["what"], res, item.get("note", "not measured")))
    return out, index.get("data", "")


# The recipe ablation (issue: recipes chosen on validation at full size): report/experiments/
# ablation.json names the baseline's runs (the `modern` recipe, several seeds) and each variant's
# runs (one field changed); the results.json files sit beside it. Chosen by validation accuracy only.
class Variant(NamedTuple):
    name: str
    what: str  # the change, in words and as CLI options
    res: dict[str, Any] | None  # results.merge_seeds record over its runs, None where not measured
    note: str  # where not measured: why
    # A diagnostic breaks the recipe's budget (e.g. twice the epochs) to ask what holds a model back;
    # it is never a candidate to replace the baseline.
    diagnostic: bool = False


def ablation(folder: Path | None = None) -> tuple[Variant | None, list[Variant], str]:
    """(baseline, [variants], data note) from folder/ablation.json (default EXPERIMENTS); each
    with its runs merged over seeds. (None, [], "") where there is no ablation index."""
    folder = folder or EXPERIMENTS
    path = folder / "ablation.json"
    if not path.is_file():
        return None, [], ""
    index = json.loads(path.read_text())

    def variant(item: dict[str, Any]) -> Variant:
        runs = {f: json.loads((folder / f).read_text()) for f in item.get("files", []) if (folder / f).is_file()}
        merged = next(iter(results.merge_seeds(runs).values())) if runs else None
        note, diagnostic = item.get("note", "not measured"), bool(item.get("diagnostic", False))
        return Variant(item["name"], item["what"], merged, note, diagnostic)

    return variant(index["baseline"]), [variant(v) for v in index["variants"]], index.get("data", "")


def ablation_rows(base: Variant, variants: list[Variant]) -> list[list[str]]:
    """Plain-text cells: variant, change, runs (seeds), training (running), validation and test
    accuracy (mean +- std), Δ validation against the baseline (points), and whether that
    difference exceeds the noise."""
    rows = []
    for v in [base, *variants]:
        if v.res is None:
            rows.append([v.name, v.what, "0", "--", "--", "--", "--", v.note])
            continue
        seeds = ", ".join(str(k) for k in v.res.get("seeds", {}).get("seeds", [v.res["config"].get("seed", 0)]))
        if v is base:
            delta, verdict = "", "baseline"
        else:
            vd = results.difference_verdict(v.res, base.res, "val_acc")
            delta, verdict = f"{vd.diff:+.2f}", ("exceeds the noise: " if vd.holds else "") + vd.text
            if v.diagnostic:
                verdict = "diagnostic, not a candidate: " + verdict
        rows.append(
            [
                v.name,
                v.what,
                f"{n_seeds(v.res)} ({seeds})",
                pct_sd(v.res, "train_acc", latex=False),
                pct_sd(v.res, "val_acc", latex=False),
                pct_sd(v.res, "test_acc", latex=False),
                delta,
                verdict,
            ]
        )
    return rows


def ablation_summary(base: Variant, variants: list[Variant]) -> str:
    """One sentence on what the measured variants did to the fit and to validation accuracy, or ""."""
    measured = [v for v in variants if v.res is not None]
    if base.res is None or not measured:
        return ""

    def delta(v: Variant, key: str) -> float:
        return 100 * (v.res["final"][key] - base.res["final"][key])

    def change(v: Variant) -> str:
        if v.res.get("evaluation"):  # the baseline's own models evaluated otherwise (scripts/screen_tta.py)
            return f"{v.name} (evaluation only): validation {delta(v, 'val_acc'):+.2f} points"
        return f"{v.name}: training {delta(v, 'train_acc'):+.2f}, validation {delta(v, 'val_acc'):+.2f} points"

    candidates = [v for v in measured if not v.diagnostic]
    diagnostics = [v for v in measured if v.diagnostic]
    text = ""
    if candidates:
        text = "Against the baseline's mean, " + "; ".join(change(v) for v in candidates) + "."
    noise = 2 * 100 * base.res.get("final_std", {}).get("val_acc", math.nan)
    if candidates and not math.isnan(noise) and all(delta(v, "val_acc") <= noise for v in candidates):
        text += (
            " No variant raised validation accuracy by more than twice the baseline's seed-to-seed deviation "
            f"({noise:.2f} points): none of these changes helped here."
        )
    if diagnostics:
        text += " Outside the budget (diagnostics, no candidates): " + "; ".join(change(v) for v in diagnostics) + "."
    if any(n_seeds(v.res) < 2 for v in measured):
        text += " Variants with one seed are a screening, not a finding."
    return text.strip()


def ablation_tex(folder: Path | None = None) -> str:
    base, variants, data = ablation(folder)
    if base is None:
        return "No recipe ablation has been measured in this build.\n"
    rows = [[tex_cell(c) for c in row] for row in ablation_rows(base, variants)]
    for row in rows:  # CLI options: "--" would print as an en dash
        row[1] = row[1].replace("--", "-{}-")
    body = tabular(
        "@{}p{0.13\\linewidth}p{0.2\\linewidth}lrrrrp{0.2\\linewidth}@{}",
        [
            "Variant",
            "Change from \\texttt{modern}",
            "Runs (seeds)",
            "Train",
            "Val",
            "Test",
            "$\\Delta$ val",
            "Verdict",
        ],
        rows,
    )
    caption = (
        "Recipe ablation, Lite model, 40 epochs: accuracy (\\%) of the final model, mean $\\pm$ sample standard "
        "deviation over the seeds; train: running accuracy over the last epoch's augmented batches; validation "
        "on the 5{,}000 held-out training images (what a variant is chosen by), test with flip TTA for reporting "
        "only. $\\Delta$ val: points against the baseline; a variant replaces the baseline only where the "
        "difference exceeds twice its standard error over seeds. " + tex(data)
    )
    summary = ablation_summary(base, variants)
    return table_env(body, caption, "tab:ablation", wide=True) + (tex(summary) + "\n" if summary else "")


def best_test_over_epochs(res: dict[str, Any]) -> float | None:
    """Highest per-epoch test accuracy (no TTA): what a script that keeps the best test epoch
    reports. A diagnostic of how the seed may have measured, never a model-selection rule here."""
    accs = [a for a in res["history"].get("test_acc", []) if a is not None]
    return max(accs) if accs else None


def seed_row_of(res: dict[str, Any]) -> tuple[float, float] | None:
    """(train %, test %) of the seed report's row for the run's model and optimizer (a reading of
    the Improved model's SGD run is measured against the seed's Improved SGD row); None if it has none."""
    c = res["config"]
    return seed_claims().get(results.run_name(dict(model=c["model"], recipe="seed", optimizer=c["optimizer"])))


def reading_rows(readings: list[Reading]) -> list[list[str]]:
    """Plain-text cells: reading, what, train, test (final), best test over epochs, distance to
    the seed's row for the same model and optimizer (|Δ train| + |Δ test|, points)."""
    rows = []
    for r in readings:
        claim = seed_row_of(r.res) if r.res is not None else None
        if claim is None:
            rows.append([r.name, r.what, "--", "--", "--", r.note])
            continue
        (s_train, s_test), train, test = claim, 100 * r.res["final"]["train_acc"], 100 * r.res["final"]["test_acc"]
        dist = abs(train - s_train) + abs(test - s_test)
        best = best_test_over_epochs(r.res)
        rows.append([r.name, r.what, f"{train:.2f}", f"{test:.2f}", pct(best), f"{dist:.2f}"])
    return rows


def seed_rows_text(escape_pct: bool = False) -> str:
    """The seed's rows in words: 'Lite SGD 79.12% train, 79.87% test; ...' (the readings' reference)."""
    pct_sign = "\\%" if escape_pct else "%"
    parts = []
    for (model, recipe, optimizer), (train, test) in results.SEED_REPORTED.items():
        label = f"{model.capitalize()} {'SGD' if optimizer == 'sgd' else optimizer.capitalize()}"
        parts.append(f"{label} {train:.2f}{pct_sign} train, {test:.2f}{pct_sign} test")
    return "; ".join(parts)


def seed_readings_tex(folder: Path | None = None) -> str:
    readings, data = seed_readings(folder)
    if not readings:
        return "No reading of the seed recipe has been measured in this build.\n"
    rows = [[tex(c) for c in row] for row in reading_rows(readings)]
    body = tabular(
        "@{}p{0.16\\linewidth}p{0.34\\linewidth}rrrr@{}",
        ["Reading", "Recipe", "Train", "Test", "Best test", "Distance"],
        rows,
    )
    caption = (
        "Readings of the seed report's recipe, each against the seed's row for the same model and optimizer "
        f"({seed_rows_text(escape_pct=True)} on official CIFAR-10). Train: running accuracy over the last "
        "epoch's batches; test: "
        "the final model, no TTA; best test: the highest per-epoch test accuracy (what a script that keeps its "
        "best test epoch would report; a diagnostic, never used to choose anything); distance: $|\\Delta$train$| + "
        "|\\Delta$test$|$ in points. " + tex(data)
    )
    return table_env(body, caption, "tab:readings", wide=True)


selection_accuracy, best_run = results.selection_accuracy, results.best_run


def test_halfwidth(acc: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy measured on n
    images (binomial standard error x 1.96): the test set's own sampling noise."""
    return 1.96 * math.sqrt(max(acc * (1 - acc), 0.0) / n) if n > 0 else math.nan


def seed_claims() -> dict[str, tuple[float, float]]:
    """{run name: (train %, test %)} as the seed report states them (resnet_lib.SEED_REPORTED,
    copied from ../shared/seed/mini-project-report.md; the seed's claims, not our runs)."""
    out = {}
    for (model, recipe, optimizer), numbers in results.SEED_REPORTED.items():
        out[results.run_name(dict(model=model, recipe=recipe, optimizer=optimizer))] = numbers
    return out


def median(xs: Iterable[float]) -> float | None:
    v = sorted(x for x in xs if x is not None and not math.isnan(x))
    if not v:
        return None
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def throughput(res: dict[str, Any]) -> float | None:
    """Median training images/s over the epochs after the first (warm-up, compilation)."""
    ips = res["history"].get("images_per_sec") or []
    return median(ips[1:] or ips)


# ---------------------------------------------------------------------------------------
# LaTeX
# ---------------------------------------------------------------------------------------
tex = results.tex_escape  # one LaTeX escaper for every table


def tex_cell(text: str) -> str:
    """A plain-text table cell (pct_sd(..., latex=False): "83.22 ± 0.25") escaped for LaTeX."""
    return tex(text).replace("±", "$\\pm$")


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


def tex_path(path: Path, tex_dir: Path) -> str:
    """A figure path as \\includegraphics should see it from the folder pdflatex runs in."""
    rel = os.path.relpath(path.resolve(), tex_dir.resolve()).replace(os.sep, "/")
    bad = sorted(set(rel) & set("%#&{}~^\\$"))
    if bad:
        raise ResultsError(
            f"{path}: LaTeX cannot include a file whose path contains {' '.join(bad)}; "
            "move the figures folder (FIGURES_DIR) to a plainer path"
        )
    return rel


def data_brief(d: dict[str, Any]) -> str:
    """Which data in a short phrase, with split sizes and the caveat that matters (plain text)."""
    sizes = f"{d.get('n_train', 0):,}/{d.get('n_val', 0):,}/{d.get('n_test', 0):,} train/val/test images"
    kind = data_kind(d)
    if kind == "full":
        return f"full CIFAR-10, {sizes}, official test set"
    if kind == "jpeg":
        return f"CIFAR-10 (JPEG copy), {sizes}, official test split as JPEG"
    if kind == "official-subset":
        return f"subset of the official CIFAR-10 files, {sizes}"
    if kind == "mini":
        return f"real subset {MINI_NAME}, {sizes}, test = held-out training images"
    return f"non-official folder '{Path(str(d.get('root', ''))).name}', {sizes}"


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


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


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


def provenance_tex(runs: dict[str, dict[str, Any]]) -> str:
    """One sentence per group of runs: data, epochs, device, wall time."""
    if not runs:
        return (
            "No training run has produced results yet, so this build shows no measured numbers. "
            f"Run \\texttt{{{tex(FULL_RUN_HINT.split('#')[0].strip())}}} and then \\texttt{{make report}}."
        )
    parts = []
    for names, data, epochs, device in provenance_groups(runs):
        wall = sum(runs[n]["wall_seconds"] for n in names)
        parts.append(
            f"{tt_list(names)}: {tex(data)}; "
            f"{plural(epochs, 'epoch')} on {tex(device)}, {tex(duration(wall))} wall time in all."
        )
    return " ".join(parts)


def full_status_tex(runs: dict[str, dict[str, Any]]) -> str:
    full = [n for n, r in runs.items() if is_full(r)]
    if full and len(full) == len(runs):
        return "All runs in this report used the full official CIFAR-10."
    hint = tex(FULL_RUN_HINT.split("#")[0].strip())
    if full:
        return (
            f"Only {tt_list(full)} used the full official CIFAR-10; "
            "the other runs' numbers are not CIFAR-10 results."
        )
    jpeg = [n for n, r in runs.items() if is_jpeg_full(r)]
    if jpeg:
        return (
            f"No run used the official CIFAR-10 files. {tt_list(jpeg)} used {tex(JPEG_NOTE)}. "
            f"Runs on the official files come from \\texttt{{{hint}}} (on a GPU machine for the Improved model), "
            "then \\texttt{make report}."
        )
    return (
        "\\textbf{No run in this build used the full CIFAR-10: full-data accuracies have not been measured "
        f"here}}, and none of the numbers below can be compared with the seed report's. "
        f"They are produced by \\texttt{{{hint}}} on a GPU machine, then \\texttt{{make report}}."
    )


def full_status_brief(runs: dict[str, dict[str, Any]]) -> str:
    """One caption sentence: are these CIFAR-10 results?"""
    if runs and all(is_full(r) for r in runs.values()):
        return ""
    if any(is_full(r) for r in runs.values()):
        return "Only runs on the full CIFAR-10 give CIFAR-10 results."
    if any(is_jpeg_full(r) for r in runs.values()):
        return "Full-size runs used the JPEG copy of CIFAR-10: not official CIFAR-10 scores."
    return "\\textbf{No run used the full CIFAR-10: these are not CIFAR-10 results.}" if runs else ""


@functools.lru_cache(maxsize=1)
def arch_tables_tex() -> str:
    """Both layer tables, generated from the code (resnet_lib.layer_table), side by side
    (cached: a pure function of the code, and torchinfo takes a while)."""
    blocks = []
    for name in ("lite", "improved"):
        model = rl.build_model(name)
        rows = [
            [tex(r.name), "[" + ", ".join(str(s) for s in r.output_shape) + "]", f"{r.params:,}"]
            for r in rl.layer_table(model)
        ]
        rows.append(["\\midrule Total", "", f"{rl.count_params(model):,}"])
        body = tabular("@{}lrr@{}", ["Layer", "Output", "Params"], rows).replace(
            "\\\\\n\\midrule Total", "\\\\\n\\midrule\nTotal"
        )
        blocks.append(
            f"\\begin{{minipage}}[t]{{0.48\\textwidth}}\\centering\\scriptsize\n"
            f"\\textbf{{{name.capitalize()}}}\\\\[2pt]\n{body}\\end{{minipage}}"
        )
    return (
        "\\begin{table*}[tbp]\n\\centering\n\\caption{Layer tables of the two models, generated from the code "
        "(\\texttt{resnet\\_lib.layer\\_table}) in the seed report's format: output shape for one "
        "$3\\times32\\times32$ image (batch dimension left out), parameters per layer; an RBL row is the "
        "residual block itself (its layers are listed above it).}\\label{tab:arch}\n"
        + "\\hfill".join(blocks)
        + "\n\\end{table*}\n"
    )


RECIPE_FIELDS = [  # (TrainConfig field, row label)
    ("optimizer", "optimizer"),
    ("lr", "peak learning rate"),
    ("momentum", "momentum (SGD)"),
    ("nesterov", "Nesterov (SGD)"),
    ("weight_decay", "weight decay"),
    ("schedule", "schedule"),
    ("schedule_epochs", "schedule length (epochs; 0: the run's)"),
    ("warmup_epochs", "warm-up epochs"),
    ("label_smoothing", "label smoothing"),
    ("crop", "random crop (pad 4)"),
    ("flip", "horizontal flip"),
    ("cutout", "cutout (px)"),
    ("epochs", "epochs"),
    ("batch_size", "batch size"),
    ("tta", "flip TTA at test"),
    ("val_size", "validation split"),
]


def fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def recipes_table_tex() -> str:
    """The two recipes as resnet_lib.RECIPES defines them (Adam's rate for the seed recipe
    as TrainConfig.from_recipe sets it)."""
    seed_sgd = rl.TrainConfig.from_recipe("seed", device="cpu")
    seed_adam = rl.TrainConfig.from_recipe("seed", optimizer="adam", device="cpu")
    reading = rl.TrainConfig.from_recipe("seed-kuangliu", device="cpu")
    reading_adam = rl.TrainConfig.from_recipe("seed-kuangliu", optimizer="adam", device="cpu")
    modern = rl.TrainConfig.from_recipe("modern", device="cpu")
    rows = []
    for f, label in RECIPE_FIELDS:
        s = fmt_value(getattr(seed_sgd, f))
        k = fmt_value(getattr(reading, f))
        if f == "optimizer":
            s = k = "SGD + momentum / Adam"
        elif f == "lr":
            s = f"{fmt_value(seed_sgd.lr)} / {fmt_value(seed_adam.lr)}"
            k = f"{fmt_value(reading.lr)} / {fmt_value(reading_adam.lr)}"
        m = results.optimizer_label(dataclasses.asdict(modern)) if f == "optimizer" else fmt_value(getattr(modern, f))
        rows.append([tex(label), tex(s), tex(k), tex(m)])
    body = tabular("@{}llll@{}", ["", "\\texttt{seed}", "\\texttt{seed-kuangliu}", "\\texttt{modern}"], rows)
    return table_env(
        body,
        "The training recipes as the code defines them (\\texttt{RECIPES}). The seed report "
        "states neither learning rates nor batch size nor weight decay; \\texttt{seed} fills "
        "them with common course defaults, \\texttt{seed-kuangliu} is the reading of the seed's recipe that came "
        "closest to its Lite row (Table~\\ref{tab:readings}). Every recipe is the same on a CPU and a GPU.",
        "tab:recipes",
    )


def results_table_tex(runs: dict[str, dict[str, Any]]) -> str:
    expected = expected_runs()
    names = list(expected) + [n for n in runs if n not in expected]
    rows = []
    for name in names:
        res = runs.get(name)
        if res is None:
            rows.append([f"\\texttt{{{tex(name)}}}"] + ["\\multicolumn{10}{l}{\\emph{not measured}}"])
            continue
        c, fin = res["config"], res["final"]
        rows.append(
            [
                f"\\texttt{{{tex(name)}}}",
                tex(results.optimizer_label(c)),
                f"{res['num_params']:,}",
                pct_sd(res, "train_acc"),
                pct_sd(res, "val_acc"),
                pct_sd(res, "test_acc") + ("$^\\dagger$" if fin.get("tta") else ""),
                str(n_seeds(res)),
                str(epochs_of(res)),
                tex(data_short(res["data"])),
                tex(res["device"]),
                tex(duration(res["wall_seconds"])),
            ]
        )
    body = tabular(
        "@{}llrrrrrrlll@{}",
        ["Run", "Optimizer", "Params", "Train", "Val", "Test", "Seeds", "Ep.", "Data", "Device", "Wall"],
        rows,
    )
    caption = (
        "Results of every configuration: accuracy (\\%) of the final model, mean $\\pm$ sample standard "
        "deviation over its seeds where it ran with several; train is the running accuracy over the "
        "last epoch's augmented batches; $^\\dagger$ test with flip test-time augmentation. "
        "Produced by: " + provenance_brief(runs) + " " + full_status_brief(runs)
    )
    return table_env(body, caption, "tab:results", wide=True)


def optimizer_tex(runs: dict[str, dict[str, Any]]) -> str:
    """The Improved model under one budget: seed recipe with SGD, with Adam, and modern."""
    names = [n for n in expected_runs() if n.startswith("improved-")]
    rows, present = [], [n for n in names if n in runs]
    for name in names:
        res = runs.get(name)
        if res is None:
            rows.append([f"\\texttt{{{tex(name)}}}", "\\multicolumn{7}{l}{\\emph{not measured}}"])
            continue
        c, fin, h = res["config"], res["final"], res["history"]
        val = [v for v in h.get("val_acc", []) if v is not None]
        best = f"{pct(max(val))} ({h['epoch'][h['val_acc'].index(max(val))]})" if val else "--"
        ips = throughput(res)
        rows.append(
            [
                f"\\texttt{{{tex(name)}}}",
                tex(results.optimizer_label(c)),
                tex(f"{fmt_value(c['lr'])}, {c['schedule']}"),
                pct(fin["train_acc"]),
                pct(fin.get("val_acc")),
                best,
                pct(fin["test_acc"]),
                f"{ips:,.0f}" if ips else "--",
            ]
        )
    body = tabular(
        "@{}lllrrrrr@{}", ["Run", "Optimizer", "lr, schedule", "Train", "Val", "Best val (ep.)", "Test", "img/s"], rows
    )
    out = table_env(
        body,
        "Optimizer comparison on the Improved model (accuracy in \\%, final model; best val: "
        "highest validation accuracy over epochs and its epoch; img/s: median training "
        "throughput). " + provenance_ref({n: runs[n] for n in present}, runs),
        "tab:optimizer",
        wide=True,
    )
    sgd, adam = runs.get(names[0]), runs.get(names[1])
    if sgd and adam:
        vs, va = selection_accuracy(sgd), selection_accuracy(adam)
        n_test = min(sgd["data"]["n_test"], adam["data"]["n_test"])
        hw = max(test_halfwidth(sgd["final"]["test_acc"], n_test), test_halfwidth(adam["final"]["test_acc"], n_test))
        diff = 100 * (adam["final"]["test_acc"] - sgd["final"]["test_acc"])
        claims = seed_claims()
        seed_diff = claims[names[1]][1] - claims[names[0]][1]
        val_text = (
            f"Validation accuracy, the number model selection may use, is {pct(vs)}\\% with SGD and "
            f"{pct(va)}\\% with Adam. "
            if vs is not None and va is not None
            else ""
        )
        out += (
            f"\n{val_text}On the test split Adam is {abs(diff):.2f} points "
            f"{'above' if diff >= 0 else 'below'} SGD + momentum ({pct(adam['final']['test_acc'])}\\% against "
            f"{pct(sgd['final']['test_acc'])}\\%); with {n_test:,} test images, one run's accuracy carries a "
            f"95\\% sampling interval of about $\\pm${100 * hw:.2f} points; across seeds: {verdict_text(adam, sgd)}. "
            f"The seed report put Adam {seed_diff:.2f} points ahead (its claim, not our run).\n"
        )
    else:
        out += (
            "\nThe SGD-against-Adam comparison needs both seed-recipe runs of the Improved model; "
            f"{'neither has' if not (sgd or adam) else 'one has not'} been run in this build.\n"
        )
    return out


def seed_comparison_tex(runs: dict[str, dict[str, Any]]) -> str:
    """The seed report's claims beside our repetitions of its runs (and the modern recipe)."""
    claims = seed_claims()
    rows = []
    for name, (s_train, s_test) in claims.items():
        res = runs.get(name)
        model = name.split("-")[0]
        modern = runs.get(results.run_name(rl.TrainConfig.from_recipe("modern", model=model)))
        ours = (pct(res["final"]["train_acc"]), pct(res["final"]["test_acc"])) if res else ("--", "--")
        delta = (
            signed(100 * res["final"]["test_acc"] - s_test) + delta_mark(res).replace("‡", "$^\\ddagger$")
            if res and comparable_to_seed(res)
            else "n/c"
        )
        mod = (
            pct(modern["final"]["test_acc"]) + "$^\\dagger$"
            if modern and modern["final"].get("tta")
            else (pct(modern["final"]["test_acc"]) if modern else "--")
        )
        prod = f"{tex(data_short(res['data']))}, {epochs_of(res)} ep." if res else "\\emph{not measured}"
        rows.append(
            [f"\\texttt{{{tex(name)}}}", f"{s_train:.2f}", f"{s_test:.2f}", ours[0], ours[1], delta, mod, prod]
        )
    body = tabular(
        "@{}lrrrrrrl@{}",
        [
            "Run",
            "\\multicolumn{2}{c}{Seed report}",
            "Ours train",
            "Ours test",
            "$\\Delta$ test",
            "Modern test",
            "Our data, epochs",
        ],
        rows,
    )
    body = body.replace("\\midrule", "& train & test & & & & & \\\\\n\\midrule", 1)
    present = {n: runs[n] for n in claims if n in runs}
    caption = (
        "The seed report's numbers (its claims, copied from its results table) beside our repetitions of "
        "the same runs, and the same model with the \\texttt{modern} recipe (accuracy in \\%; "
        "$^\\dagger$ flip TTA). $\\Delta$ is shown only for runs on all 60,000 CIFAR-10 images with the seed's "
        f"{rl.RECIPES['seed']['epochs']} epochs; n/c: not comparable; $^\\ddagger$ on the JPEG copy of CIFAR-10, a "
        "different data version from the seed's (JPEG-compressed pixels). Our runs: "
        + provenance_brief(present)
        + " "
        + full_status_brief(runs)
    )
    return table_env(body, caption, "tab:seed", wide=True)


def seed_discussion_tex(runs: dict[str, dict[str, Any]]) -> str:
    """Generated sentences for the discussion: comparable runs, or why there are none."""
    claims = seed_claims()
    sentences = []
    for name, (_, s_test) in claims.items():
        res = runs.get(name)
        if res and comparable_to_seed(res):
            d = 100 * res["final"]["test_acc"] - s_test
            sentences.append(
                f"\\texttt{{{tex(name)}}} reaches {pct(res['final']['test_acc'])}\\% test accuracy "
                f"against the seed's {s_test:.2f}\\% ({signed(d)} points)."
            )
    if not sentences:
        sentences.append(
            "None of this build's runs repeats a seed run on the full CIFAR-10 for "
            f"{rl.RECIPES['seed']['epochs']} epochs, so the seed's figures can be neither confirmed nor "
            "refuted here; Table~\\ref{tab:seed} shows them beside our numbers only for orientation."
        )
    sentences += recipe_gain_sentences(runs)
    return " ".join(sentences) + "\n"


def recipe_gain_sentences(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Per model, modern recipe against the seed recipe (SGD), where both ran on the same
    data for the same epochs: validation and test differences."""
    out = []
    for model in rl.ARCHS:
        old = runs.get(results.run_name(rl.TrainConfig.from_recipe("seed", model=model)))
        new = runs.get(results.run_name(rl.TrainConfig.from_recipe("modern", model=model)))
        if not (old and new) or data_brief(old["data"]) != data_brief(new["data"]) or epochs_of(old) != epochs_of(new):
            continue
        vo, vn = selection_accuracy(old), selection_accuracy(new)
        val = f"validation {pct(vo)}\\% $\\to$ {pct(vn)}\\%, " if vo is not None and vn is not None else ""
        out.append(
            f"On the same data ({tex(data_brief(new['data']))}) and budget ({plural(epochs_of(new), 'epoch')}), "
            f"the \\texttt{{modern}} recipe moves {model.capitalize()} from {val}test "
            f"{pct(old['final']['test_acc'])}\\% $\\to$ {pct(new['final']['test_acc'])}\\% "
            f"({signed(100 * (new['final']['test_acc'] - old['final']['test_acc']))} points) against the "
            f"\\texttt{{seed}} recipe with SGD: {verdict_text(new, old)}."
        )
    return out


def verdict_text(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Whether a test-accuracy difference is a finding (results.difference_verdict), in words."""
    v = results.difference_verdict(a, b)
    return tex(v.text) + (", a difference that holds up" if v.holds else ", so it is not established as a finding")


def extremes(acc: dict[str, float], value: float) -> str:
    """'class is cat' or 'classes are cat and dog' (every class at `value`)."""
    names = [tex(c) for c, v in acc.items() if v == value]
    if len(names) == 1:
        return f"class is {names[0]}"
    return f"classes are {', '.join(names[:-1])} and {names[-1]}"


@dataclasses.dataclass
class PerClassFocus:
    """What both write-ups say of one run's classes (accuracies in %)."""

    run: str  # the run with the highest validation accuracy
    accuracy: dict[str, float]  # class -> accuracy
    best: float  # accuracy of its easiest class(es)
    worst: float  # accuracy of its hardest class(es)
    top_pair: dict[str, Any] | None  # its most confused pair, if notebook 05 wrote any


def per_class_focus(
    runs: dict[str, dict[str, Any]], per_class: PerClass, names: Iterable[str]
) -> PerClassFocus | None:
    """The run among `names` (that has results) with the highest validation accuracy, and
    its per-class facts; None if no such run has a validation accuracy."""
    focus = best_run({n: runs[n] for n in names if n in runs})
    if focus is None:
        return None
    acc = per_class.accuracy[focus]
    pairs = per_class.pairs.get(focus) or []
    return PerClassFocus(focus, acc, max(acc.values()), min(acc.values()), pairs[0] if pairs else None)


def per_class_tex(runs: dict[str, dict[str, Any]], per_class: PerClass | None) -> str:
    if per_class is None or not per_class.accuracy:
        return (
            "Per-class numbers are not available in this build: notebook 05 (evaluation) has not written "
            "\\texttt{per\\_class\\_accuracy.csv} to the results folder.\n"
        )
    cols = [n for n in per_class.accuracy if n in runs] + [n for n in per_class.accuracy if n not in runs]
    rows = []
    for cls in rl.CLASSES:
        vals = [per_class.accuracy[n][cls] for n in cols]
        top = max(vals)
        bold = len(cols) > 1 and min(vals) < top  # no winner to mark when all runs tie
        rows.append([tex(cls)] + [f"\\textbf{{{v:.1f}}}" if bold and v == top else f"{v:.1f}" for v in vals])
    header = ["Class"] + [f"\\rotatebox{{60}}{{\\texttt{{{tex(n)}}}}}" for n in cols]
    body = tabular("@{}l" + "r" * len(cols) + "@{}", header, rows)
    known = {n: runs[n] for n in cols if n in runs}
    caption = (
        "Test accuracy (\\%) per class and run, from notebook 05's re-evaluation of each checkpoint "
        "(flip TTA where the recipe uses it); bold: best run per class. " + provenance_ref(known, runs)
    )
    out = table_env(body, caption, "tab:perclass", wide=len(cols) > 5)
    if per_class.stale:
        out += (
            f"\\textbf{{Warning:}} the per-class file is older than the results of "
            f"{tt_list(per_class.stale)}; rerun notebook 05.\n"
        )
    focus = per_class_focus(runs, per_class, cols)
    if focus is None:
        return out
    hi, lo = focus.best, focus.worst
    easy, hard = extremes(focus.accuracy, hi), extremes(focus.accuracy, lo)
    mean_by_class = {c: sum(per_class.accuracy[n][c] for n in cols) / len(cols) for c in rl.CLASSES}
    avg_lo = min(mean_by_class.values())
    out += (
        f"\nWe look closest at \\texttt{{{tex(focus.run)}}}, the run with the highest validation accuracy of "
        "those in the table (one seed per configuration). "
        f"Its easiest {easy} ({hi:.1f}\\%) and its hardest {hard} ({lo:.1f}\\%), "
        f"a spread of {hi - lo:.1f} points. "
    )
    if focus.top_pair:
        p = focus.top_pair
        out += (
            f"Its most confused pair is {tex(p['a'])}/{tex(p['b'])}: {p['ab']} {tex(p['a'])} images predicted as "
            f"{tex(p['b'])} and {p['ba']} the other way, {p['pct']:.1f}\\% of the two classes' test images. "
        )
    if len(cols) > 1:
        out += f"Averaged over the {len(cols)} runs, the hardest {extremes(mean_by_class, avg_lo)} ({avg_lo:.1f}\\%)."
    return out + "\n"


def figure_tex(path: Path | None, caption: str, label: str, tex_dir: Path, wide: bool = False, width: str = "") -> str:
    if path is None:
        return ""
    env = "figure*" if wide else "figure"
    width = width or ("\\textwidth" if wide else "\\linewidth")
    return (
        f"\\begin{{{env}}}[tbp]\n\\centering\n\\includegraphics[width={width}]{{{tex_path(path, tex_dir)}}}\n"
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


@dataclass
class Figures:
    found: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    older_than: dict[str, list[str]] = field(default_factory=dict)  # figure -> runs with newer results

    def get(self, name: str) -> Path | None:
        return self.found.get(name)

    def note(self, *names: str) -> str:
        """A caption warning when a figure predates the results it shows (drawn by another run)."""
        newer = sorted({r for n in names for r in self.older_than.get(n, [])})
        if not newer:
            return ""
        return (
            f" \\textbf{{Warning: drawn before the current results of {tt_list(newer)} were written; "
            "rerun the notebooks.}"
        )


def figure_runs(name: str, runs: dict[str, dict[str, Any]]) -> list[str]:
    """The runs whose results a figure shows (none for the data figures)."""
    for model in rl.ARCHS:
        if name == f"{model}_training_curves":
            # Notebook 02 trains (and plots) both Lite recipes; notebook 03 only the modern
            # Improved run: the Improved seed-recipe runs belong to notebook 04's figure. One
            # curve per configuration: its first seed's run.
            first = {}
            for n, r in runs.items():
                g = results.group_name(r["config"])
                if g not in first or r["config"].get("seed", 0) < runs[first[g]]["config"].get("seed", 0):
                    first[g] = n
            return [
                n
                for n in first.values()
                if runs[n]["config"]["model"] == model and (model == "lite" or runs[n]["config"]["recipe"] != "seed")
            ]
    if name == "optimizer_comparison":
        return [n for n in expected_runs() if n.startswith("improved-") and n in runs]
    if name == "per_class_accuracy":
        return list(runs)
    for prefix in ("confusion_matrix_", "misclassified_"):
        if name.startswith(prefix) and name[len(prefix) :] in runs:
            return [name[len(prefix) :]]
    return []


def collect_figures(figures_dir: Path, runs: dict[str, dict[str, Any]]) -> Figures:
    names = [
        "samples_per_class",
        "augmentation_preview",
        "lite_training_curves",
        "improved_training_curves",
        "optimizer_comparison",
        "per_class_accuracy",
    ]
    every = list(expected_runs()) + [n for n in runs if n not in expected_runs()]
    names += [f"confusion_matrix_{r}" for r in every] + [f"misclassified_{r}" for r in every]
    figs = Figures()
    for n in names:
        p = find_figure(figures_dir, n)
        if p is None:
            figs.missing.append(n)
            continue
        figs.found[n] = p
        drawn = results.written_at(p)
        newer = [r for r in figure_runs(n, runs) if drawn and results.finished_at(runs[r]) > drawn]
        if newer:
            figs.older_than[n] = newer
    return figs


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
        group = {n: r for n, r in runs.items() if r["config"]["model"] == model}
        prov = provenance_ref(group, runs)
        out += figure_tex(
            figs.get(f"{model}_training_curves"),
            f"{model.capitalize()} model: loss, accuracy and learning rate per epoch (notebook {nb}). {prov}"
            + figs.note(f"{model}_training_curves"),
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
        + provenance_ref(group, runs)
        + figs.note("optimizer_comparison"),
        "fig:optimizer",
        tex_dir,
        wide=True,
        width="0.85\\textwidth",
    ) + missing_figures_note(["optimizer_comparison"] if "optimizer_comparison" in figs.missing else [])


def key_runs(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The runs a reader compares first: per model, the run with the highest validation accuracy."""
    out = []
    for model in rl.ARCHS:
        best = best_run({n: r for n, r in runs.items() if r["config"]["model"] == model})
        if best:
            out.append(best)
    return out


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
        + provenance_ref({r: runs[r] for r, _ in cms}, runs)
        + note
        + "}\\label{"
        + label
        + "}\n\\end{figure*}\n"
    )


def confusion_figures_tex(figs: Figures, runs: dict[str, dict[str, Any]], tex_dir: Path) -> str:
    """The two confusion matrices that matter (each model's best run by validation accuracy) at
    a readable size; the others go to the appendix (appendix_confusion_tex)."""
    cms = [(r, figs.get(f"confusion_matrix_{r}")) for r in key_runs(runs) if figs.get(f"confusion_matrix_{r}")]
    out = ""
    if cms:
        out += confusion_grid(
            cms,
            runs,
            tex_dir,
            "0.46\\textwidth",
            2,
            "Confusion matrices on the test split of each model's run with the highest validation accuracy "
            "(rows: true class, each normalized to 100\\%; notebook 05; the other runs' are in "
            "Appendix~\\ref{app:confusion}). ",
            "fig:confusion",
            figs.note(*(f"confusion_matrix_{r}" for r, _ in cms)),
        )
    out += figure_tex(
        figs.get("per_class_accuracy"),
        "Test accuracy per class, one bar per run (notebook 05). "
        + provenance_ref(runs, runs)
        + figs.note("per_class_accuracy"),
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
            + figs.note(f"misclassified_{focus}"),
            "fig:misclassified",
            tex_dir,
            wide=True,
            width="0.8\\textwidth",
        )
    missing = [n for n in figs.missing if n.startswith("confusion_matrix_") or n == "per_class_accuracy"]
    return out + missing_figures_note(missing)


def appendix_confusion_tex(figs: Figures, runs: dict[str, dict[str, Any]], tex_dir: Path) -> str:
    """Every other run's confusion matrix, three to a row."""
    shown = set(key_runs(runs))
    cms = [
        (r, figs.get(f"confusion_matrix_{r}")) for r in runs if r not in shown and figs.get(f"confusion_matrix_{r}")
    ]
    if not cms:
        return "No other run has a confusion matrix in this build.\n"
    return confusion_grid(
        cms,
        runs,
        tex_dir,
        "0.32\\textwidth",
        3,
        "Confusion matrices of the other runs (rows: true class, normalized to 100\\%; notebook 05). ",
        "fig:confusion-all",
        figs.note(*(f"confusion_matrix_{r}" for r, _ in cms)),
    )


# The results issue's targets for 40-epoch runs on the full-size JPEG copy of CIFAR-10 (mean test
# accuracy with flip TTA over 3 seeds): each row says whether it is met, or by how much it is missed.
TARGETS = (("lite-modern", 85.0), ("improved-modern", 93.5))
TARGET_SEEDS = 3


def target_rows(runs: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Plain-text cells: run, target (%), measured (mean +- std, seeds), verdict."""
    rows = []
    for name, target in TARGETS:
        res = runs.get(name)
        if res is None or not is_jpeg_full(res) or epochs_of(res) != rl.RECIPES["modern"]["epochs"]:
            rows.append(
                [name, f">= {target:.1f}", "not measured", "not measured on the full-size JPEG copy for 40 epochs"]
            )
            continue
        mean, n = 100 * res["final"]["test_acc"], n_seeds(res)
        verdict = "met" if mean >= target else f"missed by {target - mean:.2f} points"
        if n < TARGET_SEEDS:
            verdict += f" (from {n} seed{'s' if n > 1 else ''}; the target asks for {TARGET_SEEDS})"
        rows.append([name, f">= {target:.1f}", f"{pct_sd(res, 'test_acc', latex=False)} (n={n})", verdict])
    return rows


def targets_tex(runs: dict[str, dict[str, Any]]) -> str:
    rows = [[tex_cell(c).replace(">=", "$\\ge$") for c in row] for row in target_rows(runs)]
    body = tabular("@{}llll@{}", ["Run", "Target (\\%)", "Measured (\\%)", "Verdict"], rows)
    caption = (
        "The targets set for this repository's 40-epoch recipes on the full-size JPEG copy of CIFAR-10: mean test "
        f"accuracy (flip TTA) over {TARGET_SEEDS} seeds. Measured values are the results in Table~\\ref{{tab:results}}."
    )
    return table_env(body, caption, "tab:targets")


def limitations_tex(runs: dict[str, dict[str, Any]]) -> str:
    items = []
    if not runs:
        items.append("No run has been made: this build reports no measured accuracy at all.")
    elif not any(is_full(r) for r in runs.values()) and any(is_jpeg_full(r) for r in runs.values()):
        items.append(f"No run used the official CIFAR-10 files; the full-size runs used {tex(JPEG_NOTE)}.")
    elif not any(is_full(r) for r in runs.values()):
        items.append(
            "No run used the full CIFAR-10, so this build measures no CIFAR-10 test accuracy; "
            "its numbers show that the pipeline learns, nothing more."
        )
    short = sorted({epochs_of(r) for r in runs.values() if epochs_of(r) < rl.RECIPES["seed"]["epochs"]})
    if short:
        items.append(
            f"Runs of {'/'.join(map(str, short))} epoch{'s' if short != [1] else ''} are far shorter than the "
            f"{rl.RECIPES['seed']['epochs']} the recipes and the seed use."
        )
    subset = [n for n, r in runs.items() if r["config"].get("train_subset")]
    if subset:
        who = "Every run" if len(subset) == len(runs) else tt_list(subset)
        items.append(f"{who} trained on a random subset of the training images (\\texttt{{train\\_subset}}).")
    expected = [n for n in expected_runs() if n not in runs]
    if expected:
        items.append(f"Not measured in this build: {tt_list(expected)}.")
    single = [n for n, r in runs.items() if n_seeds(r) < 2]
    if single:
        who = "Each configuration" if len(single) == len(runs) else tt_list(single)
        items.append(
            f"{who} ran once, with one seed: the seed-to-seed spread, which can exceed small "
            "differences between configurations, is not measured, and no difference is called a finding."
        )
    items += [
        "The seed report gives no learning rates, batch size or weight decay; the \\texttt{seed} recipe fills "
        "them with common defaults, so it repeats the seed's setup only as far as the report describes it.",
        "We hold out a validation split of the training images for model selection, so our models train on "
        "fewer images than the seed's, which (as far as its report says) used all of them.",
        "Training accuracy is a running average over one epoch's augmented batches (with label smoothing in the "
        "\\texttt{modern} recipe), not the accuracy of the final model on clean training images.",
    ]
    return "\\begin{itemize}\n" + "\n".join(f"\\item {i}" for i in items) + "\n\\end{itemize}\n"


def abstract_tex(runs: dict[str, dict[str, Any]]) -> str:
    full = {n: r for n, r in runs.items() if is_full(r)}
    if full:
        best = best_run(full) or next(iter(full))
        r = full[best]
        return (
            f"On the full CIFAR-10, the run with the highest validation accuracy, \\texttt{{{tex(best)}}} "
            f"({epochs_of(r)} epochs), reaches {pct(r['final']['test_acc'])}\\% test accuracy "
            f"with {r['num_params']:,} parameters. "
        )
    jpeg = {n: r for n, r in runs.items() if is_jpeg_full(r)}
    if jpeg:
        best = best_run(jpeg) or next(iter(jpeg))
        r = jpeg[best]
        missing = [n for n in expected_runs() if n not in runs]
        return (
            f"On the JPEG copy of CIFAR-10 (all 60,000 images, JPEG-compressed; not official scores), the run with "
            f"the highest validation accuracy, \\texttt{{{tex(best)}}} ({epochs_of(r)} epochs), reaches "
            f"{pct(r['final']['test_acc'])}\\% test accuracy with {r['num_params']:,} parameters"
            + (f"; {tt_list(missing)} were not measured yet. " if missing else ". ")
        )
    if runs:
        epochs = sorted({epochs_of(r) for r in runs.values()})
        return (
            "This build contains only short runs on reduced data "
            f"({'/'.join(map(str, epochs))} epoch{'s' if epochs != [1] else ''}; see Table~\\ref{{tab:results}}): "
            "it measures no CIFAR-10 accuracy, and its numbers must not be read as such. "
        )
    return "This build contains no training runs yet, so it reports no accuracy. "


def numbers_tex(runs: dict[str, dict[str, Any]]) -> str:
    """Macros for the prose: everything from the code or the results, nothing typed."""
    lite, improved = rl.build_model("lite"), rl.build_model("improved")
    resnet18 = rl.ResNet((64, 128, 256, 512), (2, 2, 2, 2), allow_over_budget=True)  # CIFAR ResNet-18, same code
    claims = seed_claims()
    names = list(expected_runs())
    finished = sorted(str(r.get("finished", ""))[:10] for r in runs.values() if r.get("finished"))
    lines = [
        "% Generated by scripts/make_report_inputs.py: do not edit.",
        macro("ParamBudget", f"{rl.PARAM_BUDGET:,}"),
        macro("LiteParams", f"{rl.count_params(lite):,}"),
        macro("ImprovedParams", f"{rl.count_params(improved):,}"),
        macro("LiteBudgetShare", f"{100 * rl.count_params(lite) / rl.PARAM_BUDGET:.1f}\\%"),
        macro("ImprovedBudgetShare", f"{100 * rl.count_params(improved) / rl.PARAM_BUDGET:.1f}\\%"),
        macro("ResNetEighteenParams", f"{rl.count_params(resnet18):,}"),
        macro("LiteWidths", "/".join(map(str, rl.ARCHS["lite"][0]))),
        macro("ImprovedWidths", "/".join(map(str, rl.ARCHS["improved"][0]))),
        macro("SeedEpochs", str(rl.RECIPES["seed"]["epochs"])),
        macro("ModernBatch", str(rl.RECIPES["modern"]["batch_size"])),
        macro("SeedLiteSGDTest", f"{claims[names[0]][1]:.2f}\\%"),
        macro("SeedImprovedSGDTest", f"{claims[names[2]][1]:.2f}\\%"),
        macro("SeedImprovedAdamTest", f"{claims[names[3]][1]:.2f}\\%"),
        macro("NumRuns", str(len(runs))),
        macro("NumExpectedRuns", str(len(names))),
        macro(
            "ResultsDate",
            (
                f"results dated {finished[0]}" + (f" to {finished[-1]}" if finished[-1] != finished[0] else "")
                if finished
                else "no results yet"
            ),
        ),
        # one command per line: "a && b" -> "a &&\\ b"
        macro(
            "RegenerateCommand",
            "\\texttt{" + " \\&\\&\\\\ ".join(tex(c.strip()) for c in REGENERATE.split("&&")) + "}",
        ),
        macro("FullRunCommand", f"\\texttt{{{tex(FULL_RUN_HINT.split('#')[0].strip())}}}"),
    ]
    return "\n".join(lines) + "\n"


def write_inputs(results_dir: Path, figures_dir: Path, out_dir: Path, tex_dir: Path | None = None) -> dict[str, Any]:
    """Write every fragment into out_dir; return the manifest (also written as manifest.json)."""
    tex_dir = tex_dir or out_dir.parent
    runs = load_runs(results_dir)
    per_class = load_per_class(results_dir, runs)
    figs = collect_figures(figures_dir, runs)
    files = {
        "numbers.tex": numbers_tex(runs),
        "abstract.tex": abstract_tex(runs) + "\n",
        "provenance.tex": provenance_tex(runs) + (" " + full_status_tex(runs) if runs else "") + "\n",
        "arch_tables.tex": arch_tables_tex(),
        "recipes_table.tex": recipes_table_tex(),
        "results_table.tex": results_table_tex(runs),
        "targets.tex": targets_tex(runs),
        "optimizer.tex": optimizer_tex(runs),
        "seed_comparison.tex": seed_comparison_tex(runs),
        "seed_discussion.tex": seed_discussion_tex(runs),
        "seed_readings.tex": seed_readings_tex(),
        "ablation.tex": ablation_tex(),
        "per_class.tex": per_class_tex(runs, per_class),
        "fig_data.tex": data_figures_tex(figs, tex_dir),
        "fig_curves.tex": curve_figures_tex(figs, runs, tex_dir),
        "fig_optimizer.tex": optimizer_figure_tex(figs, runs, tex_dir),
        "fig_confusion.tex": confusion_figures_tex(figs, runs, tex_dir),
        "appendix_confusion.tex": appendix_confusion_tex(figs, runs, tex_dir),
        "limitations.tex": limitations_tex(runs),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        safeio.atomic_write(out_dir / name, "w", lambda f, text=text: f.write(text))
    manifest = {
        "results_dir": str(results_dir),
        "figures_dir": str(figures_dir),
        "runs": list(runs),
        "missing_runs": [n for n in expected_runs() if n not in runs],
        "full_cifar10_runs": [n for n, r in runs.items() if is_full(r)],
        "per_class": per_class is not None,
        "figures": sorted(figs.found),
        "missing_figures": figs.missing,
        "figures_older_than_results": figs.older_than,
        "files": sorted(files),
    }
    safeio.write_json(manifest, out_dir / "manifest.json")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--results",
        default=os.environ.get("RESULTS_DIR") or str(ROOT / "results"),
        help="folder of <run>/results.json (default: $RESULTS_DIR or results/)",
    )
    ap.add_argument(
        "--figures",
        default=os.environ.get("FIGURES_DIR") or str(ROOT / "figures"),
        help="folder of the notebooks' figures (default: $FIGURES_DIR or figures/)",
    )
    ap.add_argument("--out", default=str(ROOT / "report" / "generated"), help="folder for the LaTeX fragments")
    ap.add_argument(
        "--tex-dir",
        default=None,
        help="folder pdflatex runs in (figure paths are relative to it; " "default: the parent of --out)",
    )
    args = ap.parse_args(argv)
    try:
        m = write_inputs(
            Path(args.results), Path(args.figures), Path(args.out), Path(args.tex_dir) if args.tex_dir else None
        )
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"report inputs -> {args.out}: {len(m['runs'])} run(s) ({', '.join(m['runs']) or 'none'}), "
        f"{len(m['figures'])} figure(s); not run: {', '.join(m['missing_runs']) or 'none'}; "
        f"full CIFAR-10 runs: {', '.join(m['full_cifar10_runs']) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
