"""The record: the committed results/ and figures/ that the README and the paper are built from.

Only a run of the notebooks' own configurations on all of CIFAR-10 (the official files or the
JPEG copy) writes there. Any other run (a subset, other data, other epochs or hyperparameters,
a smoke run) goes to a folder named for it under runs/ (git-ignored), so that trying something
never replaces what the README shows. Folders given explicitly are always obeyed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterable

from resnet_lib import TrainConfig
from resnet_tools.dataset import CIFAR10
from resnet_tools.results import FULL_TEST, FULL_TRAIN, NOTEBOOK_RUNS

# Data whose full-size runs are the record (CIFAR10.label, as the loaders set it).
RECORD_DATA = ("CIFAR-10 (official)", "CIFAR-10 (JPEG copy)")
# Fields that change the speed or the device of a run, not what it learns.
SPEED_ONLY = frozenset({"device", "compile", "cuda_graph", "channels_last", "bf16"})


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "data"


def data_reason(data: CIFAR10) -> str | None:
    """Why `data` cannot make the record (None: it can): a short folder-name tag."""
    full = len(data.train_y) == FULL_TRAIN and len(data.test_y) == FULL_TEST
    if data.label in RECORD_DATA and full:
        return None
    return "subset" if data.label.startswith("subset of ") else _slug(Path(str(data.root)).name or data.label)


def config_reasons(cfg: TrainConfig) -> list[str]:
    """The fields of `cfg` that differ from its recipe's preset (speed-only fields aside; the
    optimizer where a notebook trains the recipe with it, as 04 does Adam), as folder-name tags
    such as "epochs2" or "lr0.05"; [] for a run of the recipe as the notebooks train it."""
    own = any(r == cfg.recipe and kw.get("model") == cfg.model and kw.get("optimizer") == cfg.optimizer
              for r, kw, _ in NOTEBOOK_RUNS)
    preset = dataclasses.asdict(TrainConfig.from_recipe(cfg.recipe, model=cfg.model, seed=cfg.seed,
                                                        optimizer=cfg.optimizer if own else None,
                                                        teacher=cfg.teacher if cfg.recipe == "distill" else None))
    given = dataclasses.asdict(cfg)
    changed = [k for k in given if k not in SPEED_ONLY and given[k] != preset[k]]
    return [_slug(f"{k.replace('_', '')}{given[k]}") for k in changed]


def not_record_tag(data: CIFAR10, configs: Iterable[TrainConfig] = (), smoke: bool = False) -> str | None:
    """The folder name under runs/ for runs that are not the record, or None for the record."""
    if smoke:
        return "smoke"
    parts = [data_reason(data)] + sorted({tag for cfg in configs for tag in config_reasons(cfg)})
    parts = [p for p in parts if p]
    return "-".join(parts)[:80] if parts else None


def output_dirs(
    root: Path,
    data: CIFAR10,
    configs: Iterable[TrainConfig] = (),
    results_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    smoke: bool = False,
) -> tuple[Path, Path]:
    """Where a notebook writes (results folder, figures folder), and a line saying which and why:
    the given folders; else root/results and root/figures for the record; else root/runs/<tag>/."""
    tag = not_record_tag(data, configs, smoke)
    base = root if tag is None else root / "runs" / tag
    results = Path(results_dir).expanduser().resolve() if results_dir else base / "results"
    figures = Path(figures_dir).expanduser().resolve() if figures_dir else base / "figures"
    if tag is None:
        where = "the record" if not (results_dir or figures_dir) else "folders as given"
        print(f"{where}: results in {results}, figures in {figures}")
    else:
        print(f"not the record ({tag}): results in {results}, figures in {figures}")
    return results, figures
