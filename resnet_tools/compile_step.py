"""The training step fit takes, `make_step`: the eager step or its CUDA graph (resnet_tools.cudagraph),
through torch.compile where resnet_tools.devices.compile_enabled says it pays, with a fall-back to eager
when an automatic compile fails. The benchmark builds its steps here too, so it times what fit runs.
A leaf: it uses only other leaves."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn

from resnet_tools import cudagraph
from resnet_tools.devices import compile_enabled

def make_step(
    model: nn.Module, optimizer: Any, scheduler: Any, cfg: Any, device: torch.device, batch: int,
    teacher: nn.Module | None = None, steps: int = 0,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """fit's training step, `step(x, y, scale=1.0) -> (loss, logits)`: resnet_tools.cudagraph.make_train_step
    (a CUDA graph where cfg allows one) through torch.compile where compile_enabled says for a run of
    `steps` steps. An automatic compile (cfg.compile None) that fails, e.g. without a C++ compiler, warns
    and trains eagerly from the failed step on; one asked for fails as torch says. The benchmark builds
    its steps here too (bench/methods.py), so it times the step fit takes."""
    def make(compiled: bool) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        # dynamic=False: the smaller last batch of an epoch gets its own static graph instead
        # of turning the batch size symbolic for every later step (automatic dynamic shapes).
        step_model = torch.compile(model, dynamic=False) if compiled else model
        return cudagraph.make_train_step(step_model, optimizer, scheduler, dataclasses.replace(cfg, compile=compiled),
                               device, batch, teacher=teacher)

    if not compile_enabled(device.type, cfg.compile, steps):
        return make(False)
    compiled = make(True)
    if cfg.compile is not None:
        return compiled
    current = [compiled]

    def step(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return current[0](*args)
        except Exception as e:  # compiling fails before the step changes weights, so it can run again
            if current[0] is not compiled or not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            warnings.warn(f"torch.compile failed ({type(e).__name__}); training eagerly (--no-compile skips it)",
                          stacklevel=2)
            current[0] = make(False)
            return current[0](*args)

    return step
