"""One optimization step: forward (in bf16 autocast where the config asks), the loss
(cross-entropy, or distillation's with a teacher), backward, optimizer and scheduler.
`resnet_lib.fit` takes it through resnet_tools.cudagraph.make_train_step, which replays it as a
CUDA graph where that is sound. Imports torch, resnet_tools.devices and resnet_tools.distill."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet_tools.devices import bf16_autocast
from resnet_tools.distill import distillation_loss


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Any,  # a resnet_lib.TrainConfig
    device: torch.device,
    scale: float = 1.0,
    teacher: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimization step on a prepared batch; returns (detached loss, logits) without a
    host sync. Shared by `fit` and the benchmark's fixed-batch ceiling. `scale` multiplies
    the loss that is differentiated (DDP: this rank's share of an uneven last batch). With a
    `teacher` (eval mode, frozen), the loss is distillation's on the same batch and numerics."""
    with bf16_autocast(device, cfg.bf16):
        logits = model(x)
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(x)
    if teacher is None:
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    else:
        loss = distillation_loss(
            logits, teacher_logits, y, cfg.distill_temperature, cfg.distill_alpha, cfg.label_smoothing
        )
    optimizer.zero_grad(set_to_none=True)
    (loss * scale if scale != 1.0 else loss).backward()
    optimizer.step()
    scheduler.step()
    return loss.detach(), logits
