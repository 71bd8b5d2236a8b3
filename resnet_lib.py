"""Compact ResNets on CIFAR-10: the models, the data pipeline and the training loop.

The core of the project (`import resnet_lib as rl` in the notebooks), and a command line::

    python resnet_lib.py train --model lite --recipe modern --epochs 40 --out results/lite

Read top to bottom:
  1. models     `RBL` block, `ResNet` builder (architectures as data), `lite()` / `improved()`
  2. data       `CIFAR10` in memory, `load_cifar10` (official files or an image folder)
  3. pipeline   the whole dataset as uint8 on the training device; an epoch's batches made there
  4. training   `TrainConfig` and `RECIPES`, `fit` (evaluated and checkpointed every epoch)

The project has three floors, and imports only point down (tests/test_floors.py checks it):
  - below this file, leaves of `resnet_tools/` that import no module above them: `errors`, `budget`
    (the parameter budget), `dataset` (the CIFAR10 container), `safeio` (safe files), `devices`,
    `progress`, `runlog` (history.csv), `cifarfiles` and `imagefolder` (reading data), `augment` (crop,
    flip, cutout, normalize), `evaluation` (`evaluate`, `logits_of`), `optim` (optimizer, lr schedule),
    `checkpoints` (the format), `step`, `distill`, `cudagraph` and `compile_step` (the training step),
    `distributed` (DDP), `renamed` (old recipe names);
  - this file, which imports only those;
  - above it, the tools that use it: `job` (`train_and_evaluate`: data, model, fit, results.json),
    `layers` (the seed's layer tables, `summary`), `inference` (predict, safetensors), `results` (run
    names, tables), `figures`, `explain`, `record` and `cli`. Notebooks and scripts import them by name
    (`from resnet_tools import figures`).
Importing needs only torch, numpy and tqdm (through resnet_tools.progress), and has no side effects.
"""

from __future__ import annotations

if __name__ == "__main__":
    # `python resnet_lib.py train ...` is the command line's (resnet_tools.cli), which imports this file as
    # resnet_lib: hand over before anything here is defined, so the module is not built twice (as __main__ too).
    import runpy

    runpy.run_module("resnet_tools.cli", run_name="__main__")

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet_tools import checkpoints, cifarfiles, imagefolder
from resnet_tools import distributed as ddp
from resnet_tools.augment import affine, augment_draws, crop_flip, cutout_at, scale_shift
from resnet_tools.budget import PARAM_BUDGET, check_budget, count_params
from resnet_tools.compile_step import make_step
from resnet_tools.dataset import CIFAR10
from resnet_tools.devices import DEVICES, keep_freed_memory, resolve_device
from resnet_tools.evaluation import evaluate_splits
from resnet_tools.errors import ConfigError
from resnet_tools.optim import OPTIMIZERS, SCHEDULES, optimizer_and_schedule
from resnet_tools.progress import progress_bar
from resnet_tools.renamed import current_recipe
from resnet_tools.runlog import HISTORY_KEYS, epoch_record
from resnet_tools.safeio import atomic_save, check_writable

# ---------------------------------------------------------------------------------------
# 1. Models
# ---------------------------------------------------------------------------------------
# Architectures as data: (stage widths, residual blocks per stage). The stem is a 3x3 conv
# to widths[0]; every stage after the first halves the resolution with a stride-2 block.
ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "lite": ((16, 32, 64), (1, 1, 1)),  # seed report: 78,042 parameters
    "improved": ((64, 128, 256, 512), (1, 1, 1, 1)),  # seed report: 4,903,242 parameters
}


class RBL(nn.Module):
    """Residual block, named as in the seed report's summary tables ("RBL").

    Two 3x3 conv + BN, ReLU between them, and a shortcut that is the identity, or a
    1x1 conv + BN projection when the shape changes. Convs have no bias (BN follows).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        # Explicit attributes (not nn.Sequential / nn.Identity) so that the layer table
        # lists exactly the seed's rows: an identity shortcut adds no row at all.
        self.shortcut_conv: nn.Conv2d | None = None
        self.shortcut_bn: nn.BatchNorm2d | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut_conv = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = self.bn2(x)
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(shortcut)
            shortcut = self.shortcut_bn(shortcut)
        x = x + shortcut
        x = F.relu(x)
        return x


class ResNet(nn.Module):
    """CIFAR ResNet built from data: `widths` per stage and `blocks_per_stage`.

    Raises BudgetError when the model has more than PARAM_BUDGET parameters, unless
    `allow_over_budget=True`.
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        blocks_per_stage: tuple[int, ...],
        num_classes: int = 10,
        allow_over_budget: bool = False,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks_per_stage) or not widths:
            raise ValueError(
                f"widths {widths} and blocks_per_stage {blocks_per_stage} must be non-empty and of equal length"
            )
        self.widths = tuple(widths)
        self.blocks_per_stage = tuple(blocks_per_stage)
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks = []
        in_ch = widths[0]
        for stage, (width, n_blocks) in enumerate(zip(widths, blocks_per_stage)):
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(RBL(in_ch, width, stride))
                in_ch = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        check_budget(self, allow_over_budget)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = F.relu(x)
        x = self.stages(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


def lite(**kwargs: Any) -> ResNet:
    """The seed's Lite ResNet: 16/32/64 channels, one block per stage, 78,042 parameters."""
    return ResNet(*ARCHS["lite"], **kwargs)


def improved(**kwargs: Any) -> ResNet:
    """The seed's Improved ResNet: 64/128/256/512 channels, one block per stage, 4,903,242 parameters."""
    return ResNet(*ARCHS["improved"], **kwargs)


def build_model(name: str, seed: int | None = None, allow_over_budget: bool = False) -> ResNet:
    """Build a named architecture; with `seed`, its initial weights are reproducible.

    The seed is applied inside `torch.random.fork_rng`, so the global RNG is untouched.
    """
    if name not in ARCHS:
        raise ConfigError(f"unknown model {name!r}; valid choices: {', '.join(ARCHS)}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return ResNet(*ARCHS[name], allow_over_budget=allow_over_budget)


# ---------------------------------------------------------------------------------------
# 2. Data: CIFAR-10 in memory as uint8, from the official files or an image folder
# ---------------------------------------------------------------------------------------
# Per-channel mean and std of the 50,000 official training images, pixels scaled to
# [0, 1], std over all pixels of a channel: what `channel_stats` returns on the full
# training set. Reference only: the pipeline recomputes them from whatever training set
# it is given (notebook 01 compares the two). The std often copied into CIFAR code,
# (0.2023, 0.1994, 0.2010), is the mean of per-image stds: a different, smaller number.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def default_data_dir() -> Path:
    """$DATA_DIR if set, else `data/` next to this file (so notebooks work from any cwd)."""
    return Path(os.environ.get("DATA_DIR") or Path(__file__).resolve().parent / "data")


def load_cifar10(data_dir: str | Path | None = None, download: bool = True) -> CIFAR10:
    """Load CIFAR-10 from `data_dir` (default: default_data_dir()): the official python format in
    `data_dir/cifar-10-batches-py/` (the layout torchvision uses; resnet_tools.cifarfiles: files
    md5-checked, unpickled with an allow-list, the official archive downloaded where every file is
    missing and `download` is true), or an image folder (`data_dir/train/<class>/*.png|jpg`,
    `data_dir/test/<class>/*`; resnet_tools.imagefolder: decoded once, then cached by content).
    Raises DataError naming the file and the fix."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if imagefolder.is_image_folder(root):
        return imagefolder.load_as_cifar10(root)
    return cifarfiles.load_batch_folder(root, download)


# ---------------------------------------------------------------------------------------
# 3. Pipeline: whole dataset as uint8 on the training device, batched augmentation there
# ---------------------------------------------------------------------------------------
# The pixel work (crop, flip, cutout, normalization) is resnet_tools.augment's; here a run's split
# and an epoch's batches.
class _Prepared(NamedTuple):
    """The training images on the training device (in host memory where `sharded`), plus the
    normalization it uses (on the device)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    sharded: bool = False  # DDP: each epoch _batches moves only this rank's images to its device


def val_count(n_train: int, val_size: float) -> int:
    """Number of validation images that `val_size` holds out of `n_train`."""
    n = round(val_size * n_train) if val_size < 1 else int(val_size)
    if n >= n_train:
        raise ConfigError(f"val_size={val_size} leaves no training images out of {n_train}")
    return n


def split_train_val(
    data: CIFAR10, cfg: TrainConfig
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((train_x, train_y), (val_x, val_y)) for a run: a seeded permutation of the training
    set, the first `val_size` images for validation, then `train_subset` of the rest (or all)."""
    x, y = data.train_x, data.train_y
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed))
    n_val = val_count(len(y), cfg.val_size)
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:]
    if cfg.train_subset:
        if cfg.train_subset > len(train_idx):
            raise ConfigError(
                f"train_subset={cfg.train_subset} exceeds the {len(train_idx)} training images left after validation"
            )
        train_idx = train_idx[: cfg.train_subset]
    if not cfg.train_subset and n_val == 0:
        train_idx = torch.arange(len(y))  # all of it, in the original order
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def training_images(data: CIFAR10, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The images a run trains on (what is left after the validation split and subset)."""
    return split_train_val(data, cfg)[0]


def _prepare(
    data: CIFAR10, cfg: TrainConfig, device: torch.device, world_size: int = 1,
    train_xy: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> _Prepared:
    """The run's training images (`train_xy`, else training_images) on `device`; with several processes
    (DDP) they stay in host memory and each epoch a rank's device receives only its share (1 / world_size)."""
    x, y = train_xy if train_xy is not None else training_images(data, cfg)
    mean, std = data.stats  # normalization from the training set (see CIFAR10.stats)
    sharded = world_size > 1
    return _Prepared(
        x if sharded else x.to(device),
        y if sharded else y.to(device),
        torch.tensor(mean, dtype=torch.float32, device=device),
        torch.tensor(std, dtype=torch.float32, device=device),
        sharded,
    )


def _batches(
    p: _Prepared, cfg: TrainConfig, gen: torch.Generator, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of augmented, normalized training batches (the last one may be smaller).

    All of the epoch's random draws (order, crops, flips, cutout centres) are made up front
    from the CPU generator `gen` and reach the device in one copy: no step waits on a
    host-to-device transfer, and `gen`'s state after the epoch is the same however far the
    epoch got. Crop + flip run on chunks of batches: on a GPU 64 batches at a time, a few
    large kernels instead of about ten small ones per step (a small model's step there is
    bound by kernel launches); on the CPU one batch at a time, whose pixels stay in cache
    (larger chunks measured slower per image there).

    With `world_size` > 1 processes (DDP), every rank makes the same draws from the same
    generator and yields only its contiguous share (batch_size / world_size images) of each
    global batch (see resnet_tools.distributed.rank_positions); with `p.sharded` (fit under DDP)
    only those images reach the rank's device, once per epoch.
    """
    n = len(p.train_y)
    device = p.mean.device
    h, w = p.train_x.shape[2:]
    perm = torch.randperm(n, generator=gen)
    dy, dx, mirror = augment_draws(n, gen, cfg.crop, cfg.flip, pad=4)
    cy = torch.randint(0, h, (n,), generator=gen) if cfg.cutout else None
    cx = torch.randint(0, w, (n,), generator=gen) if cfg.cutout else None
    absent = torch.zeros(n, dtype=torch.int64)
    rows = torch.stack([perm] + [absent if d is None else d.long() for d in (dy, dx, mirror, cy, cx)])
    batch_size = cfg.batch_size
    if world_size > 1:
        positions, _ = ddp.rank_positions(n, cfg.batch_size, rank, world_size)
        rows, n, batch_size = rows[:, positions], len(positions), cfg.batch_size // world_size
    train_x, train_y = p.train_x, p.train_y
    if p.sharded:  # this rank's images of the epoch, in the order it takes them, to its device (one copy)
        train_x, train_y = train_x[rows[0]].to(device), train_y[rows[0]].to(device)
    perm, dy, dx, mirror, cy, cx = rows.to(device).unbind(0)
    mirror = mirror.bool()
    train_y = train_y if p.sharded else train_y[perm]
    scale, shift = affine(p.mean, p.std)
    chunk = batch_size * (1 if device.type == "cpu" else 64)
    for c0 in range(0, n, chunk):
        part = slice(c0, c0 + chunk)
        images = crop_flip(
            train_x[part] if p.sharded else train_x[perm[part]],
            dy[part] if cfg.crop else None,
            dx[part] if cfg.crop else None,
            mirror[part] if cfg.flip else None,
        )
        for start in range(c0, min(c0 + chunk, n), batch_size):
            batch = slice(start, start + batch_size)
            x = scale_shift(images[start - c0 : start - c0 + batch_size], scale, shift, cfg.channels_last)
            if cfg.cutout:  # after normalization, so the square is the dataset mean
                x = cutout_at(x, cy[batch], cx[batch], cfg.cutout)
                if cfg.channels_last:  # masked_fill returns a contiguous tensor
                    x = x.contiguous(memory_format=torch.channels_last)
            yield x, train_y[batch]


# ---------------------------------------------------------------------------------------
# 4. Training
# ---------------------------------------------------------------------------------------
class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


_POSITIVE = ("epochs", "batch_size")  # int fields that must be above 0 (the others: 0 = off / none)


def _finite_number(v: Any) -> bool:
    """An int or float (not a bool), neither infinite nor NaN."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# Beside checkpoint.pt (the last epoch), fit keeps the epoch with the best validation accuracy.
BEST_CHECKPOINT = "best.pt"
MAX_WARMUP_EPOCHS = 1_000_000  # beyond any run; larger values overflow the step count


def _opt(default: Any, help: str, choices: tuple[str, ...] | dict[str, Any] | None = None) -> Any:
    """A TrainConfig field: its default, its help (the CLI's --help) and, for a str field with fixed
    values, its choices (checked by validate, offered by the CLI), declared in one place. ARCHS is
    passed itself, not copied, so an architecture a user adds to it is a valid model."""
    return field(default=default, metadata={"help": help, "choices": choices})


def _arch_params(arch: str) -> int:
    """Parameters of an architecture in ARCHS, counted on the meta device (no memory, ~ms)."""
    with torch.device("meta"):
        return count_params(ResNet(*ARCHS[arch], allow_over_budget=True))


def _check_arch_budget(arch: str) -> None:
    """ConfigError naming the count and the architectures within the budget, so an over-budget model is
    refused with the config, not when the run builds it."""
    n = _arch_params(arch)
    if n > PARAM_BUDGET:
        within = [a for a in ARCHS if a != arch and _arch_params(a) <= PARAM_BUDGET]
        raise ConfigError(
            f"model={arch!r} has {n:,} parameters, over the {PARAM_BUDGET:,} budget; choose one of: "
            f"{', '.join(within)}, or set allow_over_budget=True"
        )


@dataclass
class TrainConfig:
    """Everything that defines a training run. Fields map one-to-one to notebook
    parameters (upper-cased there: `epochs` -> EPOCHS) and to CLI options (--epochs).
    Each field's help and choices are in its metadata (`_opt`); a field's --help starts with its choices."""

    model: str = _opt("lite", "", choices=ARCHS)
    recipe: str = _opt("custom", "which preset this came from (informational)")
    optimizer: str = _opt("sgd", "", choices=OPTIMIZERS)
    lr: float = _opt(0.1, "peak learning rate")
    momentum: float = _opt(0.9, "SGD only")
    nesterov: bool = _opt(True, "SGD only")
    weight_decay: float = _opt(5e-4, "L2 penalty on all parameters (decoupled for adamw)")
    schedule: str = _opt("onecycle", "(linear warm-up, linear decay)", choices=SCHEDULES)
    warmup_epochs: float = _opt(0.0, "linear warm-up from 0, for cosine and onecycle too")
    schedule_epochs: float = _opt(
        0.0,
        "Length of the cosine or linear decay in epochs; 0 = the run's length. A longer horizon is stopped early: "
        "kuangliu/pytorch-cifar's CosineAnnealingLR(T_max=200) run for 40 epochs.",
    )
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing, 0 = off")
    crop: bool = _opt(True, "random 32x32 crop of the image zero-padded by 4 pixels")
    flip: bool = _opt(True, "random horizontal flip")
    cutout: int = _opt(0, "side of the cutout square in pixels, 0 = off")
    epochs: int = _opt(40, "passes over the training images")
    batch_size: int = _opt(128, "images per optimizer step")
    seed: int = _opt(0, "initial weights, data order, augmentation and the validation split")
    device: str = _opt("auto", "auto = cuda, then mps, then cpu")  # or cuda:N, so no fixed choices
    bf16: bool | None = _opt(
        None,
        "bf16 autocast (weights, BatchNorm and the loss stay fp32); None = auto: on for CUDA and for a CPU with "
        "native bf16 (AMX, AVX512-BF16), off elsewhere. True or False is obeyed everywhere.",
    )
    channels_last: bool = _opt(True, "NHWC memory layout (faster convolutions on GPUs)")
    compile: bool | None = _opt(
        None,
        "torch.compile the training step; None = auto: on for CPU runs of 2,000 steps or more (where it pays back "
        "its compile time; eager if it fails), off elsewhere. True or False is obeyed.",
    )
    cuda_graph: bool = _opt(True, "replay the training step as a CUDA graph (CUDA only, eager elsewhere)")
    tta: bool = _opt(False, "flip test-time augmentation in the final evaluation")
    train_subset: int = _opt(0, "train on a seeded random subset of this many images, 0 = all")
    val_size: float = _opt(
        0.1,
        "Validation images held out of the training set (seeded): < 1 is a fraction, >= 1 a count, 0 none. 0.1 "
        "is 5,000 of the official 50,000. Model selection uses these, never the test set, which is only evaluated "
        "for reporting.",
    )
    allow_over_budget: bool = _opt(False, "allow a model over the 5,000,000-parameter budget")
    sync_bn: bool = _opt(
        False,
        "Under torchrun with several processes: synchronise BatchNorm statistics across GPUs (SyncBatchNorm; "
        "CUDA only). Off: each GPU normalizes by its share of the batch.",
    )
    init_from: str = _opt(
        "",
        "Start from this checkpoint's trained weights instead of a random init (fine-tuning, or training longer "
        'with a fresh schedule); "" = random init. The optimizer and schedule start anew.',
    )
    teacher: str = _opt(
        "",
        "Knowledge distillation: train against this teacher's softened outputs as well as the labels; a "
        'checkpoint (.pt) or a safetensors export of any model built here; "" = none.',
    )
    distill_temperature: float = _opt(4.0, "softens both distributions (Hinton et al., 2015); teacher only")
    distill_alpha: float = _opt(0.9, "weight of the soft (teacher) loss; 1 - alpha weighs the labels' loss")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of range. Every field is checked by its
        declared type (bool; int >= 0, or > 0 for _POSITIVE; float finite and >= 0; str from its
        metadata's choices), then the limits below."""
        for f in dataclasses.fields(self):
            name, v, choices = f.name, getattr(self, f.name), f.metadata.get("choices")
            if choices and v not in choices:
                raise ConfigError(f"{name}={v!r} is not valid; choose one of: {', '.join(choices)}")
            if f.type == "bool" and not isinstance(v, bool):
                raise ConfigError(f"{name}={v!r} must be True or False")
            if f.type == "bool | None" and not (v is None or isinstance(v, bool)):
                raise ConfigError(f"{name}={v!r} must be True, False or None (auto)")
            if f.type == "int" and (isinstance(v, bool) or not isinstance(v, int) or v < (name in _POSITIVE)):
                raise ConfigError(
                    f"{name}={v!r} must be a {'positive' if name in _POSITIVE else 'non-negative'} integer"
                )
            if f.type == "float" and name != "val_size" and not (_finite_number(v) and v >= 0):
                raise ConfigError(f"{name}={v!r} must be a finite, non-negative number")
        if not (isinstance(self.device, str) and (self.device in DEVICES or self.device.startswith("cuda:"))):
            raise ConfigError(f"device={self.device!r} is not valid; choose one of: {', '.join(DEVICES)}, or cuda:N")
        if self.lr == 0:
            raise ConfigError("lr must be positive")
        if self.cutout > 32:
            raise ConfigError(f"cutout={self.cutout} must be at most 32, the image size (0 turns it off)")
        if self.seed >= 2**63:
            raise ConfigError(f"seed={self.seed} must be below 2**63 (torch's seed range)")
        if self.warmup_epochs > MAX_WARMUP_EPOCHS:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} must be at most {MAX_WARMUP_EPOCHS:,}")
        v = self.val_size
        if not (_finite_number(v) and v >= 0) or (v >= 1 and v != int(v)):
            raise ConfigError(f"val_size={v!r} must be 0, a fraction below 1, or a whole number of images")
        if self.label_smoothing >= 1:
            raise ConfigError(f"label_smoothing={self.label_smoothing} must be below 1")
        if self.schedule_epochs and self.schedule_epochs < self.epochs:  # a cosine would climb again
            raise ConfigError(
                f"schedule_epochs={self.schedule_epochs} must be 0 (the run's length) or at least "
                f"epochs={self.epochs}"
            )
        if self.distill_alpha > 1 or self.distill_temperature == 0:
            raise ConfigError(
                f"distill_alpha={self.distill_alpha} must be at most 1 and distill_temperature="
                f"{self.distill_temperature} above 0"
            )
        if self.recipe == "distill" and not self.teacher:
            raise ConfigError(
                "recipe 'distill' needs a teacher: set teacher= (--teacher PATH) to a trained run's checkpoint.pt"
            )
        if not self.allow_over_budget:
            _check_arch_budget(self.model)

    @classmethod
    def from_recipe(cls, recipe: str, **overrides: Any) -> "TrainConfig":
        """A named preset from RECIPES, with any field overridden (None = keep the preset's).
        A preset means the same on every device: the same batch size and learning rate on a CPU and
        a GPU (where the graphed step, `cuda_graph`, keeps batch 128 from being bound by kernel
        launches). A larger GPU batch, tried before (batch 256, lr 0.4), cost the Improved model
        about 5 points on real held-out images; bench/README.md, "The modern recipe's batch size"."""
        recipe = current_recipe(recipe)  # an old name (seed) reads as its new one (report)
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; valid choices: {', '.join(RECIPES)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; valid fields: {', '.join(sorted(known))}")
        values = {**RECIPES[recipe], "recipe": recipe}
        values.update({k: v for k, v in overrides.items() if v is not None})
        adam = values.get("optimizer") in ("adam", "adamw")
        if recipe.startswith("report") and adam and overrides.get("lr") is None:
            values["lr"] = 1e-3  # the usual Adam default; the report does not give its rates
        return cls(**values)


# fmt: off
RECIPES: dict[str, dict[str, Any]] = {
    # What the seed report describes, read literally: 40 epochs, no augmentation, a constant
    # learning rate, SGD + momentum (or Adam). It gives no learning rate, batch size or weight
    # decay; these are the course-standard values (SGD 0.01 / Adam 0.001, batch 128).
    "report": dict(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0, schedule="constant",
                   warmup_epochs=0.0, label_smoothing=0.0, crop=False, flip=False, cutout=0, epochs=40,
                   batch_size=128, tta=False),
    # Of the first three readings of the seed's recipe, the one closest to its Lite row (the README's
    # results name the closest of all measured readings, from report/experiments/): kuangliu/pytorch-cifar's
    # main.py, the usual starting point of such course projects (lr 0.1, momentum 0.9, weight decay 5e-4,
    # CosineAnnealingLR(T_max=200)) run for 40 epochs, so the lr stays near 0.1, without its augmentation,
    # as the report says.
    "report-kuangliu": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
                            schedule="cosine", schedule_epochs=200.0, warmup_epochs=0.0, label_smoothing=0.0,
                            crop=False, flip=False, cutout=0, epochs=40, batch_size=128, tta=False),
    # The best 40-epoch recipe we can justify: crop + flip augmentation, Nesterov SGD with a
    # one-cycle schedule (linear warm-up, linear decay to zero), weight decay 5e-4 and label
    # smoothing 0.1 (as in the fast-CIFAR literature, e.g. Page's DAWNBench ResNet and airbench),
    # flip test-time augmentation.
    "modern": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle",
                   warmup_epochs=2.0, label_smoothing=0.1, crop=True, flip=True, cutout=0, epochs=40,
                   batch_size=128, tta=True),
    # `modern` with a teacher's soft targets (knowledge distillation; give `teacher`): the temperature
    # and mix are the usual starting point (Hinton et al., 2015: T in 2-8, most weight on the soft loss).
    "distill": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle",
                    warmup_epochs=2.0, label_smoothing=0.1, crop=True, flip=True, cutout=0, epochs=40,
                    batch_size=128, tta=True, distill_temperature=4.0, distill_alpha=0.9),
}
# fmt: on


def fit(
    model: nn.Module,
    data: CIFAR10,
    cfg: TrainConfig,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, list[float]]], None] | None = None,
    teacher: nn.Module | None = None,
) -> dict[str, list[float]]:
    """Train `model` on `data.train_*` as `cfg` says; return the per-epoch history. With a
    `teacher` (the model cfg.teacher names, loaded by the caller), by knowledge distillation.

    After every epoch the test split is evaluated (no TTA) and, if `checkpoint` is given,
    model, optimizer, scheduler, RNG states, config and history are saved there
    atomically (and to BEST_CHECKPOINT beside it when the epoch has the best validation
    accuracy so far); then `on_epoch(history)` is called, if given (resnet_tools.job.train_and_evaluate's writes
    history.csv and TensorBoard scalars: resnet_tools.runlog.EpochLog). With `resume`,
    training continues from that checkpoint and ends with the same result as an
    uninterrupted run (bit-identical on the CPU with the same seed).

    Under an initialised process group (torchrun; see resnet_tools.distributed) it trains
    with DistributedDataParallel: `cfg.batch_size` is the global batch, each rank trains on
    its share; the history holds global numbers on every rank; only rank 0 writes the checkpoint
    and calls `on_epoch`.
    """
    # 1. Set up once: the config, the device (and process group), the split, optimizer and schedule.
    run = _fit_setup(model, data, cfg, Path(checkpoint) if checkpoint is not None else None, resume)
    # 2. Restore: continue from the checkpoint's epoch, weights, optimizer, schedule and data order.
    if resume and run.checkpoint is not None and run.checkpoint.exists():
        _restore(run, data)
    step_fn = _fit_step(run, teacher)
    bar = progress_bar(
        total=run.total_steps,
        initial=run.start_epoch * run.steps_per_epoch,
        disable=not progress or not run.world.main,
        desc=f"{cfg.model}/{cfg.recipe}",
        unit="step",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            trained = _train_epoch(run, step_fn, epoch, bar)  # 3. one epoch of training steps
            _end_of_epoch(run, data, epoch, trained, bar, on_epoch)  # 4. evaluate, checkpoint, report
    finally:
        bar.close()
    return run.history


@dataclass
class _FitRun:
    """What fit sets up once per run and its steps share: the device and this process's place in
    the process group, the training images and the validation split, optimizer, schedule, data
    generator, the history, and where a resumed run starts."""

    model: nn.Module
    cfg: TrainConfig
    device: torch.device
    world: Any  # resnet_tools.distributed.World
    checkpoint: Path | None
    prepared: _Prepared
    val_xy: tuple[torch.Tensor, torch.Tensor]
    batch_sizes: list[int]  # the global batches of an epoch
    optimizer: torch.optim.Optimizer
    scheduler: Any
    gen: torch.Generator  # the data order and augmentation; its state is checkpointed
    history: dict[str, list[float]]
    started: float  # time.perf_counter() at the start of this session
    start_epoch: int = 0
    elapsed_before: float = 0.0  # seconds of the sessions before a resume

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batch_sizes)

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch


class _Trained(NamedTuple):
    """One epoch's training numbers (global under DDP)."""

    lr: float  # at the epoch's start
    loss: float
    accuracy: float  # running, on the augmented batches
    images: int
    seconds: float  # first step to the device sync after the last; evaluation excluded


def _fit_setup(model: nn.Module, data: CIFAR10, cfg: TrainConfig, checkpoint: Path | None, resume: bool) -> _FitRun:
    """Check the config and the model's budget, choose the device (a rank's GPU under DDP, after the
    ranks agree), put the model and the training images there, split off the validation images
    (once), and build the optimizer and the schedule."""
    cfg.validate()
    check_budget(model, cfg.allow_over_budget)
    device = resolve_device(cfg.device)
    world = ddp.world()
    if world.distributed:
        device = ddp.setup_rank(device, cfg.batch_size, cfg.sync_bn, cfg.seed, world)
        # Before the first collective that ranks started differently would take apart (and hang in).
        resumes = bool(resume and checkpoint is not None and checkpoint.exists())
        ddp.check_ranks_agree(ddp.run_settings(cfg, device, data.fingerprint, resumes_checkpoint=resumes), world)
    if checkpoint is not None:
        check_writable(checkpoint.parent)
    if device.type == "cpu":
        keep_freed_memory()
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    train_xy, val_xy = split_train_val(data, cfg)
    prepared = _prepare(data, cfg, device, world.size, train_xy)
    batch_sizes = ddp.global_batch_sizes(len(prepared.train_y), cfg.batch_size, world.size)
    optimizer, scheduler = optimizer_and_schedule(model, cfg, len(batch_sizes))
    gen = torch.Generator().manual_seed(cfg.seed)
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    return _FitRun(model, cfg, device, world, checkpoint, prepared, val_xy, batch_sizes, optimizer, scheduler, gen,
                   history, started=time.perf_counter())


def _restore(run: _FitRun, data: CIFAR10) -> None:
    """Continue from run.checkpoint (checked against this run's config, model, data and processes)."""
    saved = checkpoints.load_checkpoint_dict(run.checkpoint)
    checkpoints.check_resumable(saved, run.cfg, run.model, run.checkpoint, data)
    ddp.check_world_size(saved, run.world, run.checkpoint)
    run.model.load_state_dict(saved["model_state"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.gen.set_state(saved["rng"]["data"])
    run.history = {k: list(v) for k, v in saved["history"].items()}
    run.start_epoch, run.elapsed_before = int(saved["epoch"]), checkpoints.elapsed_seconds(saved)


def _fit_step(run: _FitRun, teacher: nn.Module | None) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The run's training step (make_step) on the model, wrapped in DDP under a process group;
    a teacher frozen, in eval mode, with the student's device and memory layout."""
    cfg = run.cfg
    train_model = ddp.wrap(run.model, run.device, cfg.sync_bn) if run.world.distributed else run.model
    if teacher is not None:
        teacher.to(run.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
        teacher.eval().requires_grad_(False)
    return make_step(train_model, run.optimizer, run.scheduler, cfg, run.device, cfg.batch_size // run.world.size,
                     teacher, run.total_steps)


def _train_epoch(run: _FitRun, step_fn: Callable[..., Any], epoch: int, bar: Any) -> _Trained:
    """One epoch of training steps; stops with TrainingDiverged at a non-finite loss."""
    world, device, steps_per_epoch = run.world, run.device, run.steps_per_epoch
    run.model.train()
    t0 = time.perf_counter()
    # Per-step statistics are written into device buffers (3 small kernels a step,
    # no host sync) and reduced every 20 steps and at the end of the epoch: on a
    # GPU a small model's step is bound by kernel launches.
    losses = torch.zeros(steps_per_epoch, device=device)  # mean loss of each step
    sizes: list[int] = []
    hits = torch.zeros(len(run.prepared.train_y), device=device, dtype=torch.bool)  # argmax == label
    checked = seen = 0
    lr_now = run.optimizer.param_groups[0]["lr"]
    for step, (x, y) in enumerate(_batches(run.prepared, run.cfg, run.gen, world.rank, world.size)):
        # DDP averages the ranks' gradients: a rank's share of an uneven last batch is weighted by its size.
        scale = len(y) * world.size / run.batch_sizes[step] if world.distributed else 1.0
        loss, logits = step_fn(x, y, scale)
        losses[step] = loss
        torch.eq(logits.argmax(1), y, out=hits[seen : seen + len(y)])
        seen += len(y)
        sizes.append(len(y))
        bar.update(1)
        if step % 20 == 19 or step == steps_per_epoch - 1:
            window = losses[checked : step + 1]
            window = ddp.all_reduce_sum(window.clone()) if world.distributed else window  # all ranks stop
            _raise_if_diverged(window, checked, epoch, steps_per_epoch)
            checked = step + 1
            bar.set_postfix(epoch=f"{epoch + 1}/{run.cfg.epochs}", loss=f"{_mean_loss(losses, sizes):.3f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    train_loss, train_acc = _mean_loss(losses, sizes), hits[:seen].sum().item() / seen
    if world.distributed:
        train_loss, train_acc, seen = ddp.global_train_stats(train_loss, hits[:seen].sum().item(), seen, device)
        ddp.broadcast_buffers(run.model)  # evaluate (and save) rank 0's BatchNorm statistics everywhere
    return _Trained(lr_now, train_loss, train_acc, seen, seconds)


def _end_of_epoch(
    run: _FitRun, data: CIFAR10, epoch: int, trained: _Trained, bar: Any,
    on_epoch: Callable[[dict[str, list[float]]], None] | None,
) -> None:
    """Evaluate the validation and test splits, add the epoch to the history, save the checkpoint
    (and the best one) on rank 0, call on_epoch there; the other ranks wait for it."""
    val, ev = evaluate_splits(run.model, run.val_xy, data, data.stats, tta=False, bf16=run.cfg.bf16)
    record = epoch_record(epoch + 1, trained.lr, trained.loss, trained.accuracy, val, ev, trained.seconds,
                          trained.images)
    for key in HISTORY_KEYS:
        run.history[key].append(record[key])
    bar.set_postfix(
        epoch=f"{epoch + 1}/{run.cfg.epochs}",
        loss=f"{run.history['train_loss'][-1]:.3f}",
        **{"val_acc" if val else "test_acc": f"{(val or ev).accuracy:.2%} (no TTA)"},
    )
    if run.checkpoint is not None and run.world.main:
        _save_checkpoint(run, data, epoch)
    if on_epoch is not None and run.world.main:
        on_epoch(run.history)
    ddp.barrier()  # other ranks wait for rank 0's checkpoint


def _save_checkpoint(run: _FitRun, data: CIFAR10, epoch: int) -> None:
    """The checkpoint after `epoch` (atomically), and BEST_CHECKPOINT beside it when the epoch has the
    best validation accuracy so far."""
    state = checkpoints.checkpoint_state(
        epoch + 1, run.cfg, run.model, run.optimizer, run.scheduler, run.gen, data.stats, run.history,
        data.fingerprint,
    )
    state["elapsed_seconds"] = run.elapsed_before + time.perf_counter() - run.started  # over all resumes
    if run.world.distributed:
        state["world_size"] = run.world.size  # a resume must use as many processes
    atomic_save(state, run.checkpoint)
    if _is_best(run.history["val_acc"]):  # chosen on validation only; none without a validation split
        atomic_save(state, run.checkpoint.with_name(BEST_CHECKPOINT))


def _is_best(val_accs: list[float]) -> bool:
    """Whether the last epoch has the highest validation accuracy so far (the earliest wins ties)."""
    last, earlier = val_accs[-1], [a for a in val_accs[:-1] if not math.isnan(a)]
    return not math.isnan(last) and all(last > a for a in earlier)


def _mean_loss(losses: torch.Tensor, sizes: list[int]) -> float:
    """Mean loss per image over the steps so far: step means weighted by batch sizes."""
    weights = torch.tensor(sizes, dtype=losses.dtype, device=losses.device)
    return (losses[: len(sizes)] * weights).sum().item() / sum(sizes)


def _raise_if_diverged(losses: torch.Tensor, first_step: int, epoch: int, steps_per_epoch: int) -> None:
    """Raise TrainingDiverged naming the first non-finite loss among steps first_step, ..."""
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        s = first_step + int(bad[0, 0])
        raise TrainingDiverged(
            f"loss became NaN or infinite at epoch {epoch + 1}, step {s + 1}/{steps_per_epoch}; "
            "lower the learning rate. The checkpoint of the last completed epoch (if any) is kept."
        )
