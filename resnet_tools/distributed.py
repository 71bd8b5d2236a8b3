"""Data-parallel training with PyTorch's own engine (torch.distributed + DistributedDataParallel).

Under `torchrun --nproc_per_node=N resnet_lib.py train ...`, `resnet_tools.job.train_and_evaluate`
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
another number of processes is refused (`check_world_size`). Ranks started with different
settings or data stop at once, all of them, naming what differs (`check_ranks_agree`); a rank
that waits longer than RESNET_DDP_TIMEOUT seconds for the others gives up with a one-line
RankFailure instead of hanging. Imports torch and resnet_tools.errors only.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import math
import os
import platform
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from resnet_tools.errors import ConfigError, RanksDisagree


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


# How long a rank waits for the others in one collective (all-reduce, barrier, gather) and at the
# rendezvous before it gives up. PyTorch's defaults are 30 minutes (Gloo) and 10 minutes (NCCL,
# torch.distributed.constants.default_pg_nccl_timeout). 10 minutes on both: far longer than any
# step between two collectives here (rank 0 writing a checkpoint, one evaluation, a first
# torch.compile), and short enough that a rank which stopped, or was started differently, does not
# hold the others' GPUs for half an hour. A rank that first downloads or decodes its data can
# take longer: set RESNET_DDP_TIMEOUT=SECONDS (or download the data before starting the ranks).
TIMEOUT_ENV = "RESNET_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


class RankFailure(RuntimeError):
    """A collective or the rendezvous timed out, or another rank went away; the message says which."""


def timeout_seconds() -> float:
    """RESNET_DDP_TIMEOUT in seconds, DEFAULT_TIMEOUT_S where it is not set."""

    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{TIMEOUT_ENV}={text!r} must be a positive number of seconds (default {DEFAULT_TIMEOUT_S:g})"
        )
    return value


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
    timeout = timeout_seconds()
    # Import it before the group exists: its functions take `group=group.WORLD` as default arguments,
    # evaluated at import. Imported later (DDP's constructor imports torch._dynamo, which imports it),
    # they hold the group for good, so destroy_process_group cannot free it: Gloo's threads outlive
    # the interpreter, and one still releasing the last collective's tensors takes the GIL during
    # finalization, which on Python 3.11 aborts the process ("terminate called without an active
    # exception"), a finished rank failing at exit now and then (tests/test_distributed.py, 2026-12-07).
    importlib.import_module("torch.distributed.nn.functional")
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
    except dist.DistError as e:  # torch's message says what happened, not what to do
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        rank = f"rank {os.environ.get('RANK', '?')} of {env_world_size()}"
        if "timed out" in str(e).lower():
            raise RankFailure(
                f"{rank}: not every rank joined at {where} within {timeout:g} s ({_first_line(e)}); start all "
                f"{env_world_size()} ranks, or set {TIMEOUT_ENV}=SECONDS to wait longer"
            ) from e
        raise RankFailure(f"{rank}: could not start the process group at {where}: {_first_line(e)}") from e
    return True


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _gloo_detail(e: BaseException) -> str:
    """Gloo's first sentence without its source location: "Connection closed by peer [10.0.0.2]:4321"."""
    text = _first_line(e)
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ")[0][:200]


def rank_failure(e: BaseException) -> RankFailure | None:
    """A one-line RankFailure for Gloo's error when a collective timed out or lost its peer, while
    a process group is up; None for any other error. (NCCL's watchdog ends the process itself,
    with its own message, when a collective times out.)"""
    w, text = world(), str(e).lower()
    if not w.distributed or not isinstance(e, RuntimeError):
        return None
    if "timed out" in text:
        return RankFailure(
            f"rank {w.rank} of {w.size} waited {timeout_seconds():g} s for the other ranks and gave up: another rank "
            f"has stopped, is stuck, or runs another step (its own output says which); if a step legitimately "
            f"takes longer, set {TIMEOUT_ENV}=SECONDS"
        )
    if any(s in text for s in ("connection reset", "connection closed", "broken pipe")):
        return RankFailure(
            f"rank {w.rank} of {w.size} lost its connection to another rank, which has stopped (its own output "
            f"says why): {_gloo_detail(e)}"
        )
    return None


def shutdown(finished: bool = True) -> None:
    """End the process group. After a finished run every rank first waits for the others: rank 0
    hosts the rendezvous store, and tearing it down while another rank is still talking to it
    can abort that rank. After an error there is no barrier: the other ranks may never reach it.
    destroy_process_group frees the group and joins Gloo's threads before the interpreter shuts
    down, where nothing else holds the group (see init_from_env for what a thread left running does)."""
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

    if batch_size % w.size:
        raise ConfigError(
            f"batch_size={batch_size} is the global batch and must be a multiple of the {w.size} processes "
            f"(world size); e.g. batch_size={batch_size - batch_size % w.size or w.size}"
        )


def check_sync_bn(sync_bn: bool, device: torch.device, w: World) -> None:

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


# Which data a rank trains on, as checkpoints.check_same_data compares it: the folder (and so the
# label) may differ between machines, the images and labels may not.
_DATA_KEYS = ("n_train", "n_test", "train_sha256", "test_sha256")


def run_settings(cfg: Any, device: torch.device, fingerprint: dict[str, Any] | None = None, **more: Any) -> dict:
    """What every rank of a run must have the same: every TrainConfig field, except that the
    device counts by its type ('auto', 'cuda' and 'cuda:1' are all "this rank's GPU": each rank
    uses its own), the data's identity (CIFAR10.fingerprint) if given, and `more`."""
    settings = {**dataclasses.asdict(cfg), "device": device.type}
    if fingerprint is not None:
        settings.update({f"data.{k}": fingerprint.get(k) for k in _DATA_KEYS})
    return {**settings, **more}


def _shown(value: Any) -> str:
    """A value in the error: SHA-256 sums and long paths cut to 12 characters."""
    return repr(value[:12] + "...") if isinstance(value, str) and len(value) > 15 else repr(value)


def check_ranks_agree(settings: dict[str, Any], w: World) -> None:
    """Compare every rank's `settings` (run_settings) with rank 0's; where any differ, raise
    RanksDisagree on every rank at once (all of them see all settings), naming the fields and the
    ranks. Ranks started with different options would otherwise train apart (each its own
    learning rate, rank 0's recorded) or wait forever in a step the others never take."""

    if not w.distributed:
        return
    every = gather_objects(settings)
    first, parts = every[0], []
    for rank, theirs in enumerate(every[1:], start=1):
        keys = [k for k in {**first, **theirs} if first.get(k) != theirs.get(k)]
        if keys:
            mine = ", ".join(f"{k}={_shown(theirs.get(k))}" for k in keys)
            parts.append(f"rank {rank} has {mine}, rank 0 {', '.join(f'{k}={_shown(first.get(k))}' for k in keys)}")
    if parts:
        more = f"; and {len(parts) - 3} more ranks differ" if len(parts) > 3 else ""
        raise RanksDisagree(
            f"ranks disagree: {'; '.join(parts[:3])}{more}; start every rank with the same options and data"
        )


def check_world_size(saved: dict[str, Any], w: World, path: Any) -> None:
    """Refuse to resume a checkpoint written by another number of processes: the global batches
    are the same, but their split over ranks (and so BatchNorm statistics and the RNG) is not."""

    was = int(saved.get("world_size", 1))
    if was != w.size:
        raise ConfigError(
            f"{path} was written by a run with {was} process(es) and this run has {w.size}; resume it with "
            f"{was} (torchrun: nnodes x nproc_per_node = {was}), or start a new run in another output folder"
        )
