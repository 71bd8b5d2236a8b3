"""The seed report's layer tables, generated from a model: one row per leaf layer and residual block in
execution order, numbered as torchsummary numbers them (Conv2d-1, ...), and `summary` printing them in
the seed's format. A tool above resnet_lib (it needs the block class, RBL); torchinfo is an extra."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch.nn as nn

from resnet_lib import RBL
from resnet_tools.budget import count_params

class LayerRow(NamedTuple):
    name: str  # e.g. "Conv2d-1", numbered like the seed's torchsummary tables
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int  # parameters owned directly by this layer (a block owns none itself)


def layer_table(model: nn.Module) -> list[LayerRow]:
    """The seed-style layer table of `model` for one 3x32x32 image, via torchinfo.

    Rows are the leaf layers and the residual blocks in execution order, as in the
    seed report's tables; containers (nn.Sequential, the ResNet itself) are left out.
    """
    import torchinfo  # an extra: imported here so that the module imports without it

    device = next(model.parameters()).device
    stats = torchinfo.summary(model, input_size=(1, 3, 32, 32), device=device, mode="eval", verbose=0)
    # torchinfo lists a block before its layers (pre-forward order); the seed's
    # torchsummary lists it after them (when its forward returns). Emit blocks late.
    ordered, open_blocks = [], []
    for info in stats.summary_list:
        while open_blocks and info.depth <= open_blocks[-1].depth:
            ordered.append(open_blocks.pop())
        if isinstance(info.module, RBL):
            open_blocks.append(info)
        elif info.is_leaf_layer:
            ordered.append(info)
    ordered.extend(reversed(open_blocks))
    rows = []
    for info in ordered:
        own = sum(p.numel() for p in info.module.parameters(recurse=False))
        rows.append(LayerRow(f"{info.class_name}-{len(rows) + 1}", tuple(info.output_size[1:]), own))
    return rows


def summary(model: nn.Module, file: Any = None) -> list[LayerRow]:
    """Print the layer table in the seed report's format and return its rows."""
    rows = layer_table(model)
    line = "-" * 64
    out = [line, f"{'Layer (type)':>20}  {'Output Shape':>25} {'Param #':>15}", "=" * 64]
    for r in rows:
        shape = "[-1, " + ", ".join(str(s) for s in r.output_shape) + "]"
        out.append(f"{r.name:>20}  {shape:>25} {r.params:>15,}")
    total = count_params(model)
    out += [line, f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0", line]
    print("\n".join(out), file=file)
    return rows
