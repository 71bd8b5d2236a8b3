"""The training step replayed as one CUDA graph.

Why: on a GPU a small model's step (Lite: 78k parameters, batch 128-256) is bound by the host
launching its few hundred kernels, not by the GPU running them. A CUDA graph records the whole
step once (forward, loss, backward, optimizer update) and replays it with one launch.

`make_train_step` returns a callable with the contract of `resnet_tools.step.train_step` (the same
autocast, loss, zero_grad/backward/optimizer.step/scheduler.step; the detached loss and the
logits, without a host sync). It replays a graph only where that is sound: CUDA, `cfg.cuda_graph`,
no torch.compile, no DDP, and plain SGD (the `modern` recipe); anywhere else it is `train_step`.

How the graphed step keeps training what eager training computes:
- the learning rate: a graph would bake in the lr of the moment it was captured, so the captured
  optimizer step is torch's fused SGD, which reads the lr from a one-element device tensor per
  param group. That tensor is only in `param_groups` while the step is recorded; the groups keep
  their float lr for the scheduler and for checkpoints (which stay loadable by eager code), and
  before every replay the tensor is filled with the group's current float lr (no host sync);
- the warm-up that capture needs (a few steps on a side stream) runs with the lr at 0, and then
  every parameter, buffer (BatchNorm statistics, num_batches_tracked) and optimizer state tensor
  is restored in place to its value before warm-up: the graph captured those very tensors. SGD's
  momentum buffers that warm-up created are zeroed: for dampening 0 a first step from a zero
  buffer (0.9 * 0 + grad) is eager's first step (buffer = grad);
- a batch of another size (an epoch's smaller last batch) takes eager `train_step` on the same
  model and optimizer: both update the same tensors in place.
If recording fails, one line goes to stderr and training continues eagerly from the restored state.
`capture=False` runs the same static buffers, lr tensors and warm-up/restore without recording a
graph, so that logic is tested on the CPU. Imports torch and resnet_tools.step only.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from resnet_tools.step import train_step

WARMUP_STEPS = 3  # iterations before capture (PyTorch's CUDA-graph examples use 3)
Step = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: Any,
    device: torch.device,
    batch_size: int,
    capture: bool | None = None,
    teacher: nn.Module | None = None,
) -> Step:
    """`step(x, y, scale=1.0) -> (loss, logits)` as `resnet_tools.step.train_step` takes it. `capture`:
    None decides from the device and `cfg`; True records a CUDA graph; False runs the graphed
    step's logic eagerly (for tests). `batch_size`: the batches that replay the graph. A
    distillation step (`teacher`) runs eagerly: the recorded graph holds the student alone."""
    def eager(x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        return train_step(model, optimizer, scheduler, x, y, cfg, device, scale, teacher)

    if teacher is not None:
        return eager
    if capture is None:
        if device.type != "cuda" or not cfg.cuda_graph or cfg.compile or _distributed(model):
            return eager
        capture = True
    reason = unsupported(optimizer)
    if reason:
        print(f"cuda_graph: {reason}; training eagerly", file=sys.stderr)
        return eager
    return GraphedStep(model, optimizer, scheduler, cfg, device, batch_size, eager, capture)


def _distributed(model: nn.Module) -> bool:
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    return ddp or (torch.distributed.is_available() and torch.distributed.is_initialized())


def unsupported(optimizer: torch.optim.Optimizer) -> str | None:
    """Why the optimizer's step cannot be graphed, or None. Only SGD has a fused kernel that takes
    a tensor lr without `capturable` state (Adam/AdamW would need device step counters)."""
    if type(optimizer) is not torch.optim.SGD:
        return f"{type(optimizer).__name__} is not supported (SGD only)"
    if any(g["dampening"] != 0 or g["differentiable"] for g in optimizer.param_groups):
        return "SGD with dampening or differentiable=True is not supported"
    return None


class _NoScheduler:
    """Stands in for the scheduler inside the recorded step: it steps on the host, per call."""

    def step(self) -> None:
        pass


class GraphedStep:
    """The training step on static input buffers, replayed as a CUDA graph (see the module's
    docstring). Recorded lazily, at the first batch of `batch_size` images."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        cfg: Any,
        device: torch.device,
        batch_size: int,
        eager: Step,
        capture: bool = True,
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.cfg, self.device = model, optimizer, scheduler, cfg, device
        self.batch_size, self.eager, self.capture = batch_size, eager, capture
        # float32: the fused CUDA kernel reads the lr as a float.
        self.lrs = [torch.zeros((), dtype=torch.float32, device=device) for _ in optimizer.param_groups]
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None  # x, y: what the graph reads
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: tuple[torch.Tensor, torch.Tensor] | None = None  # loss, logits: what the graph writes
        self.capture_seconds = 0.0  # warm-up + recording, reported apart by the benchmark
        self.failed = False  # recording failed: eager from then on

    def __call__(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        if self.failed or scale != 1.0 or len(y) != self.batch_size:
            return self.eager(x, y, scale)
        if self.static is None and not self._record_step(x, y):
            return self.eager(x, y, scale)
        sx, sy = self.static
        if x.shape != sx.shape or y.shape != sy.shape:
            return self.eager(x, y, scale)
        sx.copy_(x)
        sy.copy_(y)
        for t, group in zip(self.lrs, self.optimizer.param_groups):
            t.fill_(group["lr"])  # the scheduler's current lr, read by the graph
        if self.graph is not None:
            self.graph.replay()
        else:  # capture=False: the same step, run eagerly on the static buffers
            self.out = self._body()
        self.scheduler.step()
        loss, logits = self.out
        return loss.clone(), logits.clone()  # the next replay overwrites the graph's outputs

    def _body(self) -> tuple[torch.Tensor, torch.Tensor]:
        """train_step on the static buffers, the optimizer reading the lr tensors, the scheduler
        left out (it steps on the host) and autocast's cast cache off (as CUDA graphs need)."""
        with _lr_tensors(self.optimizer, self.lrs), _no_autocast_cache():
            return train_step(self.model, self.optimizer, _NoScheduler(), *self.static, self.cfg, self.device)

    def _record_step(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Static buffers, warm-up and recording, then the state restored; False if it failed."""
        t0 = time.perf_counter()
        self.static = (torch.empty_like(x), torch.empty_like(y))  # keeps x's memory format
        self.static[0].copy_(x)
        self.static[1].copy_(y)
        saved = _snapshot(self.model, self.optimizer)
        try:
            self._warm_up()
            self.graph, self.out = self._record()
        except Exception as e:  # CUDA and autograd report capture problems in several types
            msg = (str(e).strip().splitlines() or [""])[0][:200]
            print(f"cuda_graph: capture failed ({type(e).__name__}: {msg}); training eagerly", file=sys.stderr)
            self.failed, self.static, self.graph, self.out = True, None, None, None
        finally:
            _restore(saved, self.model, self.optimizer)  # recording runs no kernels: restoring after it is the same
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - t0
        return not self.failed

    def _warm_up(self) -> None:
        """A few steps with the lr at 0, on a side stream where a graph will be recorded."""
        for t in self.lrs:
            t.zero_()
        stream = torch.cuda.Stream(self.device) if self.capture else None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            for _ in range(WARMUP_STEPS):
                self._body()
        if stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(stream)

    def _record(self) -> tuple[torch.cuda.CUDAGraph | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """The graph and its output tensors; (None, None) with capture=False."""
        if not self.capture:
            return None, None
        self.optimizer.zero_grad(set_to_none=True)  # the recorded backward allocates the grads in the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._body()
        return graph, out


@contextlib.contextmanager
def _lr_tensors(optimizer: torch.optim.Optimizer, lrs: list[torch.Tensor]) -> Iterator[None]:
    """Each group's lr as a device tensor, read by the fused SGD kernel; the floats come back after."""
    saved = [(g["lr"], g["fused"], g["foreach"]) for g in optimizer.param_groups]
    for group, t in zip(optimizer.param_groups, lrs):
        group.update(lr=t, fused=True, foreach=False)
    try:
        yield
    finally:
        for group, (lr, fused, foreach) in zip(optimizer.param_groups, saved):
            group.update(lr=lr, fused=fused, foreach=foreach)


@contextlib.contextmanager
def _no_autocast_cache() -> Iterator[None]:
    """autocast inherits this setting (resnet_lib's autocast does not set cache_enabled)."""
    was = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(was)


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Copies of every parameter, buffer and optimizer state tensor (clones: the originals stay)."""
    tensors = [*model.parameters(), *model.buffers()]
    state = {
        (id(p), k): v.detach().clone()
        for p, s in optimizer.state.items()
        for k, v in s.items()
        if isinstance(v, torch.Tensor)
    }
    return {"tensors": tensors, "values": [t.detach().clone() for t in tensors], "state": state}


@torch.no_grad()
def _restore(saved: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Put back the snapshot in place (copy_, never new tensors: a graph may hold these); optimizer
    state that did not exist before (SGD's momentum buffers after the first step) is zeroed."""
    for t, v in zip(saved["tensors"], saved["values"]):
        t.copy_(v)
    for p, s in optimizer.state.items():
        for k, v in s.items():
            if isinstance(v, torch.Tensor):
                before = saved["state"].get((id(p), k))
                if before is not None:
                    v.copy_(before)
                else:
                    v.zero_()
