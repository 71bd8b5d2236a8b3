"""Evaluation: loss, accuracy and logits of a model on uint8 images, with flip test-time augmentation and
bf16 autocast where asked; under DDP each rank scores its slice and the sums are all-reduced. A leaf below
resnet_lib (fit scores every epoch with evaluate_splits); it uses only other leaves."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet_tools import distributed as ddp
from resnet_tools.augment import normalize
from resnet_tools.dataset import CIFAR10, CLASSES
from resnet_tools.devices import bf16_autocast


class EvalResult(NamedTuple):
    loss: float
    accuracy: float
    logits: torch.Tensor  # (N, 10) float32 on the CPU
    predictions: torch.Tensor  # (N,) int64 on the CPU
    labels: torch.Tensor  # (N,) int64 on the CPU


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: CIFAR10 | tuple[torch.Tensor, torch.Tensor],
    split: str = "test",
    tta: bool = False,
    batch_size: int = 1000,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    bf16: bool | None = None,
) -> EvalResult:
    """Loss, accuracy, logits and predictions of `model` on a split ('test' or 'train') of
    `data`, or on explicit `(images, labels)` (uint8 images, as for the validation split).

    Normalizes with `stats` (mean, std) if given, else with `data.stats`, as training
    did. With `tta`, logits are averaged over the image and its horizontal mirror. Runs
    on the model's device; restores its train/eval mode.
    """
    if isinstance(data, CIFAR10):
        if split not in ("test", "train"):
            raise ValueError(f"split={split!r}; valid choices: test, train")
        x_all, y_all = (data.test_x, data.test_y) if split == "test" else (data.train_x, data.train_y)
        stats = stats if stats is not None else data.stats
    else:
        x_all, y_all = data
        if stats is None:
            raise ValueError("pass stats=(mean, std) when evaluating explicit (images, labels)")
    logits_t = logits_of(model, x_all, stats, tta=tta, batch_size=batch_size, bf16=bf16)
    loss = F.cross_entropy(logits_t, y_all).item() if len(y_all) else float("nan")
    preds = logits_t.argmax(1)
    acc = (preds == y_all).float().mean().item() if len(y_all) else float("nan")
    return EvalResult(loss, acc, logits_t, preds, y_all.clone())


@torch.no_grad()
def logits_of(
    model: nn.Module,
    x_all: torch.Tensor,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    tta: bool = False,
    batch_size: int = 1000,
    bf16: bool | None = None,
) -> torch.Tensor:
    """float32 logits (N, 10) on the CPU for uint8 images (N, 3, 32, 32), in eval mode."""
    param = next(model.parameters())
    device = param.device
    mean, std = stats
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    channels_last = param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    logits = []
    try:
        for start in range(0, len(x_all), batch_size):
            x = normalize(x_all[start : start + batch_size].to(device), mean_t, std_t)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with bf16_autocast(device, bf16):
                out = model(x).float()
                if tta:
                    out = 0.5 * (out + model(x.flip(3)).float())
            logits.append(out)  # kept on the device: one copy to the CPU at the end, not a sync per batch
    finally:
        model.train(was_training)
    return torch.cat(logits).cpu() if logits else torch.zeros(0, len(CLASSES))


def evaluate_splits(
    model: nn.Module,
    val_xy: tuple[torch.Tensor, torch.Tensor],
    data: CIFAR10,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    tta: bool,
    bf16: bool,
) -> tuple[EvalResult | None, EvalResult]:
    """(validation or None without a split, test) results. Under DDP each rank evaluates its
    slice and the sums are all-reduced (evaluate_sharded)."""

    def run(xy: tuple[torch.Tensor, torch.Tensor]) -> EvalResult:
        if ddp.world().distributed:
            return evaluate_sharded(model, xy, stats, tta, bf16)
        return evaluate(model, xy, tta=tta, stats=stats, bf16=bf16)

    return (run(val_xy) if len(val_xy[1]) else None), run((data.test_x, data.test_y))


def evaluate_sharded(
    model: torch.nn.Module,
    xy: tuple[torch.Tensor, torch.Tensor],
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    tta: bool = False,
    bf16: bool | None = None,
) -> Any:
    """evaluate's loss and accuracy over (uint8 images, labels), sharded: each rank
    computes the logits of its contiguous slice; loss sums and correct counts are all-reduced.
    An EvalResult whose logits, predictions and labels are empty (they stay on their ranks)."""
    x, y = xy
    w = ddp.world()
    a, b = ddp.share(len(y), w.rank, w.size)
    device = next(model.parameters()).device
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    if b > a:
        logits = logits_of(model, x[a:b], stats, tta=tta, bf16=bf16)
        totals[0] = F.cross_entropy(logits, y[a:b], reduction="sum").item()
        totals[1] = (logits.argmax(1) == y[a:b]).sum().item()
    loss_sum, correct = ddp.all_reduce_sum(totals).tolist()
    n = len(y)
    empty = torch.zeros(0, dtype=torch.int64)
    loss, acc = (loss_sum / n, correct / n) if n else (float("nan"), float("nan"))
    return EvalResult(loss, acc, torch.zeros(0, len(CLASSES)), empty, empty)
