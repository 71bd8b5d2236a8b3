"""Knowledge distillation's loss (Hinton, Vinyals and Dean, 2015, "Distilling the Knowledge in a
Neural Network"): a leaf module, it imports only torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(student, targets).

    Both distributions are softened by the temperature T; the T^2 factor keeps the soft loss's
    gradients on the hard loss's scale as T changes (Hinton et al., section 2). The teacher's
    logits carry no gradient; all arithmetic is fp32 (logits from bf16 autocast are cast)."""
    s = student_logits.float()
    t = teacher_logits.detach().float()
    log_p_student, log_p_teacher = F.log_softmax(s / temperature, dim=1), F.log_softmax(t / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    loss = alpha * temperature**2 * soft
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(s, targets, label_smoothing=label_smoothing)
    return loss


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of images on which two models predict the same class (logits or class indices)."""
    a = a.argmax(1) if a.ndim == 2 else a
    b = b.argmax(1) if b.ndim == 2 else b
    if a.shape != b.shape or not len(a):
        raise ValueError(
            f"agreement needs two equal, non-empty sets of predictions, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return (a == b).float().mean().item()
