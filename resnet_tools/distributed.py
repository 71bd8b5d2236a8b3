"""Data-parallel training with PyTorch's own engine (torch.distributed + DistributedDataParallel).

Under `torchrun --nproc_per_node=N resnet_lib.py train ...`, `resnet_lib.train_and_evaluate`
calls `init_from_env`, which starts the process group from torchrun's environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL where the run trains on CUDA
GPUs (each process on GPU LOCAL_RANK), Gloo on CPUs. `resnet_lib.fit` then trains one model
with DDP when a process group is initialised (by us, or by the caller):

- every rank draws the same epoch order and augmentation from the same seeded CPU generator,
  so global batch k is the same images as in a single-process run; each rank augments and
  trains on its contiguous share of it (`batch_size` is the global batch: batch_size /
  world_size images per rank). The training set stays in host memory; each epoch a rank's
  device receives only its share of the images (uint8, one copy), and augments it there;
- training statistics, and evaluation (each rank evaluates a contiguous slice of the split),
  are all-reduced, so every rank holds the global numbers;
- only rank 0 writes checkpoints, results and logs; the others wait at a barrier.

Without a process group (no torchrun, or torchrun with one process) the helpers here are
no-ops and a run is exactly as before. A checkpoint records the world size; resuming it with
another number of processes is refused (`check_world_size`). Imports torch only.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process stands: rank, number of processes, and the process group's backend."""

    rank: int = 0
    size: int = 1
    backend: str | None = None  # None: a single process, no process group

    @property
    def main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place in the initialised process group; World() (rank 0 of 1) without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))


def env_world_size() -> int:
    """WORLD_SIZE as torchrun (or srun + torchrun) sets it; 1 where it is not set."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: torch.device) -> bool:
    """Start the process group from torchrun's environment variables where WORLD_SIZE > 1
    and none is initialised yet: NCCL for CUDA devices (and select GPU LOCAL_RANK), Gloo
    otherwise. True if this call started it (the caller then ends it with `shutdown`)."""
    if env_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return True


def shutdown(finished: bool = True) -> None:
    """End the process group. After a finished run every rank first waits for the others: rank 0
    hosts the rendezvous store, and tearing it down while another rank is still talking to it
    can abort that rank ("terminate called without an active exception"). After an error there
    is no barrier: the other ranks may never reach it."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: a CUDA device without an index becomes the current GPU (LOCAL_RANK)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def check_device(device: torch.device, w: World) -> None:
    """Several processes train on CUDA GPUs (one each: LOCAL_RANK's) or on CPUs."""
    from resnet_lib import ConfigError  # it imports this module lazily

    if not w.distributed:
        return
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(f"device={device.type!r}: data-parallel training runs on CUDA GPUs (NCCL) or CPUs (Gloo)")
    if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
        raise ConfigError(
            f"device='{device}' under torchrun: each process uses its own GPU (LOCAL_RANK, here "
            f"cuda:{torch.cuda.current_device()}); use --device cuda or auto, and CUDA_VISIBLE_DEVICES to choose GPUs"
        )


def check_batch_size(batch_size: int, w: World) -> None:
    from resnet_lib import ConfigError  # it imports this module lazily

    if batch_size % w.size:
        raise ConfigError(
            f"batch_size={batch_size} is the global batch and must be a multiple of the {w.size} processes "
            f"(world size); e.g. batch_size={batch_size - batch_size % w.size or w.size}"
        )


def check_sync_bn(sync_bn: bool, device: torch.device, w: World) -> None:
    from resnet_lib import ConfigError

    if sync_bn and w.distributed and device.type != "cuda":
        raise ConfigError("sync_bn=True needs CUDA GPUs (PyTorch's SyncBatchNorm); on CPUs use sync_bn=False")


def setup_rank(device: torch.device, batch_size: int, sync_bn: bool, seed: int, w: World) -> torch.device:
    """What `fit` does first under a process group: check the device, the global batch and
    SyncBatchNorm, seed this rank's own randomness (outside the shared data generator), and
    return this rank's device."""
    check_device(device, w)
    device = rank_device(device)
    check_batch_size(batch_size, w)
    check_sync_bn(sync_bn, device, w)
    torch.manual_seed(seed + w.rank)
    return device


def wrap(model: torch.nn.Module, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """The model `fit` trains under a process group: DistributedDataParallel (after converting
    BatchNorm to SyncBatchNorm in place, same parameters, where `sync_bn`)."""
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def global_batch_sizes(n: int, batch_size: int, world_size: int) -> list[int]:
    """Sizes of an epoch's global batches over `n` images. With several processes a last
    partial batch smaller than the world size (fewer images than processes) is skipped."""
    sizes = [batch_size] * (n // batch_size)
    rest = n % batch_size
    if rest and rest >= world_size:
        sizes.append(rest)
    return sizes


def share(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """(start, stop) of rank's contiguous share of `size` items: sizes differ by at most one."""
    return rank * size // world_size, (rank + 1) * size // world_size


def rank_positions(n: int, batch_size: int, rank: int, world_size: int) -> tuple[torch.Tensor, list[int]]:
    """Positions (into the epoch's order) of the images this rank trains on, batch after
    batch, and its local batch sizes: its share of every global batch."""
    parts, sizes, start = [], [], 0
    for size in global_batch_sizes(n, batch_size, world_size):
        a, b = share(size, rank, world_size)
        parts.append(torch.arange(start + a, start + b))
        sizes.append(b - a)
        start += size
    return (torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)), sizes


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (float64 on the tensor's device); a no-op without a process group."""
    if world().distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Make every rank's buffers (BatchNorm running statistics) rank 0's: DDP broadcasts them
    before each forward, so after the last step they differ a little; rank 0's are saved."""
    if world().distributed:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


def global_train_stats(loss_mean: float, hits: int, seen: int, device: torch.device) -> tuple[float, float, int]:
    """(mean loss per image, accuracy, images) of an epoch over all ranks, from this rank's."""
    totals = torch.tensor([loss_mean * seen, hits, seen], dtype=torch.float64, device=device)
    loss_sum, hit_sum, n = all_reduce_sum(totals).tolist()
    return loss_sum / n, hit_sum / n, int(n)


def evaluate_sharded(
    model: torch.nn.Module,
    xy: tuple[torch.Tensor, torch.Tensor],
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    tta: bool = False,
    bf16: bool | None = None,
) -> Any:
    """resnet_lib.evaluate's loss and accuracy over (uint8 images, labels), sharded: each rank
    computes the logits of its contiguous slice; loss sums and correct counts are all-reduced.
    An EvalResult whose logits, predictions and labels are empty (they stay on their ranks)."""
    import torch.nn.functional as F

    from resnet_lib import CLASSES, EvalResult, logits_of

    x, y = xy
    w = world()
    a, b = share(len(y), w.rank, w.size)
    device = next(model.parameters()).device
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    if b > a:
        logits = logits_of(model, x[a:b], stats, tta=tta, bf16=bf16)
        totals[0] = F.cross_entropy(logits, y[a:b], reduction="sum").item()
        totals[1] = (logits.argmax(1) == y[a:b]).sum().item()
    loss_sum, correct = all_reduce_sum(totals).tolist()
    n = len(y)
    empty = torch.zeros(0, dtype=torch.int64)
    loss, acc = (loss_sum / n, correct / n) if n else (float("nan"), float("nan"))
    return EvalResult(loss, acc, torch.zeros(0, len(CLASSES)), empty, empty)


def gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...]; [obj] without a process group."""
    w = world()
    if not w.distributed:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def describe(device_label: str) -> dict[str, Any]:
    """What results.json records: world size, backend and every rank's device (host: device)."""
    w = world()
    return {
        "world_size": w.size,
        "backend": w.backend,
        "devices": gather_objects(f"{platform.node()}: {device_label}"),
    }


def check_world_size(saved: dict[str, Any], w: World, path: Any) -> None:
    """Refuse to resume a checkpoint written by another number of processes: the global batches
    are the same, but their split over ranks (and so BatchNorm statistics and the RNG) is not."""
    from resnet_lib import ConfigError

    was = int(saved.get("world_size", 1))
    if was != w.size:
        raise ConfigError(
            f"{path} was written by a run with {was} process(es) and this run has {w.size}; resume it with "
            f"{was} (torchrun: nnodes x nproc_per_node = {was}), or start a new run in another output folder"
        )
