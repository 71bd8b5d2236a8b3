"""Figures: one style, and every plot the notebooks and the report show.

Each plot function returns a matplotlib Figure drawn in FIGURE_STYLE; `save_figure` writes
it as PDF and PNG. matplotlib and seaborn are imported inside the functions that use them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from resnet_lib import CIFAR10_MEAN, TrainConfig
from resnet_tools.dataset import CIFAR10, CLASSES
from resnet_tools.results import WRITTEN_KEY, class_counts, stamp
from resnet_tools.safeio import atomic_write
from resnet_tools.augment import augment, cutout
from resnet_tools.evaluation import EvalResult

# seaborn's "colorblind" palette (distinguishable with the common colour-vision deficiencies).
PALETTE = (
    "#0173b2",
    "#de8f05",
    "#029e73",
    "#d55e00",
    "#cc78bc",
    "#ca9161",
    "#fbafe4",
    "#949494",
    "#ece133",
    "#56b4e9",
)


# One style for every figure: sizes in points, for figures printed at 3.5-7 inches wide.
FIGURE_STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.5,
    "image.interpolation": "nearest",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,  # TrueType fonts embedded in the PDF, not Type 3
}


_SPLIT_STYLE = {"train": "--", "val": "-", "test": ":"}  # line style per split in curve plots


def _pyplot() -> Any:
    """(matplotlib.pyplot, a context manager applying FIGURE_STYLE). pyplot picks its backend
    itself: inline in Jupyter, Agg when headless."""
    import contextlib

    import matplotlib
    import matplotlib.pyplot as plt
    from cycler import cycler

    @contextlib.contextmanager
    def style() -> Iterator[None]:
        with plt.rc_context({**FIGURE_STYLE, "axes.prop_cycle": cycler(color=PALETTE)}):
            yield
            # Jupyter's inline backend, if first loaded inside the context, turns interactive
            # mode on; rc_context would undo that and later figures would not be shown.
            interactive = matplotlib.is_interactive()
        matplotlib.interactive(interactive)

    return plt, style()


def save_figure(fig: Any, name: str, figures_dir: str | Path) -> tuple[Path, Path]:
    """Write `figures_dir/name.pdf` (vector, fonts embedded) and `name.png` (200 dpi)."""
    if not name or Path(name).name != name or Path(name).suffix.lower() in (".pdf", ".png"):
        raise ValueError(
            f"figure name {name!r} must be a bare file name without extension, e.g. 'lite_training_curves'"
        )
    import matplotlib

    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    pdf, png = folder / f"{name}.pdf", folder / f"{name}.png"
    with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):  # atomically: never half a figure
        atomic_write(
            pdf, "wb", lambda f: fig.savefig(f, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
        )  # reproducible bytes
        # The stamp is in the PNG only, so the PDF's bytes stay reproducible.
        meta = {WRITTEN_KEY: stamp()}
        atomic_write(png, "wb", lambda f: fig.savefig(f, format="png", dpi=200, bbox_inches="tight", metadata=meta))
    return pdf, png


def _show_image(ax: Any, img: torch.Tensor, title: str | None = None) -> None:
    """A uint8 (3, H, W) image on `ax`, without ticks, grid or frame."""
    ax.imshow(img.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=7, pad=2)


def plot_class_balance(data: CIFAR10) -> Any:
    """Bar chart: each class's share of the training and test sets (10% = balanced)."""
    counts = class_counts(data)
    plt, style = _pyplot()
    with style:
        fig, ax = plt.subplots(figsize=(7.0, 2.6))
        x = np.arange(len(counts))
        for i, split in enumerate(("train", "test")):
            share = 100 * counts[split] / max(1, counts[split].sum())
            ax.bar(x + (i - 0.5) * 0.4, share, 0.4, label=f"{split} ({counts[split].sum():,} images)")
        ax.axhline(100 / len(counts), color="0.3", lw=0.8, ls="--", label="balanced")
        ax.set_xticks(x, counts.index, rotation=30, ha="right")
        ax.set(ylabel="share of split (%)", title="Class balance")
        ax.legend(ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.08))
    return fig


def plot_samples_per_class(data: CIFAR10, per_class: int = 8, seed: int = 0) -> Any:
    """Grid of random training images: one row per class."""
    rng = np.random.default_rng(seed)
    y = data.train_y.numpy()
    plt, style = _pyplot()
    with style:
        fig, axes = plt.subplots(
            len(data.classes),
            per_class,
            figsize=(0.6 * per_class + 0.8, 0.6 * len(data.classes)),
            squeeze=False,
            gridspec_kw=dict(wspace=0.05, hspace=0.05),
        )
        for c, row in enumerate(axes):
            idx = np.flatnonzero(y == c)
            pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
            for ax, i in zip(row, pick):
                _show_image(ax, data.train_x[i])
            for ax in row[len(pick) :]:
                ax.set_axis_off()
            row[0].set_axis_on()
            row[0].set_ylabel(data.classes[c], rotation=0, ha="right", va="center", fontsize=8)
        fig.suptitle("Random training images per class", y=0.92)
    return fig


def plot_augmentation_preview(
    data: CIFAR10, cfg: TrainConfig, n_images: int = 6, draws: int = 7, seed: int = 0
) -> Any:
    """Training images (one per class) and `draws` random augmentations of each, as `cfg` trains.

    Uses the training pipeline's own `augment` (crop, flip) and `cutout`; a cutout square
    is shown in the mean colour, which is what zero means after normalization.
    """
    rng = np.random.default_rng(seed)
    y = data.train_y.numpy()
    idx = [rng.choice(np.flatnonzero(y == c)) for c in range(min(n_images, len(data.classes))) if (y == c).any()]
    x = data.train_x[torch.as_tensor(idx)]
    gen = torch.Generator().manual_seed(seed)
    fill = torch.tensor(CIFAR10_MEAN).mul(255).round().to(torch.uint8)[None, :, None, None]
    columns = [x]
    for _ in range(draws):
        a = augment(x, gen, crop=cfg.crop, flip=cfg.flip)
        if cfg.cutout:
            keep = cutout(torch.ones(len(a), 1, *a.shape[2:]), cfg.cutout, gen).bool()
            a = torch.where(keep, a, fill)
        columns.append(a)
    parts = [
        p
        for p, on in (
            ("random crop (zero-padded by 4 px)", cfg.crop),
            ("horizontal flip", cfg.flip),
            (f"cutout {cfg.cutout} px", cfg.cutout),
        )
        if on
    ] or ["none"]
    plt, style = _pyplot()
    with style:
        fig, axes = plt.subplots(
            len(idx),
            draws + 1,
            figsize=(0.7 * (draws + 1), 0.75 * len(idx)),
            squeeze=False,
            gridspec_kw=dict(wspace=0.05, hspace=0.1),
        )
        for r, row in enumerate(axes):
            for c, ax in enumerate(row):
                _show_image(ax, columns[c][r], ("original" if c == 0 else f"draw {c}") if r == 0 else None)
            row[0].set_ylabel(data.classes[y[idx[r]]], rotation=0, ha="right", va="center", fontsize=8)
            row[0].spines["left"].set_visible(False)
        fig.suptitle(f"Training augmentation, {cfg.recipe} recipe\n{', '.join(parts)}", y=1.0)
    return fig


def plot_training_curves(
    histories: dict[str, dict[str, list[float]]],
    title: str | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
    lr: bool = False,
) -> Any:
    """Loss and accuracy per epoch: one colour per run (the dict's keys label them), one
    line style per split. Splits a history lacks (no validation set, say) are skipped.
    With `lr`, a third panel shows each run's learning-rate schedule (the rate at the
    start of each epoch, as the history records it)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    plt, style = _pyplot()
    with style:
        if lr:
            fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(7.0, 2.4))
            _plot_lr(ax_lr, histories)
        else:
            fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(7.0, 2.7))
        shown: set[str] = set()
        for color, (label, h) in zip(PALETTE, histories.items()):
            epochs = h["epoch"]
            marker = "o" if len(epochs) <= 12 else None
            for split in splits:
                acc = np.array(h.get(f"{split}_acc") or [np.nan], dtype=float)
                if np.isnan(acc).all():
                    continue
                loss = np.array(h[f"{split}_loss"], dtype=float)
                kw = dict(color=color, ls=_SPLIT_STYLE[split], marker=marker, ms=3)
                ax_loss.plot(epochs, loss, **kw)
                ax_acc.plot(epochs, 100 * acc, **kw)
                shown.add(split)
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss")
        ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
        last = max((max(h["epoch"], default=1) for h in histories.values()), default=1)
        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(last, 6 if lr else 10)))
            ax.set_xlim(0.5 if last <= 12 else 0, last + 0.5 if last <= 12 else last)
        names = {
            "train": "training (running, over the epoch)",
            "val": "validation (after the epoch)",
            "test": "test (after the epoch)",
        }
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        # Two legends under the panels: colours = runs (left), line styles = splits (right).
        fig.legend(
            handles=[Line2D([], [], color=c, label=k) for c, k in zip(PALETTE, histories)],
            loc="upper left",
            bbox_to_anchor=(0.06, 0.0),
        )
        fig.legend(
            handles=[Line2D([], [], color="0.3", ls=_SPLIT_STYLE[s], label=names[s]) for s in splits if s in shown],
            loc="upper right",
            bbox_to_anchor=(0.98, 0.0),
        )
    return fig


def _plot_lr(ax: Any, histories: dict[str, dict[str, list[float]]]) -> None:
    """Each run's learning rate against training progress in epochs: the history's `lr` is the
    rate at the start of epoch e, drawn at e - 1."""
    from matplotlib.ticker import MaxNLocator

    last = 1
    for color, h in zip(PALETTE, histories.values()):
        rates = [math.nan if v is None else v for v in h.get("lr") or []]
        if not rates:
            continue
        start = np.asarray(h["epoch"], dtype=float) - 1
        ax.plot(start, rates, color=color, marker="o" if len(rates) <= 12 else None, ms=3)
        last = max(last, int(max(h["epoch"])))
    ax.set(xlabel="epoch", ylabel="learning rate", xlim=(0, last))
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(last, 6)))
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))


def plot_confusion_matrix(cm: np.ndarray, title: str | None = None, classes: tuple[str, ...] = CLASSES) -> Any:
    """Heatmap of the confusion matrix normalized per true class (each row sums to 100%)."""
    import seaborn as sns

    pct = 100 * cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    plt, style = _pyplot()
    with style:
        fig, ax = plt.subplots(figsize=(4.8, 4.2))
        sns.heatmap(
            pct,
            annot=True,
            fmt=".0f",
            annot_kws={"size": 7},
            cmap="Blues",
            vmin=0,
            vmax=100,
            square=True,
            xticklabels=classes,
            yticklabels=classes,
            cbar_kws={"label": "% of the true class", "shrink": 0.8},
            ax=ax,
        )
        ax.set(xlabel="predicted class", ylabel="true class")
        ax.grid(False)
        ax.tick_params(axis="x", rotation=45)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
        if title:
            ax.set_title(title)
    return fig


def plot_per_class_accuracy(table: Any, labels: dict[str, str] | None = None) -> Any:
    """Grouped bars: test accuracy per class, one bar per run (column of `table`)."""
    plt, style = _pyplot()
    with style:
        fig, ax = plt.subplots(figsize=(7.0, 2.8))
        x = np.arange(len(table))
        width = 0.8 / max(1, table.shape[1])
        for i, col in enumerate(table.columns):
            ax.bar(x + (i - (table.shape[1] - 1) / 2) * width, table[col], width, label=(labels or {}).get(col, col))
        ax.set_xticks(x, table.index, rotation=30, ha="right")
        ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title="Test accuracy per class")
        ax.legend(ncols=min(2, table.shape[1]), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return fig


def plot_misclassified(
    images: torch.Tensor,
    ev: EvalResult,
    n: int = 20,
    cols: int = 5,
    seed: int = 0,
    title: str | None = None,
    classes: tuple[str, ...] = CLASSES,
) -> Any:
    """A seeded random sample of misclassified images, each labelled with its true class,
    the predicted class and the predicted class's softmax probability."""
    wrong = torch.nonzero(ev.predictions != ev.labels).flatten().numpy()
    pick = np.sort(np.random.default_rng(seed).choice(wrong, size=min(n, len(wrong)), replace=False))
    probs = ev.logits.softmax(dim=1)
    rows = max(1, math.ceil(len(pick) / cols))
    plt, style = _pyplot()
    with style:
        # Columns wide enough for "→ automobile 100%" at 7 pt without touching the next title.
        fig, axes = plt.subplots(
            rows,
            cols,
            figsize=(1.35 * cols, 1.15 * rows + 0.45),
            squeeze=False,
            gridspec_kw=dict(wspace=0.25, hspace=0.5),
        )
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, i in zip(axes.flat, pick):
            ax.set_axis_on()
            p = int(ev.predictions[i])
            _show_image(ax, images[i], f"{classes[int(ev.labels[i])]}\n→ {classes[p]} {probs[i, p]:.0%}")
        if not len(pick):
            axes.flat[0].text(0, 0.5, "no misclassified images", transform=axes.flat[0].transAxes)
        head = title or "Misclassified test images"
        fig.suptitle(
            f"{head}\n(true class → predicted class, its probability; {len(pick)} of {len(wrong):,} errors "
            f"in {len(ev.labels):,} images)",
            y=1.0,
        )
    return fig


def plot_predictions(
    images: torch.Tensor,
    probs: torch.Tensor,
    n: int = 10,
    cols: int = 5,
    title: str | None = None,
    classes: tuple[str, ...] = CLASSES,
) -> Any:
    """Predictions on unlabeled images: the n most confident (top rows) and the n least
    confident (bottom rows), each labelled with the predicted class and its probability."""
    conf, pred = probs.max(dim=1)
    order = torch.argsort(conf, descending=True)
    groups = [("most confident", order[:n]), ("least confident", order.flip(0)[:n])]
    rows_per = max(1, math.ceil(n / cols))
    plt, style = _pyplot()
    with style:
        fig, axes = plt.subplots(
            2 * rows_per,
            cols,
            figsize=(1.35 * cols, 2.3 * rows_per + 0.6),
            squeeze=False,
            gridspec_kw=dict(wspace=0.25, hspace=0.5),
        )
        for ax in axes.flat:
            ax.set_axis_off()
        for g, (label, idx) in enumerate(groups):
            for k, i in enumerate(idx.tolist()):
                ax = axes[g * rows_per + k // cols, k % cols]
                ax.set_axis_on()
                head = f"{label}\n" if k == 0 else "\n"
                _show_image(ax, images[i], f"{head}{classes[int(pred[i])]} {conf[i]:.0%}")
        fig.suptitle(
            title or f"Predictions on {len(probs):,} unlabeled images (predicted class, its probability)", y=1.0
        )
    return fig


def plot_distillation(
    merged: dict[str, dict[str, Any]], agreements: dict[str, float] | None = None, title: str | None = None
) -> Any:
    """Test accuracy per configuration (merge_seeds records: mean, with the seeds' standard deviation
    as an error bar and each seed as a dot), annotated with `agreements` (name: the fraction of
    test images on which the student predicts its teacher's class, mean over seeds)."""
    agreements = agreements or {}
    plt, style = _pyplot()
    with style:
        fig, ax = plt.subplots(figsize=(4.6, 2.6))
        for i, (name, rec) in enumerate(merged.items()):
            mean, std = 100 * rec["final"]["test_acc"], 100 * rec.get("final_std", {}).get("test_acc", np.nan)
            per_seed = rec.get("seeds", {}).get("values", {}).get("test_acc", [rec["final"]["test_acc"]])
            seeds = [100 * v for v in per_seed]
            ax.bar(i, mean, color=PALETTE[i % len(PALETTE)], yerr=None if np.isnan(std) else std, capsize=4)
            ax.plot([i] * len(seeds), seeds, "k.", ms=4)
            note = f"{mean:.2f}%"
            if name in agreements:
                note += f"\nagrees with teacher\non {100 * agreements[name]:.1f}%"
            ax.annotate(note, (i, mean), xytext=(0, 4), textcoords="offset points", ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks(range(len(merged)), [f"{n}\n({r.get('num_params', 0):,} params)" for n, r in merged.items()],
                      fontsize=7)
        low = min(100 * r["final"]["test_acc"] for r in merged.values()) if merged else 0
        ax.set(ylabel="test accuracy (%)", ylim=(max(0, low - 10), 100))
        if title:
            ax.set_title(title)
        fig.tight_layout()
    return fig
