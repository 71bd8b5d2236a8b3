"""The report's facts in plain words, shared by both writers: numbers as text, the data and
provenance phrases, and the plain-text cells of the tables the README and the paper both show
(the LaTeX writer escapes them, the Markdown writer escapes them its own way)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from resnet_tools.report import facts
from resnet_tools.report.facts import Reading, Variant, epochs_of, n_seeds
from resnet_tools.results import MINI_NAME, SEED_REPORTED, data_kind, data_label, difference_verdict


def pct(x: float | None, digits: int = 2) -> str:
    """0.8987 -> '89.87'; None or NaN -> '--'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "--"
    return f"{100 * x:.{digits}f}"


def pct_sd(res: dict[str, Any], key: str) -> str:
    """Mean accuracy in %, with "± std" over the seeds where there are several."""
    std = res.get("final_std", {}).get(key, math.nan)
    text = pct(res["final"].get(key))
    if n_seeds(res) < 2 or std is None or math.isnan(std) or text == "--":
        return text
    return f"{text} ± {100 * std:.2f}"


def duration(seconds: float | None) -> str:
    """Seconds as '42 s', '3.5 min' or '1.25 h'."""
    if seconds is None:
        return "--"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


# How each kind of data (results.data_kind) is described, in three lengths: a table cell, a phrase
# for captions ({sizes}: 45,000/5,000/10,000 train/val/test images) and a sentence for the provenance
# ({sizes}: 45,000 training, 5,000 validation and 10,000 test images); {mini}, {label} and {folder} name it.
DATA_WORDS = {
    "full": (
        "CIFAR-10",
        "full CIFAR-10, {sizes}, official test set",
        "the full official CIFAR-10 ({sizes}; the test images are the official test set)",
    ),
    "jpeg": (
        "CIFAR-10 (JPEG copy)",
        "CIFAR-10 (JPEG copy), {sizes}, official test split as JPEG",
        "CIFAR-10 (JPEG copy): all 60,000 images of the official split as JPEG files ({sizes}); "
        "JPEG-compressed pixels, so accuracies are not official CIFAR-10 scores",
    ),
    "official-subset": (
        "CIFAR-10 subset",
        "subset of the official CIFAR-10 files, {sizes}",
        "a subset of the official CIFAR-10 files ({sizes}); accuracies on so few images are not CIFAR-10 test scores",
    ),
    "mini": (
        "real subset",
        "real subset {mini}, {sizes}, test = held-out training images",
        "the real-image subset {mini} ({sizes}); its test split is held-out CIFAR-10 training images, not the "
        "official test set, so accuracies are a learning signal, not CIFAR-10 test scores",
    ),
    "other": (
        "non-official",
        "non-official folder '{folder}', {sizes}",
        "'{label}' ({sizes}; its files differ from the official CIFAR-10), so accuracies are not CIFAR-10 test scores",
    ),
}


def describe_data(d: dict[str, Any], length: int) -> str:
    """Which data a run used, in words: length 0 a table cell, 1 a short phrase, 2 a sentence (DATA_WORDS)."""
    n = (d.get("n_train", 0), d.get("n_val", 0), d.get("n_test", 0))
    sizes = (
        f"{n[0]:,}/{n[1]:,}/{n[2]:,} train/val/test images",
        f"{n[0]:,} training, {n[1]:,} validation and {n[2]:,} test images",
    )[length - 1] if length else ""
    folder = Path(str(d.get("root", ""))).name
    return DATA_WORDS[data_kind(d)][length].format(sizes=sizes, mini=MINI_NAME, label=data_label(d), folder=folder)


def data_short(d: dict[str, Any]) -> str:
    """A table cell: which data, in a few words."""
    return describe_data(d, 0)


def data_brief(d: dict[str, Any]) -> str:
    """Which data in a short phrase, with split sizes and the caveat that matters (plain text)."""
    return describe_data(d, 1)


def data_sentence(d: dict[str, Any]) -> str:
    """What the data was, with its split sizes and what its test split is (plain text)."""
    return describe_data(d, 2)


JPEG_NOTE = (
    "the JPEG copy of CIFAR-10 (the official split's 60,000 images, JPEG-compressed, about 30 dB PSNR against the "
    "official pixels): full size, but not official CIFAR-10 scores; beside the seed report's numbers they stand as "
    "a different data version"
)


def delta_mark(res: dict[str, Any]) -> str:
    """A Δ against the seed's number on the JPEG copy is across data versions: mark it."""
    return "‡" if data_kind(res["data"]) == "jpeg" else ""


def provenance_groups(runs: dict[str, dict[str, Any]]) -> list[tuple[list[str], str, int, str]]:
    """Runs grouped by (data sentence, epochs, device): [(run names, data, epochs, device)]."""
    groups: dict[tuple[str, int, str], list[str]] = {}
    for name, res in runs.items():
        groups.setdefault((data_sentence(res["data"]), epochs_of(res), str(res["device"])), []).append(name)
    return [(names, d, e, dev) for (d, e, dev), names in groups.items()]


def fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def runs_seeds(res: dict[str, Any]) -> str:
    """How many runs a merged record holds, and their seeds: '3 (0, 1, 2)'."""
    seeds = res.get("seeds", {}).get("seeds", [res["config"].get("seed", 0)])
    return f"{n_seeds(res)} ({', '.join(str(k) for k in seeds)})"


def short_verdict(vd: Any) -> str:
    """A table cell for results.difference_verdict (Δ stands in its own column): 'too few seeds
    (1 vs 3)', 'within the noise (2 SE 0.67)' or 'exceeds the noise (2 SE 0.67)'."""
    if vd.counts == (0, 0):
        return vd.text
    if min(vd.counts) < 2:
        return f"too few seeds ({vd.counts[0]} vs {vd.counts[1]})"
    return f"{'exceeds' if vd.holds else 'within'} the noise (2 SE {vd.two_se:.2f})"


def ablation_rows(base: Variant, variants: list[Variant]) -> list[list[str]]:
    """Plain-text cells: variant, change, runs (seeds), training (running), validation and test
    accuracy (mean +- std), Δ validation against the baseline (points), and whether that
    difference exceeds the noise."""
    rows = []
    for v in [base, *variants]:
        if v.res is None:
            rows.append([v.name, v.what, "0", "--", "--", "--", "--", v.note])
            continue
        if v is base:
            delta, verdict = "", "baseline"
        else:
            vd = difference_verdict(v.res, base.res, "val_acc")
            delta, verdict = f"{vd.diff:+.2f}", short_verdict(vd)
            if v.diagnostic:
                verdict = "diagnostic, no candidate; " + verdict
        rows.append(
            [
                v.name,
                v.what,
                runs_seeds(v.res),
                pct_sd(v.res, "train_acc"),
                pct_sd(v.res, "val_acc"),
                pct_sd(v.res, "test_acc"),
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


def reading_rows(readings: list[Reading]) -> list[list[str]]:
    """Plain-text cells: reading, what, runs (seeds), train and test (final; mean +- std over seeds),
    best test over epochs (mean over seeds), distance to the seed's row for the same model and
    optimizer (facts.reading_fit: |Δ train| + |Δ test| of the means, points)."""
    rows = []
    for r in readings:
        fit = facts.reading_fit(r)
        if fit is None:
            rows.append([r.name, r.what, "0", "--", "--", "--", r.note])
            continue
        best = "--" if fit.best_test is None else f"{fit.best_test:.2f}"
        rows.append([r.name, r.what, runs_seeds(r.res), pct_sd(r.res, "train_acc"), pct_sd(r.res, "test_acc"), best,
                     f"{fit.distance:.2f}"])
    return rows


def closest_text(readings: list[Reading]) -> str:
    """One sentence: which reading comes closest to the seed's Lite row (facts.closest_reading), or ""."""
    best = facts.closest_reading(readings)
    if best is None:
        return ""
    fit, n = facts.reading_fit(best), n_seeds(best.res)
    return (
        f"Closest to the seed's Lite row ({fit.seed_train:.2f}% train, {fit.seed_test:.2f}% test): {best.name}, "
        f"{fit.distance:.2f} points away ({fit.train:.2f}% train, {fit.test:.2f}% test"
        f"{f', mean of {n} seeds' if n > 1 else ', one seed'})."
    )


def seed_rows_text() -> str:
    """The seed's rows in words: 'Lite SGD 79.12% train, 79.87% test; ...' (the readings' reference)."""
    parts = []
    for (model, recipe, optimizer), (train, test) in SEED_REPORTED.items():
        label = f"{model.capitalize()} {'SGD' if optimizer == 'sgd' else optimizer.capitalize()}"
        parts.append(f"{label} {train:.2f}% train, {test:.2f}% test")
    return "; ".join(parts)


def target_rows(runs: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Plain-text cells: run, target (%), measured (mean +- std, seeds), verdict (facts.targets)."""
    rows = []
    for t in facts.targets(runs):
        if t.res is None:
            rows.append(
                [t.run, f">= {t.target:.1f}", "not measured", "not measured on the full-size JPEG copy for 40 epochs"]
            )
            continue
        n, need = n_seeds(t.res), facts.TARGET_SEEDS
        verdict = "met" if t.met else f"missed by {t.target - t.mean:.2f} points"
        if n < need:
            verdict += f" (from {n} seed{'s' if n > 1 else ''}; the target asks for {need})"
        rows.append([t.run, f">= {t.target:.1f}", f"{pct_sd(t.res, 'test_acc')} (n={n})", verdict])
    return rows
