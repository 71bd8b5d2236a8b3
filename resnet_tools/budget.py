"""The mini-project's parameter budget: every model trained or loaded counts its trainable
parameters here. Imports torch only."""

from __future__ import annotations

import torch.nn as nn

PARAM_BUDGET = 5_000_000  # the mini-project's hard limit on trainable parameters


class BudgetError(ValueError):
    """A model has more parameters than PARAM_BUDGET and over-budget was not allowed."""


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_budget(model: nn.Module, allow_over_budget: bool = False) -> int:
    """Return the parameter count; raise BudgetError above PARAM_BUDGET unless allowed."""
    n = count_params(model)
    if n > PARAM_BUDGET and not allow_over_budget:
        raise BudgetError(
            f"model has {n:,} parameters, over the {PARAM_BUDGET:,} budget; "
            "pass allow_over_budget=True to build or train it anyway"
        )
    return n
