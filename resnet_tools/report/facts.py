"""The report's facts: the one module that answers what the README and the paper ask, as plain
values (which runs exist and on which data, what is missing and why, which targets are met, the
seed report's claims beside ours, the readings and the ablation, per-class results, the figures
and whether they are stale). The writers (paper, readme) only format these answers.

Every results file passes `results.check_record` before any answer uses it: a file that fails is
named, with the field, in a warning and left out, never rendered."""

from __future__ import annotations

import csv
import functools
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from resnet_lib import ARCHS, RECIPES
from resnet_tools import results
from resnet_tools.dataset import CLASSES
from resnet_tools.results import SEED_REPORTED, ResultsError, best_run, data_kind, group_name, run_name, warn

ROOT = Path(__file__).resolve().parents[2]
# The one command that regenerates every result, figure, the paper and the README section
# (the notebooks write results/ and figures/; `make report` reads them).
# `make run` with no DATA_DIR uses data/ and downloads the official archive there if missing.
REGENERATE = "make run && make report && .venv/bin/python scripts/update_readme_results.py"
# How to get the full-CIFAR-10 numbers: the recipes' 40 epochs on the official data, on a GPU.
FULL_RUN_HINT = "make run   # on a machine with a GPU: full CIFAR-10 (downloaded to data/ if missing), 40 epochs"


# ---------------------------------------------------------------------------------------
# Which runs exist, which are expected, which are missing
# ---------------------------------------------------------------------------------------
@functools.cache
def expected_runs() -> tuple[str, ...]:
    """The runs the notebooks make, in the report's order (resnet_tools.results.expected_runs)."""
    return tuple(results.expected_runs())


def load_runs(results_dir: Path) -> dict[str, dict[str, Any]]:
    """{configuration: its runs merged over seeds (resnet_tools.results.merge_seeds: mean in
    "final", std in "final_std", per-seed values in "seeds")}, in load_results' order."""
    return results.merge_seeds(results.load_results(results_dir)) if results_dir.is_dir() else {}


def n_seeds(res: dict[str, Any]) -> int:
    return res.get("seeds", {}).get("n", 1)


def read_csv(path: Path) -> list[dict[str, str]] | None:
    """Rows of a CSV file as dicts, or None if it does not exist; ResultsError if it cannot be read."""
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error) as e:
        raise ResultsError(f"{path}: unreadable ({e}); rerun notebook 05 or delete it") from None


def _checked(path: Path, field: str, value: Any, kind: type, high: float = math.inf) -> Any:
    """value as kind (int or float), finite and in [0, high], or ResultsError naming the file and field."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ResultsError(f"{path}: {field}: {value!r} is not a number") from None
    if not (math.isfinite(number) and 0 <= number <= high):
        raise ResultsError(f"{path}: {field}: {value!r} is outside [0, {high:g}]")
    return number


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
    if classes != list(CLASSES):
        raise ResultsError(f"{acc_path}: classes {classes} are not CIFAR-10's {list(CLASSES)}")
    runs_in = [run for run in rows[0] if run not in ("class", None)]
    accuracy = {run: {r["class"]: _checked(acc_path, f"{run}/{r['class']}", r[run], float, 100) for r in rows}
                for run in runs_in}
    pairs = _read_pairs(pairs_path)
    written = results.written_at(acc_path)  # None: no stamp (written before stamps), never called stale
    stale = [run for run in accuracy if run in runs and written and results.finished_at(runs[run]) > written]
    return PerClass(accuracy, pairs, stale)


def _read_pairs(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Notebook 05's confused pairs per run, most first ({} if it wrote none)."""
    pairs: dict[str, list[dict[str, Any]]] = {}
    for i, r in enumerate(read_csv(path) or [], 2):
        try:
            pairs.setdefault(r["run"], []).append(
                {
                    "a": r["class A"],
                    "b": r["class B"],
                    "ab": _checked(path, f"line {i}", r["A predicted as B"], int),
                    "ba": _checked(path, f"line {i}", r["B predicted as A"], int),
                    "total": _checked(path, f"line {i}", r["confusions"], int),
                    "pct": _checked(path, f"line {i}", r["% of A and B test images"], float, 100),
                }
            )
        except KeyError as e:
            raise ResultsError(f"{path}: unexpected layout (KeyError: {e})") from None
    return pairs


def find_figure(figures_dir: Path, name: str) -> Path | None:
    """FIGURES/name.pdf (vector) or else name.png, or None."""
    for ext in (".pdf", ".png"):
        p = figures_dir / f"{name}{ext}"
        if p.is_file():
            return p
    return None


def epochs_of(res: dict[str, Any]) -> int:
    """Completed epochs (the history's length)."""
    return len(res["history"].get("epoch", []))


def is_jpeg_full(res: dict[str, Any]) -> bool:
    """All 60,000 images, as the JPEG copy of CIFAR-10: full size, but not the official pixels."""
    return data_kind(res["data"]) == "jpeg"


def is_full(res: dict[str, Any]) -> bool:
    return data_kind(res["data"]) == "full"


class Coverage(NamedTuple):
    """Which of the runs can be read as what (run names, in the runs' order)."""

    full: list[str]  # on the official CIFAR-10 files, all 60,000 images: CIFAR-10 results
    jpeg: list[str]  # on the full-size JPEG copy: full size, not official scores
    missing: list[str]  # the notebooks' runs with no results file: not measured
    everything_full: bool  # there are runs and all are on the official files


def coverage(runs: dict[str, dict[str, Any]]) -> Coverage:
    """What the runs cover: which are CIFAR-10 results, which the JPEG copy's, which are missing."""
    full = [n for n, r in runs.items() if is_full(r)]
    jpeg = [n for n, r in runs.items() if is_jpeg_full(r)]
    missing = [n for n in expected_runs() if n not in runs]
    return Coverage(full, jpeg, missing, bool(runs) and len(full) == len(runs))


def comparable_to_seed(res: dict[str, Any]) -> bool:
    """All 60,000 CIFAR-10 images (official files, or the JPEG copy: a different data version,
    marked as such) and the seed's epoch count: the only runs whose numbers may stand beside
    the seed report's."""
    return data_kind(res["data"]) in ("full", "jpeg") and epochs_of(res) == RECIPES["report"]["epochs"]


# The reading experiments of the seed report's recipe (issue: which reading of the report's recipe reproduces
# its numbers): their results.json files and an index saying what each run is, committed in
# report/experiments/ (small JSON, no checkpoints).
EXPERIMENTS = ROOT / "report" / "experiments"

class Reading(NamedTuple):
    name: str
    what: str  # the reading in words
    res: dict[str, Any] | None  # its runs merged over seeds (results.merge_seeds), None where not measured
    note: str  # where not measured: why
    members: tuple[dict[str, Any], ...] = ()  # each seed's own results file, in the index's order


def seed_readings(folder: Path | None = None) -> tuple[list[Reading], str]:
    """([Reading], the data note) from folder/index.json (default EXPERIMENTS) and the results
    files it names: one ("file") or one per seed ("files")."""
    folder = folder or EXPERIMENTS
    index_path = folder / "index.json"
    if not index_path.is_file():
        return [], ""
    index = json.loads(index_path.read_text())
    out = []
    for item in index["readings"]:
        names = item.get("files") or ([item["file"]] if item.get("file") else [])
        merged, members, note = merged_files(folder, names, item.get("note", "not measured"))
        out.append(Reading(item["name"], item["what"], merged, note, members))
    return out, index.get("data", "")


def merged_files(folder: Path, names: list[str], note: str) -> tuple[dict[str, Any] | None, tuple, str]:
    """(the files' runs merged over seeds or None, each valid run, the note): "invalid results
    file" where files exist but none can be rendered, `note` where none exists."""
    present = [f for f in names if (folder / f).is_file()]
    runs = {f: r for f in present if (r := experiment_record(folder / f)) is not None}
    if not runs:
        return None, (), "invalid results file" if present else note
    return next(iter(results.merge_seeds(runs).values())), tuple(runs.values()), note


class ReadingFit(NamedTuple):
    """How far one measured reading is from the seed's row for its model and optimizer (in %)."""

    train: float  # mean over its seeds of the running training accuracy
    test: float  # mean over its seeds of the final model's test accuracy
    best_test: float | None  # mean over its seeds of each seed's best per-epoch test accuracy
    seed_train: float  # the seed report's claims
    seed_test: float
    distance: float  # |mean train - seed train| + |mean test - seed test|, points


def reading_fit(r: Reading) -> ReadingFit | None:
    """The reading's distance to the seed's row, from its seeds' means; None where not measured
    or where the seed reports no such row."""
    claim = seed_row_of(r.res) if r.res is not None else None
    if claim is None:
        return None
    train, test = 100 * r.res["final"]["train_acc"], 100 * r.res["final"]["test_acc"]
    bests = [b for m in r.members if (b := best_test_over_epochs(m)) is not None]
    best = 100 * sum(bests) / len(bests) if bests else None
    return ReadingFit(train, test, best, claim[0], claim[1], abs(train - claim[0]) + abs(test - claim[1]))


def closest_reading(readings: list[Reading], model: str = "lite", optimizer: str = "sgd") -> Reading | None:
    """The measured reading of `model` with `optimizer` nearest the seed's row for them (fewest
    points of |Δ train| + |Δ test|); None where none is measured."""
    fits = [(f.distance, i) for i, r in enumerate(readings) if (f := reading_fit(r))
            and (r.res["config"]["model"], r.res["config"]["optimizer"]) == (model, optimizer)]
    return readings[min(fits)[1]] if fits else None


def experiment_record(path: Path) -> dict[str, Any] | None:
    """One results file of report/experiments/, checked as the results folder's are
    (results.check_record); None, with a warning naming the field, where it cannot be rendered."""
    res = results.read_record(path)
    problems = results.check_record(res)
    if problems:
        warn(f"{path}: left out of every table: {'; '.join(problems)}")
        return None
    return res


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
        merged, _, note = merged_files(folder, item.get("files", []), item.get("note", "not measured"))
        return Variant(item["name"], item["what"], merged, note, bool(item.get("diagnostic", False)))

    return variant(index["baseline"]), [variant(v) for v in index["variants"]], index.get("data", "")


def best_test_over_epochs(res: dict[str, Any]) -> float | None:
    """Highest per-epoch test accuracy (no TTA): what a script that keeps the best test epoch
    reports. A diagnostic of how the seed may have measured, never a model-selection rule here."""
    accs = [a for a in res["history"].get("test_acc", []) if a is not None]
    return max(accs) if accs else None


def seed_row_of(res: dict[str, Any]) -> tuple[float, float] | None:
    """(train %, test %) of the seed report's row for the run's model and optimizer (a reading of
    the Improved model's SGD run is measured against the seed's Improved SGD row); None if it has none."""
    c = res["config"]
    return seed_claims().get(run_name(dict(model=c["model"], recipe="report", optimizer=c["optimizer"])))


def test_halfwidth(acc: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy measured on n
    images (binomial standard error x 1.96): the test set's own sampling noise."""
    return 1.96 * math.sqrt(max(acc * (1 - acc), 0.0) / n) if n > 0 else math.nan


def seed_claims() -> dict[str, tuple[float, float]]:
    """{run name: (train %, test %)} as the seed report states them (resnet_lib.SEED_REPORTED,
    copied from ../shared/seed/mini-project-report.md; the seed's claims, not our runs)."""
    out = {}
    for (model, recipe, optimizer), numbers in SEED_REPORTED.items():
        out[run_name(dict(model=model, recipe=recipe, optimizer=optimizer))] = numbers
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


@dataclass
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


@dataclass
class Figures:
    found: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    older_than: dict[str, list[str]] = field(default_factory=dict)  # figure -> runs with newer results

    def get(self, name: str) -> Path | None:
        return self.found.get(name)

    def newer_than(self, *names: str) -> list[str]:
        """The runs whose results were written after any of these figures was drawn."""
        return sorted({r for n in names for r in self.older_than.get(n, [])})


def figure_runs(name: str, runs: dict[str, dict[str, Any]]) -> list[str]:
    """The runs whose results a figure shows (none for the data figures)."""
    for model in ARCHS:
        if name == f"{model}_training_curves":
            # Notebook 02 trains (and plots) both Lite recipes; notebook 03 only the modern
            # Improved run: the Improved report-recipe runs belong to notebook 04's figure. One
            # curve per configuration: its first seed's run.
            first = {}
            for n, r in runs.items():
                g = group_name(r["config"])
                if g not in first or r["config"].get("seed", 0) < runs[first[g]]["config"].get("seed", 0):
                    first[g] = n
            return [
                n
                for n in first.values()
                if runs[n]["config"]["model"] == model and (model == "lite" or runs[n]["config"]["recipe"] != "report")
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


def key_runs(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The runs a reader compares first: per model, the run with the highest validation accuracy."""
    out = []
    for model in ARCHS:
        best = best_run({n: r for n, r in runs.items() if r["config"]["model"] == model})
        if best:
            out.append(best)
    return out


# The results issue's targets for 40-epoch runs on the full-size JPEG copy of CIFAR-10 (mean test
# accuracy with flip TTA over 3 seeds): each row says whether it is met, or by how much it is missed.
TARGETS = (("lite-modern", 85.0), ("improved-modern", 93.5))
TARGET_SEEDS = 3


class Target(NamedTuple):
    run: str
    target: float  # mean test accuracy to reach, in %
    res: dict[str, Any] | None  # the run's merged record, None where not measured as the target asks
    mean: float  # its mean test accuracy in % (NaN where not measured)
    met: bool


def targets(runs: dict[str, dict[str, Any]]) -> list[Target]:
    """Each target, met or not, from runs on the full-size JPEG copy for the modern recipe's epochs only."""
    out = []
    for name, target in TARGETS:
        res = runs.get(name)
        if res is None or not is_jpeg_full(res) or epochs_of(res) != RECIPES["modern"]["epochs"]:
            out.append(Target(name, target, None, math.nan, False))
            continue
        mean = 100 * res["final"]["test_acc"]
        out.append(Target(name, target, res, mean, mean >= target))
    return out



class Provenance(NamedTuple):
    """What produced the runs, in brief (the README's one provenance sentence)."""

    n_runs: int  # results files (seeds counted apart)
    n_configs: int  # configurations (rows of the results table)
    data_kinds: list[str]  # results.data_kind of each configuration, once each, in order
    epochs: list[int]  # each distinct epoch count, smallest first
    devices: list[str]  # each device any run used, once each, in order
    first: str  # the earliest and latest finishing dates (YYYY-MM-DD; "" where unknown)
    last: str


def provenance(runs: dict[str, dict[str, Any]]) -> Provenance:
    """The runs' data kinds, epochs, devices and dates (merged records name each seed's device)."""
    stamps = sorted(t for r in runs.values() if (t := results.finished_at(r)) > 0)
    days = [datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d") for t in stamps]
    devices = [d for r in runs.values() for d in str(r["device"]).split("; ")]
    return Provenance(
        sum(n_seeds(r) for r in runs.values()),
        len(runs),
        list(dict.fromkeys(data_kind(r["data"]) for r in runs.values())),
        sorted({epochs_of(r) for r in runs.values()}),
        list(dict.fromkeys(devices)),
        days[0] if days else "",
        days[-1] if days else "",
    )


def drawn_seeds(names: Iterable[str], runs: dict[str, dict[str, Any]]) -> list[tuple[str, int, int]]:
    """[(configuration, the seed its figure shows, how many seeds its table row averages)]: the
    notebooks draw one run per configuration, its first seed (the merged record's own config)."""
    return [(n, runs[n]["config"].get("seed", 0), n_seeds(runs[n])) for n in names if n in runs]
