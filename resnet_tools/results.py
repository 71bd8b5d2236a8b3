"""Results: the one place that knows how a run is named, which data it used, which run is
best, and how results become tables (pandas imported inside the functions that use it)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from resnet_lib import ARCHS, CIFAR10_MEAN, CIFAR10_STD, RECIPES, TrainConfig
from resnet_tools import distributed as ddp
from resnet_tools.budget import count_params
from resnet_tools.checkpoints import load_checkpoint_dict
from resnet_tools.dataset import CIFAR10, CLASSES, channel_stats
from resnet_tools.devices import device_name, numerics
from resnet_tools.renamed import FORMER_SEED_SUFFIX, RECIPE_ALIASES, with_current_recipe
from resnet_tools.evaluation import EvalResult
from resnet_tools.optim import OPTIMIZERS

# The official CIFAR-10 split sizes (https://www.cs.toronto.edu/~kriz/cifar.html).
FULL_TRAIN, FULL_TEST = 50_000, 10_000
# What every results.json written by resnet_tools.job.train_and_evaluate holds.
REQUIRED_KEYS = ("config", "num_params", "history", "final", "data", "device", "wall_seconds")


class ResultsError(ValueError):
    """A results file exists but cannot be used (unreadable, or missing required keys)."""


# The seed report's results table: (training accuracy, test accuracy) in %, keyed by
# (model, recipe, optimizer). Shown beside our numbers, labelled "reported by the seed".
SEED_REPORTED: dict[tuple[str, str, str], tuple[float, float]] = {
    ("lite", "report", "sgd"): (79.12, 79.87),
    ("improved", "report", "sgd"): (94.65, 89.68),
    ("improved", "report", "adam"): (98.42, 91.52),
}


def run_record(
    cfg: TrainConfig,
    model: torch.nn.Module,
    history: dict[str, list[float]],
    val: EvalResult | None,
    test: EvalResult,
    data: CIFAR10,
    n_train: int,
    n_val: int,
    device: torch.device,
    wall_seconds: float,
) -> dict[str, Any]:
    """What results.json holds for a finished run (REQUIRED_KEYS and more): the config, the
    history, the final model's numbers, which data it used (data.label; see data_label), the
    device and the time it took. Test numbers are for reporting only; any choice (best epoch,
    early stopping, tuning) uses the validation numbers."""
    val_acc = [a for a in history["val_acc"] if not math.isnan(a)]
    device_label = device_name(device)
    return {
        "config": dataclasses.asdict(cfg),
        "num_params": count_params(model),
        "history": history,
        "final": {  # the last epoch's model
            "train_acc": history["train_acc"][-1],  # running accuracy on augmented batches, last epoch
            "val_loss": val.loss if val else None,
            "val_acc": val.accuracy if val else None,
            "test_loss": test.loss,
            "test_acc": test.accuracy,
            "tta": cfg.tta,
            "best_val_epoch": history["epoch"][val_acc.index(max(val_acc))] if val_acc else None,
            # One digit per test image (classes 0-9): paired tests between runs (mcnemar).
            "test_predictions": "".join(map(str, test.predictions.tolist())),
        },
        "data": {
            "label": data.label,
            "root": data.root,
            "official": data.official,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": len(data.test_y),
            # which images and labels (CIFAR10.fingerprint): saved_results reuses a run on these only
            "train_sha256": data.fingerprint["train_sha256"],
            "test_sha256": data.fingerprint["test_sha256"],
        },
        "device": device_label,
        "numerics": numerics(device, cfg.bf16),  # "bf16 autocast" or "fp32"
        "distributed": ddp.describe(device_label),  # world_size, backend, every rank's device
        "wall_seconds": wall_seconds,
        "train_seconds": sum(history["seconds"]),
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def group_name(cfg: TrainConfig | dict[str, Any]) -> str:
    """A configuration's name, seed left out: model-recipe, plus the optimizer for the seed
    report's recipes (its comparison) or where it differs from the recipe's, and "-ft" for a run started from
    trained weights (init_from), and the teacher's temperature and mix where they are not the
    recipe's (distillation). Runs that differ only in
    their seed form one group, one row of a results table (mean +- std over the seeds)."""
    c = with_current_recipe(cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg))  # recipe seed: report
    name = f"{c['model']}-{c['recipe']}"
    if c["recipe"].startswith("report") or c["optimizer"] != RECIPES.get(c["recipe"], {}).get("optimizer"):
        name += f"-{c['optimizer']}"
    if c.get("init_from"):  # started from trained weights: never averaged with runs from a random init
        name += "-ft"
    if c.get("teacher"):  # distilled: another recipe with a teacher, or the distill recipe's other T or mix
        preset = RECIPES.get(c["recipe"], {})
        t, a = c.get("distill_temperature"), c.get("distill_alpha")
        if "distill_alpha" not in preset:  # a recipe without a teacher of its own
            name += f"-kd-t{t:g}-a{a:g}"
        elif (t, a) != (preset["distill_temperature"], preset["distill_alpha"]):
            name += f"-t{t:g}-a{a:g}"
    return name


def run_name(cfg: TrainConfig | dict[str, Any]) -> str:
    """Folder name of a run under the results folder: its group name, plus -s<k> for seeds
    other than 0 (lite-modern, lite-modern-s1, ...)."""
    c = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    return group_name(c) + (f"-s{c['seed']}" if c.get("seed", 0) else "")


def former_run_name(cfg: TrainConfig | dict[str, Any]) -> str:
    """The folder name the run had before the rename (renamed.py): the old recipe name and
    -seed<k> (lite-seed-sgd-seed1 for lite-report-sgd-s1), which folders written before keep."""
    c = with_current_recipe(cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg))
    name, now = group_name(c), f"{c['model']}-{c['recipe']}"
    old = {new: old for old, new in RECIPE_ALIASES.items()}.get(c["recipe"])
    if old is not None:
        name = f"{c['model']}-{old}" + name[len(now):]
    return name + (f"{FORMER_SEED_SUFFIX}{c['seed']}" if c.get("seed", 0) else "")


def run_dir(results_dir: str | Path, cfg: TrainConfig | dict[str, Any]) -> Path:
    """Where a run's files are: results_dir/run_name, or its folder of before the rename where only
    that one exists, so a run started then still resumes (and is reused) where its checkpoint is."""
    now, before = Path(results_dir) / run_name(cfg), Path(results_dir) / former_run_name(cfg)
    return before if before.is_dir() and not now.exists() else now


def optimizer_label(c: dict[str, Any]) -> str:
    if c["optimizer"] == "sgd":
        return ("SGD + Nesterov momentum" if c.get("nesterov") else "SGD + momentum") if c.get("momentum") else "SGD"
    return {"adam": "Adam", "adamw": "AdamW"}.get(c["optimizer"], c["optimizer"])


def run_label(c: dict[str, Any]) -> str:
    """Human-readable name of a run's config dict, for legends and titles."""
    return f"{c['model'].capitalize()}, {c['recipe']} recipe, {optimizer_label(c)}"


def read_record(path: Path) -> dict[str, Any]:
    """One results.json with REQUIRED_KEYS, or ResultsError naming it (unreadable, not one of ours)."""
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise ResultsError(
            f"{path}: unreadable results file ({e}); rerun that notebook or delete the folder"
        ) from None
    missing = [k for k in REQUIRED_KEYS if k not in res] if isinstance(res, dict) else list(REQUIRED_KEYS)
    if missing:
        raise ResultsError(f"{path}: not a resnet_lib results file: missing {', '.join(missing)}")
    res["config"] = with_current_recipe(res["config"])  # a run of recipe seed renders as report
    return res


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


# What each kind of field must hold to be rendered (None and NaN mean "not measured" where allowed).
_KINDS = {
    "accuracy": (lambda v: _number(v) and 0 <= v <= 1, "an accuracy in [0, 1]"),
    "accuracy or none": (lambda v: v is None or _is_nan(v) or (_number(v) and 0 <= v <= 1), "an accuracy in [0, 1]"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative whole number"),
    "amount": (lambda v: _number(v) and v >= 0, "a non-negative finite number"),
    "amount or none": (lambda v: v is None or (_number(v) and v >= 0), "a non-negative finite number"),
    "text": (lambda v: isinstance(v, str), "text"),
}
# (field, kind, required): what the README, the paper and the notebooks' tables read from a results file.
RECORD_FIELDS = (
    ("num_params", "count", True), ("wall_seconds", "amount", True), ("train_seconds", "amount", False),
    ("device", "text", True), ("finished", "text", False), ("finished_at", "amount", False),
    ("config.model", "text", True), ("config.recipe", "text", True), ("config.optimizer", "text", True),
    ("config.schedule", "text", True), ("config.lr", "amount", True), ("config.seed", "count", False),
    ("config.epochs", "count", False), ("final.train_acc", "accuracy", True), ("final.test_acc", "accuracy", True),
    ("final.val_acc", "accuracy or none", False), ("data.n_train", "count", False), ("data.n_val", "count", False),
    ("data.n_test", "count", True), ("data.label", "text", False), ("data.root", "text", False),
)
HISTORY_FIELDS = (
    ("epoch", "count"), ("train_acc", "accuracy or none"), ("val_acc", "accuracy or none"),
    ("test_acc", "accuracy or none"), ("images_per_sec", "amount or none"), ("seconds", "amount or none"),
)


def check_record(res: dict[str, Any]) -> list[str]:
    """What in a results record cannot be rendered, as "field: problem" (empty: it can): accuracies
    outside [0, 1], negative or non-finite counts and times, missing fields the renderers need."""
    problems = [f"{name}: not a mapping" for name in ("config", "final", "data", "history")
                if not isinstance(res.get(name), dict)]
    if problems:
        return problems
    # A distilled run's name holds its teacher's temperature and mix (group_name): numbers then.
    required = {"config.distill_temperature", "config.distill_alpha"} if res["config"].get("teacher") else set()
    for name, kind, needed in RECORD_FIELDS + tuple((f, "amount", True) for f in sorted(required)):
        where, _, key = name.rpartition(".")
        holder = res[where] if where else res
        if key not in holder:
            problems += [f"{name}: missing"] if needed else []
        elif not _KINDS[kind][0](holder[key]):
            problems.append(f"{name}: {holder[key]!r} is not {_KINDS[kind][1]}")
    return problems + _history_problems(res["history"])


def _history_problems(history: dict[str, Any]) -> list[str]:
    """check_record's part for the per-epoch history: lists of valid values, one per epoch."""
    problems = []
    epochs = history.get("epoch", [])
    for key, kind in HISTORY_FIELDS:
        values = history.get(key, [])
        if not isinstance(values, list):
            problems.append(f"history.{key}: {values!r} is not a list")
            continue
        bad = [v for v in values if not _KINDS[kind][0](v)]
        if bad:
            problems.append(f"history.{key}: {bad[0]!r} is not {_KINDS[kind][1]}")
        elif key != "epoch" and values and isinstance(epochs, list) and len(values) != len(epochs):
            problems.append(f"history.{key}: {len(values)} values for {len(epochs)} epochs")
    return problems


def warn(message: str) -> None:
    """One line on stderr: what was left out, and why (no traceback: nothing failed)."""
    print(f"warning: {message}", file=sys.stderr)


def load_results(results_dir: str | Path, warn: Callable[[str], None] = warn) -> dict[str, dict[str, Any]]:
    """{run name: results.json} for every `results_dir/<run>/results.json`, in a fixed order
    (model, recipe, optimizer, then name). Raises ResultsError for a file that is unreadable or not
    ours; a file with values no table can show (check_record), or a second copy of a run already
    read (same configuration and seed), is left out with a `warn` line naming it and why."""
    runs: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}  # run_name(config) -> the folder it was read from
    for path in sorted(Path(results_dir).glob("*/results.json")):
        res, folder = read_record(path), path.parent.name
        problems = check_record(res)
        if problems:
            warn(f"{path}: left out of every table: {'; '.join(problems)}")
            continue
        name = run_name(res["config"])
        if name in seen:
            warn(f"{path}: left out: the same run ({name}) as {seen[name]}/results.json; delete one of the folders")
            continue
        if folder not in (name, former_run_name(res["config"])):  # a folder named before the rename is its own
            warn(f"{path}: its folder is not named for its run ({name}); reported as {group_name(res['config'])}")
        seen[name] = folder
        runs[folder] = res

    def key(item: tuple[str, dict[str, Any]]) -> tuple[Any, ...]:
        c = item[1]["config"]
        order = lambda seq, v: list(seq).index(v) if v in seq else len(seq)  # noqa: E731
        return order(ARCHS, c["model"]), order(RECIPES, c["recipe"]), order(OPTIMIZERS, c["optimizer"]), item[0]

    return dict(sorted(runs.items(), key=key))


# The configurations the notebooks train by default, in the report's order, and which notebook
# makes each: each model with the report recipe (SGD; Improved also Adam) and the modern recipe, and
# the Lite model distilled from the Improved one.
NOTEBOOK_RUNS: tuple[tuple[str, dict[str, str], str], ...] = (
    ("report", dict(model="lite", optimizer="sgd"), "02_train_lite"),
    ("modern", dict(model="lite"), "02_train_lite"),
    ("report", dict(model="improved", optimizer="sgd"), "04_optimizer_comparison"),
    ("report", dict(model="improved", optimizer="adam"), "04_optimizer_comparison"),
    ("modern", dict(model="improved"), "03_train_improved"),
    # The teacher is the best improved-modern run; any file stands in for it in the group's name.
    ("distill", dict(model="lite", teacher="improved-modern/checkpoint.pt"), "06_distillation"),
)


def expected_runs() -> dict[str, str]:
    """{group name: the notebook that trains it} for the notebooks' default runs."""
    return {group_name(TrainConfig.from_recipe(recipe, device="cpu", **kw)): nb for recipe, kw, nb in NOTEBOOK_RUNS}


def missing_runs(runs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The notebooks' default configurations with no run among `runs`: {group name: notebook}."""
    have = {group_name(r["config"]) for r in runs.values()}
    return {name: nb for name, nb in expected_runs().items() if name not in have}


def selection_accuracy(res: dict[str, Any]) -> float | None:
    """Validation accuracy of a run's final model: the only number model selection may use."""
    v = res["final"].get("val_acc")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def best_run(runs: dict[str, dict[str, Any]]) -> str | None:
    """The run with the highest validation accuracy (never chosen by test accuracy); None
    when no run has a validation split."""
    scored = [(selection_accuracy(r), name) for name, r in runs.items() if selection_accuracy(r) is not None]
    return max(scored)[1] if scored else None


def teacher_checkpoint(
    runs: dict[str, dict[str, Any]], results_dir: str | Path, group: str = "improved-modern"
) -> Path:
    """checkpoint.pt of `group`'s run with the highest validation accuracy (never the test's), for
    distillation. Raises FileNotFoundError naming the run to make first where there is none."""
    members = {n: r for n, r in runs.items() if group_name(r["config"]) == group
               and (Path(results_dir) / n / "checkpoint.pt").is_file()}
    best = best_run(members)
    if best is None:
        raise FileNotFoundError(
            f"no {group} run with a checkpoint and a validation split in {results_dir}: train the teacher first "
            "(notebook 03, or: python resnet_lib.py train --model improved --recipe modern), or set TEACHER"
        )
    return Path(results_dir) / best / "checkpoint.pt"


def seed_groups(runs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """{group name: the names of its runs}, for runs that differ only in their seed (group_name),
    in the order of `runs`."""
    groups: dict[str, list[str]] = {}
    for name, res in runs.items():
        groups.setdefault(group_name(res["config"]), []).append(name)
    return groups


def best_of_each_group(runs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """{group name: its run with the highest validation accuracy} for the groups of runs that
    differ only in their seed (seed_groups); groups without a validation split are left out."""
    chosen = {group: best_run({n: runs[n] for n in names}) for group, names in seed_groups(runs).items()}
    return {group: name for group, name in chosen.items() if name is not None}


# Accuracy keys of results["final"] that merge_seeds averages.
_ACC_KEYS = ("train_acc", "val_acc", "test_acc")


def finished_at(res: dict[str, Any]) -> float:
    """When a run finished (its results' "finished" time, or the latest over merged seeds), in
    seconds since the epoch; 0.0 where unknown. Figures and tables drawn before it are stale. The
    recorded time, not the file's mtime: a fresh clone gives every file the same checkout time."""
    if "finished_at" in res:
        return float(res["finished_at"])
    try:
        return datetime.strptime(str(res.get("finished", "")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (ValueError, OverflowError):
        return 0.0


def merge_seeds(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{group name: one record per group of runs that differ only in their seed}: the first
    seed's results with "final" holding the mean over seeds of each accuracy, "final_std" the
    sample standard deviation (NaN for one seed), "seeds" the count, the seeds, the run names and
    every per-seed value, "device" every device its runs used. Groups keep the order of `runs`."""
    merged = {}
    for group, names in seed_groups(runs).items():
        members = [runs[n] for n in names]
        values = {k: [m["final"].get(k) for m in members] for k in _ACC_KEYS}
        final, std = dict(members[0]["final"]), {}
        for k, vs in values.items():
            xs = [float(v) for v in vs if v is not None and not (isinstance(v, float) and math.isnan(v))]
            final[k] = float(np.mean(xs)) if xs else None
            std[k] = float(np.std(xs, ddof=1)) if len(xs) > 1 else math.nan
        merged[group] = {
            **members[0],
            "final": final,
            "final_std": std,
            "seeds": {
                "n": len(members),
                "seeds": [m["config"].get("seed", 0) for m in members],
                "runs": names,
                "values": values,
            },
            "wall_seconds": sum(m["wall_seconds"] for m in members),
            "finished_at": max(finished_at(m) for m in members),
            # Seeds run on different machines or thread counts: every device, once each.
            "device": "; ".join(dict.fromkeys(str(m["device"]) for m in members)),
        }
    return merged


class McNemar(NamedTuple):
    only_a: int  # test images run A gets right and run B wrong
    only_b: int  # ... and the other way round
    p: float  # exact two-sided binomial p-value of only_a vs only_b (McNemar's test)


def mcnemar(pred_a: Any, pred_b: Any, labels: Any) -> McNemar:
    """McNemar's exact test of two classifiers on the same test images: only the images one
    gets right and the other wrong count; under "equally accurate" they split 50/50."""
    a = np.asarray(pred_a) == np.asarray(labels)
    b = np.asarray(pred_b) == np.asarray(labels)
    n_a, n_b = int((a & ~b).sum()), int((~a & b).sum())
    n, k = n_a + n_b, min(n_a, n_b)
    if n == 0:
        return McNemar(0, 0, 1.0)
    # P(X <= k) for X ~ Binomial(n, 1/2), in logs (n can be thousands), doubled for two sides.
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return McNemar(n_a, n_b, min(1.0, 2 * tail))


def test_predictions(res: dict[str, Any]) -> np.ndarray | None:
    """The final model's test predictions stored in a results file (a string of class digits)."""
    text = res["final"].get("test_predictions")
    return np.frombuffer(text.encode(), dtype=np.uint8) - ord("0") if text else None


class Verdict(NamedTuple):
    diff: float  # mean accuracy of A minus B, in points
    holds: bool  # the difference holds up against seed noise (and, where paired, McNemar's test)
    text: str  # a sentence fragment saying so, e.g. "2.10 points, more than twice its standard error"
    counts: tuple[int, int] = (0, 0)  # runs (seeds) of A and of B
    two_se: float = math.nan  # twice the difference's standard error, points (NaN under two seeds each)


def difference_verdict(a: dict[str, Any], b: dict[str, Any], key: str = "test_acc") -> Verdict:
    """Does A's accuracy differ from B's beyond the noise? A and B are merge_seeds records (a
    single results file counts as one seed). Only with at least two seeds each can the seeds'
    spread be measured, and then the difference must exceed twice its standard error. One run
    each never makes a finding: McNemar's test on one pair (`mcnemar`) says whether those two
    models differ on this test set, not whether the recipes do, since seeds vary more."""
    va = [v for v in a.get("seeds", {}).get("values", {}).get(key, [a["final"].get(key)]) if v is not None]
    vb = [v for v in b.get("seeds", {}).get("values", {}).get(key, [b["final"].get(key)]) if v is not None]
    if not va or not vb:
        return Verdict(math.nan, False, "not measured for both")
    diff = 100 * (float(np.mean(va)) - float(np.mean(vb)))
    if len(va) < 2 or len(vb) < 2:
        return Verdict(
            diff,
            False,
            f"{abs(diff):.2f} points, from {len(va)} and {len(vb)} run(s): too few seeds "
            "to tell it from seed-to-seed noise",
            (len(va), len(vb)),
        )
    se = 100 * math.sqrt(np.var(va, ddof=1) / len(va) + np.var(vb, ddof=1) / len(vb))
    holds = abs(diff) > 2 * se
    text = (
        f"{abs(diff):.2f} points over {len(va)} and {len(vb)} seeds, "
        f"{'more' if holds else 'less'} than twice its standard error ({2 * se:.2f})"
    )
    return Verdict(diff, holds, text, (len(va), len(vb)), 2 * se)


def _all_images(d: dict[str, Any]) -> bool:
    """The data record counts the official split's 50,000 + 10,000 images."""
    return d.get("n_test") == FULL_TEST and d.get("n_train", 0) + d.get("n_val", 0) == FULL_TRAIN


def data_label(d: dict[str, Any]) -> str:
    """Which data a run used, from its results' "data" record: the label the loader gave it
    (CIFAR10.label); files written before labels existed are labelled from md5 status and sizes."""
    if d.get("label"):
        return str(d["label"])
    if d.get("official"):
        return "CIFAR-10 (official)" if _all_images(d) else "subset of CIFAR-10 (official)"
    return f"non-official CIFAR-10 files: {Path(str(d.get('root', ''))).name or 'unknown'}"


# The shared real subset (../shared/data/cifar10-mini/README.md): real CIFAR-10 training
# images; its test_batch is held-out *training* images, not the official test set.
MINI_NAME = "cifar10-mini"


def data_kind(d: dict[str, Any]) -> str:
    """'full' (the official 50,000 + 10,000), 'jpeg' (the full JPEG copy), 'official-subset',
    'mini' or 'other', from the run's data label (data_label) and sizes."""
    label = data_label(d)
    if label == "CIFAR-10 (official)":
        return "full" if _all_images(d) else "official-subset"
    if label == "CIFAR-10 (JPEG copy)":
        return "jpeg" if _all_images(d) else "other"
    if label.startswith("subset of CIFAR-10 (official)"):
        return "official-subset"
    return "mini" if Path(str(d.get("root", ""))).name == MINI_NAME else "other"


def saved_results(results_dir: str | Path, cfg: TrainConfig, data: CIFAR10) -> dict[str, Any] | None:
    """The results of an earlier run of exactly `cfg` on the same data (results.json and
    checkpoint.pt present), or None. Fields that change only speed may differ. A results.json
    that is unreadable or not ours raises ResultsError (read_record), naming the file."""
    folder = run_dir(results_dir, cfg)
    if not (folder / "results.json").is_file() or not (folder / "checkpoint.pt").is_file():
        return None
    res = read_record(folder / "results.json")
    speed_only = {"device", "compile", "cuda_graph", "channels_last"}
    same_cfg = {k: v for k, v in res["config"].items() if k not in speed_only} == {
        k: v for k, v in dataclasses.asdict(cfg).items() if k not in speed_only
    }
    d = res["data"]  # read_record checked that config and data are there
    same_data = (
        Path(d.get("root", "")).resolve() == Path(data.root).resolve()
        and data_label(d) == data.label
        and d.get("n_test") == len(data.test_y)
        and _same_images(d, folder / "checkpoint.pt", data)
    )
    return res if same_cfg and same_data else None


def _same_images(recorded: dict[str, Any], checkpoint: Path, data: CIFAR10) -> bool:
    """Whether a run saw these very images and labels: its results' SHA-256 sums, or (results
    written before they held them) its checkpoint's. Data changed in place under the same folder
    and counts must not pass for the same."""
    if "train_sha256" not in recorded:
        try:
            recorded = load_checkpoint_dict(checkpoint).get("data") or {}
        except (OSError, ValueError, RuntimeError):  # unreadable: not a run to reuse
            return False
    now = data.fingerprint
    return all(recorded.get(k) == now[k] for k in ("train_sha256", "test_sha256"))


def results_table(results: list[dict[str, Any]]) -> Any:
    """pandas DataFrame, one row per run, in the seed report's form (model, optimizer,
    parameters, training and test accuracy in %) plus recipe, validation accuracy, epochs,
    data, device and wall time, and the seed's reported numbers where a row repeats its run."""
    import pandas as pd

    rows = []
    for r in results:
        c, fin, d = with_current_recipe(r["config"]), r["final"], r.get("data", {})
        reported = SEED_REPORTED.get((c["model"], c["recipe"], c["optimizer"]), (math.nan, math.nan))
        val = fin.get("val_acc")
        rows.append(
            {
                "run": run_name(c),
                "model": c["model"].capitalize(),
                "recipe": c["recipe"],
                "optimizer": optimizer_label(c),
                "parameters": r["num_params"],
                "train acc (%)": round(100 * fin["train_acc"], 2),
                "val acc (%)": round(100 * val, 2) if val is not None else math.nan,
                "test acc (%)": round(100 * fin["test_acc"], 2),
                "test TTA": bool(fin.get("tta")),
                "epochs": len(r["history"]["epoch"]),
                "data": f"{data_label(d)}, {d.get('n_train', 0):,} train / {d.get('n_test', 0):,} test",
                "device": r.get("device", ""),
                "wall time (min)": round(r["wall_seconds"] / 60, 2),
                "train acc reported by the seed (%)": reported[0],
                "test acc reported by the seed (%)": reported[1],
            }
        )
    table = pd.DataFrame(rows)
    return table.dropna(axis=1, how="all") if len(table) else table  # no val column without a validation split


def summary_table(runs: dict[str, dict[str, Any]]) -> Any:
    """pandas DataFrame, one row per group of seeds (merge_seeds): mean and sample std of the
    training, validation and test accuracy in %, the number of seeds, data and epochs."""
    import pandas as pd

    rows = []
    for group, m in merge_seeds(runs).items():
        row = {"run": group, "optimizer": optimizer_label(m["config"]), "seeds": m["seeds"]["n"]}
        for key, label in (("train_acc", "train"), ("val_acc", "val"), ("test_acc", "test")):
            mean, std = m["final"].get(key), m["final_std"].get(key, math.nan)
            row[f"{label} acc (%)"] = round(100 * mean, 2) if mean is not None else math.nan
            row[f"{label} std"] = round(100 * std, 2) if not math.isnan(std) else math.nan
        row.update(
            {
                "test TTA": bool(m["final"].get("tta")),
                "epochs": len(m["history"]["epoch"]),
                "data": data_label(m["data"]),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def for_display(table: Any) -> Any:
    """A table as a notebook shows it: missing cells (the std of one seed, a run without a
    validation split) as "—" rather than NaN. For the eye only; report.tables.write_table formats its own."""
    return table.astype(object).where(table.notna(), "—")


# When an output was written, inside the output itself (a PNG text chunk, a comment in a table's .tex):
# a file's mtime will not do, as a fresh clone gives every file the same checkout time.
WRITTEN_KEY = "Written at"


def stamp() -> str:
    """Now, as the ISO-8601 UTC text that `written_at` reads back."""
    return datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")


def written_at(path: str | Path) -> float | None:
    """When a figure (name.png or its sibling name.pdf) or a table (name.csv, .md or .tex) was
    written, from the stamp inside it, in seconds since the epoch; None where it has none."""
    path = Path(path)
    text = ""
    try:
        if path.suffix.lower() in (".png", ".pdf"):
            from PIL import Image

            with Image.open(path.with_suffix(".png")) as img:
                text = str(img.info.get(WRITTEN_KEY, ""))
        else:
            head = path.with_suffix(".tex").read_text(encoding="utf-8").split("\n", 1)[0]
            text = head.split(" at ", 1)[1].split(";", 1)[0] if " at " in head else ""
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (OSError, ValueError, SyntaxError):  # no such file, not a PNG, or no stamp in it
        return None


def class_counts(data: CIFAR10) -> Any:
    """pandas DataFrame: images per class in the training and test sets."""
    import pandas as pd

    n = len(data.classes)
    return pd.DataFrame(
        {
            "train": np.bincount(data.train_y.numpy(), minlength=n),
            "test": np.bincount(data.test_y.numpy(), minlength=n),
        },
        index=pd.Index(data.classes, name="class"),
    )


def channel_stats_table(data: CIFAR10) -> Any:
    """pandas DataFrame: per-channel mean and std of the training images (pixels in [0, 1])
    beside CIFAR10_MEAN / CIFAR10_STD, the official training set's values."""
    import pandas as pd

    mean, std = channel_stats(data.train_x)
    return pd.DataFrame(
        {
            "mean (this data)": mean,
            "mean (CIFAR10_MEAN)": CIFAR10_MEAN,
            "std (this data)": std,
            "std (CIFAR10_STD)": CIFAR10_STD,
        },
        index=pd.Index(["red", "green", "blue"], name="channel"),
    ).round(4)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int = len(CLASSES)) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    y, p = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    return np.bincount(y * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(evals: dict[str, EvalResult], classes: tuple[str, ...] = CLASSES) -> Any:
    """pandas DataFrame of test accuracy (%) per class (rows) and run (columns)."""
    import pandas as pd

    cols = {}
    for name, ev in evals.items():
        cm = confusion_matrix(ev.labels, ev.predictions, len(classes))
        cols[name] = (100 * np.diag(cm) / np.maximum(cm.sum(axis=1), 1)).round(2)
    return pd.DataFrame(cols, index=pd.Index(classes, name="class"))


def confused_pairs(evals: dict[str, EvalResult], k: int = 5, classes: tuple[str, ...] = CLASSES) -> Any:
    """pandas DataFrame: per run, the k class pairs most often confused (both directions added)."""
    import pandas as pd

    tables = []
    for name, ev in evals.items():
        cm = confusion_matrix(ev.labels, ev.predictions, len(classes))
        rows = []
        for a in range(len(classes)):
            for b in range(a + 1, len(classes)):
                n_ab, n_ba, total = int(cm[a, b]), int(cm[b, a]), int(cm[a].sum() + cm[b].sum())
                rows.append(
                    {
                        "run": name,
                        "class A": classes[a],
                        "class B": classes[b],
                        "A predicted as B": n_ab,
                        "B predicted as A": n_ba,
                        "confusions": n_ab + n_ba,
                        "% of A and B test images": round(100 * (n_ab + n_ba) / max(total, 1), 2),
                    }
                )
        table = pd.DataFrame(rows).sort_values(["confusions", "class A", "class B"], ascending=[False, True, True])
        tables.append(table.head(k))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
