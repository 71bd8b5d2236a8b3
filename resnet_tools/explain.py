"""Beyond accuracy: calibration and class-activation maps (notebook 05).

Calibration: `fit_temperature` fits one temperature T on the validation split's logits
(L-BFGS on the negative log-likelihood; Guo et al. 2017, "On Calibration of Modern Neural
Networks"); `calibrate` reports the test split's NLL and expected calibration error (ECE,
torchmetrics' multiclass calibration error, 15 equal-width confidence bins) before and after
dividing the logits by T; `plot_reliability_diagram` draws accuracy against confidence per bin.
Temperature scaling changes no prediction (argmax), so accuracy is unchanged.

Class-activation maps: `grad_cam` (Captum's LayerGradCam on the last residual block,
`model.stages[-1]`; Selvaraju et al. 2017) and `plot_grad_cam`.

torchmetrics and Captum are optional (requirements.txt): imported inside the functions that
use them, so resnet_lib and the other helpers work without them.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet_tools.dataset import CLASSES
from resnet_tools.figures import PALETTE, _pyplot, _show_image
from resnet_tools.augment import normalize

N_BINS = 15  # confidence bins of the ECE and the reliability diagram (the common choice since Guo et al.)


def _need(module: str, package: str) -> Any:
    """Import `module`, or say which pinned package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{module} is needed here: pip install {package} (pinned in requirements.txt), or pip install -r "
            "requirements.txt"
        ) from None


# ------------------------------------------------------------------ calibration
def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimizing the mean negative log-likelihood of softmax(logits / T)
    on (logits, labels), by L-BFGS over log T (so T stays positive). Fit it on the validation
    split, never the test split."""
    if len(labels) == 0:
        raise ValueError("no logits to fit a temperature on (the run has no validation split?)")
    z, y = logits.detach().double().cpu(), labels.detach().long().cpu()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """ECE of softmax(logits): over equal-width bins of the top-1 confidence, the mean of
    |accuracy - mean confidence| weighted by the bin's share of the images (torchmetrics)."""
    tmf = _need("torchmetrics.functional.classification", "torchmetrics")
    probs = logits.detach().float().cpu().softmax(1)
    return float(
        tmf.multiclass_calibration_error(
            probs, labels.detach().long().cpu(), num_classes=probs.shape[1], n_bins=n_bins, norm="l1"
        )
    )


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin (bins as torchmetrics forms them, [i/n, (i+1)/n)): the
    number of images, their mean top-1 confidence and their accuracy (NaN where empty)."""
    probs = logits.detach().float().cpu().softmax(1)
    conf, pred = probs.max(1)
    hit = (pred == labels.cpu()).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype)
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).double()
    conf_sum = torch.bincount(idx, weights=conf.double(), minlength=n_bins)
    hit_sum = torch.bincount(idx, weights=hit, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "edges": edges.double().numpy(),
            "count": count.numpy(),
            "confidence": (conf_sum / count).numpy(),
            "accuracy": (hit_sum / count).numpy(),
        }


@dataclass
class Calibration:
    """A run's test logits before and after temperature scaling (T fitted on validation)."""

    temperature: float
    logits: torch.Tensor  # test logits, unscaled
    labels: torch.Tensor
    n_bins: int = N_BINS

    def scaled(self) -> torch.Tensor:
        return self.logits / self.temperature

    def summary(self) -> dict[str, float]:
        """Temperature, test accuracy, NLL and ECE (%) before and after scaling."""
        before, after = self.logits.float(), self.scaled().float()
        return {
            "temperature": self.temperature,
            "test acc (%)": 100 * (before.argmax(1) == self.labels).float().mean().item(),
            "NLL before": F.cross_entropy(before, self.labels).item(),
            "NLL after": F.cross_entropy(after, self.labels).item(),
            "ECE before (%)": 100 * expected_calibration_error(before, self.labels, self.n_bins),
            "ECE after (%)": 100 * expected_calibration_error(after, self.labels, self.n_bins),
        }


def calibrate(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    test_logits: torch.Tensor,
    test_labels: torch.Tensor,
    n_bins: int = N_BINS,
) -> Calibration:
    """Fit T on the validation logits; keep the test logits to measure calibration on."""
    t = fit_temperature(val_logits, val_labels)
    return Calibration(t, test_logits.detach().float().cpu(), test_labels.detach().long().cpu(), n_bins)


def calibration_table(calibrations: dict[str, Calibration]) -> Any:
    """pandas DataFrame: one row per run (the dict's keys) with Calibration.summary()."""
    import pandas as pd

    rows = [{"run": name, **cal.summary()} for name, cal in calibrations.items()]
    return pd.DataFrame(rows).round(
        {"temperature": 3, "test acc (%)": 2, "NLL before": 4, "NLL after": 4, "ECE before (%)": 2, "ECE after (%)": 2}
    )


def plot_reliability_diagram(calibrations: dict[str, Calibration], cols: int = 3, title: str | None = None) -> Any:
    """One panel per run (the dict's keys label them): test accuracy against mean confidence in
    each confidence bin, before and after temperature scaling; the diagonal is perfect
    calibration, below it is over-confidence. Bins holding under 0.1% of the images are not drawn."""
    n = max(1, len(calibrations))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    plt, style = _pyplot()
    with style:
        fig, axes = plt.subplots(rows, cols, figsize=(2.35 * cols, 2.45 * rows + 0.3), squeeze=False)
        for ax in axes.flat[n:]:
            ax.set_axis_off()
        for ax, (label, cal) in zip(axes.flat, calibrations.items()):
            summary = cal.summary()
            ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--")
            for color, (when, logits) in zip(PALETTE, (("before", cal.logits), ("after", cal.scaled()))):
                b = reliability_bins(logits, cal.labels, cal.n_bins)
                keep = b["count"] >= max(1, 0.001 * len(cal.labels))
                ece = summary[f"ECE {when} (%)"]
                name = "uncalibrated" if when == "before" else f"T = {cal.temperature:.2f}"
                ax.plot(
                    b["confidence"][keep],
                    b["accuracy"][keep],
                    color=color,
                    marker="o",
                    ms=2.5,
                    label=f"{name}: ECE {ece:.1f}%",
                )
            ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
            ax.set_aspect("equal")
            ax.set_title("\n".join(textwrap.wrap(label, 32)), fontsize=8)
            ax.legend(loc="upper left", fontsize=7, handlelength=1.2)
        fig.suptitle(
            title or f"Reliability on the test split, before and after temperature scaling ({N_BINS} bins)", y=1.0
        )
        fig.tight_layout()
    return fig


# ------------------------------------------------------------------ class-activation maps
def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | list[int],
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    layer: nn.Module | None = None,
) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] of uint8 images (N, 3, H, W) for the classes `targets`,
    from `layer` (default: the last residual block, `model.stages[-1]`), upsampled bilinearly to
    the image size; each map is scaled so that its maximum is 1 (all zero where no evidence)."""
    captum_attr = _need("captum.attr", "captum")
    param = next(model.parameters())
    layer = layer if layer is not None else model.stages[-1]
    mean = torch.tensor(stats[0], dtype=torch.float32, device=param.device)
    std = torch.tensor(stats[1], dtype=torch.float32, device=param.device)
    x = normalize(images.to(param.device), mean, std).contiguous()
    target = torch.as_tensor(targets, dtype=torch.long, device=param.device)
    was_training = model.training
    model.eval()
    try:
        cam = captum_attr.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    finally:
        model.train(was_training)
    cam = captum_attr.LayerAttribution.interpolate(cam.detach().float(), tuple(x.shape[2:]), "bilinear")[:, 0]
    cam = cam.clamp(min=0).cpu()
    peak = cam.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
    return (cam / peak).clamp(0, 1)


def pick_examples(predictions: torch.Tensor, labels: torch.Tensor, n: int = 4, seed: int = 0) -> dict[str, list[int]]:
    """Seeded random indices of up to `n` correct and `n` misclassified images."""
    rng = np.random.default_rng(seed)
    out = {}
    for kind, mask in (("correct", predictions == labels), ("misclassified", predictions != labels)):
        idx = torch.nonzero(mask).flatten().numpy()
        out[kind] = sorted(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())
    return out


def plot_grad_cam(
    groups: dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]], title: str | None = None, alpha: float = 0.5
) -> Any:
    """Per group (e.g. "correct", "misclassified": (uint8 images, Grad-CAM maps, titles)), a row
    of images and under it the same images with their maps laid over them (red = most evidence
    for the class explained)."""
    cols = max([1, *(len(images) for images, _, _ in groups.values())])
    rows = 2 * max(1, len(groups))
    plt, style = _pyplot()
    with style:
        fig, axes = plt.subplots(
            rows,
            cols,
            figsize=(1.35 * cols + 0.4, 1.35 * rows + 0.4),
            squeeze=False,
            gridspec_kw=dict(wspace=0.25, hspace=0.45),
        )
        for ax in axes.flat:
            ax.set_axis_off()
        for g, (label, (images, maps, titles)) in enumerate(groups.items()):
            for i in range(len(images)):
                top, bottom = axes[2 * g, i], axes[2 * g + 1, i]
                top.set_axis_on()
                bottom.set_axis_on()
                _show_image(top, images[i], titles[i])
                _show_image(bottom, images[i])
                bottom.imshow(maps[i].numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1, interpolation="bilinear")
            if len(images):
                axes[2 * g, 0].set_ylabel(label, fontsize=8)
                axes[2 * g + 1, 0].set_ylabel("Grad-CAM", fontsize=8)
            else:
                axes[2 * g, 0].text(0, 0.5, f"{label}: none", transform=axes[2 * g, 0].transAxes)
        default = "Grad-CAM of the predicted class (true class → predicted class, its probability)"
        fig.suptitle(title or default, y=1.0)
    return fig


def example_titles(
    idx: list[int], predictions: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, classes=CLASSES
) -> list[str]:
    """'true\n→ predicted p%' for each index, as plot_misclassified labels its images."""
    titles = []
    for i in idx:
        p = int(predictions[i])
        titles.append(f"{classes[int(labels[i])]}\n→ {classes[p]} {probs[i, p]:.0%}")
    return titles
