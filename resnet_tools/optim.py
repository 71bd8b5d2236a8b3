"""The optimizer and the learning-rate schedule of a run, from its TrainConfig (`cfg`, any object with
its fields): SGD (Nesterov where asked), Adam or AdamW, and a per-step multiplier of the peak lr (linear
warm-up, then constant, cosine or linear decay). A leaf: torch only."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn as nn

OPTIMIZERS = ("sgd", "adam", "adamw")


SCHEDULES = ("constant", "cosine", "onecycle")


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, horizon_steps: int = 0) -> float:
    """Multiplier of the peak lr at `step` (0-based): linear warm-up, then the schedule, which
    decays over `horizon_steps` (0 = `total_steps`; a longer horizon ends the run part-way)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, (horizon_steps or total_steps) - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)  # onecycle: linear decay to zero


def make_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def optimizer_and_schedule(model: nn.Module, cfg: Any, steps_per_epoch: int) -> tuple[Any, Any]:
    """cfg's optimizer and its learning-rate schedule, stepped once per training step (lr_factor)."""
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    horizon_steps = round(cfg.schedule_epochs * steps_per_epoch)
    if 0 < total_steps <= warmup_steps:  # a 1-epoch `modern` run would never leave its 2-epoch warm-up
        warnings.warn(
            f"warmup_epochs={cfg.warmup_epochs:g} is not shorter than the run (epochs={cfg.epochs}): the peak "
            f"lr {cfg.lr:g} is never reached and the schedule never decays; set --warmup-epochs below {cfg.epochs}",
            stacklevel=4,  # fit's caller
        )
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, cfg.schedule, horizon_steps)
    )
    return optimizer, scheduler
