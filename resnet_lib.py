"""Compact ResNets on CIFAR-10: the models, the data pipeline and the training loop.

The notebooks' one import (`import resnet_lib as rl`), and a command line::

    python resnet_lib.py train --model lite --recipe modern --epochs 40 --out results/lite

Read top to bottom:
  1. models     `RBL` block, `ResNet` builder (architectures as data), `lite()` / `improved()`, `summary`
  2. data       `CIFAR10` in memory, `load_cifar10` (official files or an image folder), `channel_stats`
  3. pipeline   the whole dataset as uint8 on the training device; batched crop / flip / cutout there
  4. training   `TrainConfig` and `RECIPES`, `fit` / `train_step` / `evaluate` (a checkpoint every
                epoch), `train_and_evaluate` (the whole job: data, model, fit, results.json)

Everything else lives beside it in `resnet_tools/`, one concern per module: `safeio` (safe
files), `cifarfiles` and `imagefolder` (reading data), `inference` (predict, safetensors),
`results` (run names, tables), `figures` and `cli`. The names the notebooks use from there are
re-exported here (`rl.plot_confusion_matrix`), loaded on first use. Importing needs only
torch, numpy and tqdm (through resnet_tools.progress), and has no side effects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet_tools.devices import DEVICES, bf16_enabled, compile_enabled, keep_freed_memory, resolve_device
from resnet_tools.progress import progress_bar
from resnet_tools.runlog import HISTORY_KEYS, epoch_record
from resnet_tools.safeio import atomic_save, check_writable, run_lock, write_json

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PARAM_BUDGET = 5_000_000  # the mini-project's hard limit on trainable parameters


class BudgetError(ValueError):
    """A model has more parameters than PARAM_BUDGET and over-budget was not allowed."""


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


class DataError(RuntimeError):
    """The data folder is missing, incomplete, corrupt or unsafe; the message says what to do."""


@dataclass
class CIFAR10:
    """CIFAR-10 in memory: uint8 images (N, 3, 32, 32) and int64 labels, as CPU tensors."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    root: str = ""
    official: bool = True  # every file matched its official md5
    classes: tuple[str, ...] = CLASSES
    # Which data this is, in results and tables: "CIFAR-10 (official)", "CIFAR-10 (JPEG copy)",
    # "image folder: NAME", "non-official CIFAR-10 files: NAME", or "subset of ..." after head().
    label: str = "in-memory data"
    _stats: tuple[tuple[float, ...], tuple[float, ...]] | None = field(default=None, init=False, repr=False)
    _fingerprint: dict[str, Any] | None = field(default=None, init=False, repr=False)

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel of all training images (validation split included:
        pixel statistics carry no label information), computed once with channel_stats."""
        if self._stats is None:
            self._stats = channel_stats(self.train_x)
        return self._stats

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Which data this is, for checkpoints: label, root, counts and a SHA-256 of the training
        (and of the test) images and labels, computed once. A run resumed on other data is refused."""
        if self._fingerprint is None:

            def sha256(*tensors: torch.Tensor) -> str:
                h = hashlib.sha256()
                for t in tensors:
                    h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
                return h.hexdigest()

            self._fingerprint = {
                "label": self.label,
                "root": str(self.root),
                "n_train": len(self.train_y),
                "n_test": len(self.test_y),
                "train_sha256": sha256(self.train_x, self.train_y),
                "test_sha256": sha256(self.test_x, self.test_y),
            }
        return self._fingerprint

    def head(self, n_train: int, n_test: int) -> "CIFAR10":
        """n_train training and n_test test images spread evenly over each split (every k-th; smoke
        runs), labelled a subset: every class is in it even where files load sorted by class."""
        label = self.label if self.label.startswith("subset of ") else f"subset of {self.label}"

        def spread(n: int, total: int) -> torch.Tensor:  # n indices, evenly spaced over 0..total-1
            return torch.arange(total) if n >= total else torch.arange(n) * total // n

        tr, te = spread(n_train, len(self.train_y)), spread(n_test, len(self.test_y))
        return CIFAR10(
            self.train_x[tr],
            self.train_y[tr],
            self.test_x[te],
            self.test_y[te],
            root=self.root,
            official=self.official,
            classes=self.classes,
            label=label,
        )

    def __repr__(self) -> str:
        return f"CIFAR10({len(self.train_y):,} train, {len(self.test_y):,} test, {self.label}, root={self.root!r})"


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
    from resnet_tools import cifarfiles, imagefolder  # imported here: they import this module

    if imagefolder.is_image_folder(root):
        return imagefolder.load_as_cifar10(root)
    return cifarfiles.load_batch_folder(root, download)


def channel_stats(x: torch.Tensor, chunk: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, 3, H, W), pixels scaled to [0, 1].

    Accumulates sums in float64 over chunks, so the full training set needs little memory.
    """
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        b = x[i : i + chunk].to(torch.float64) / 255.0
        total += b.sum(dim=(0, 2, 3))
        total_sq += (b * b).sum(dim=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


# ---------------------------------------------------------------------------------------
# 3. Pipeline: whole dataset as uint8 on the training device, batched augmentation there
# ---------------------------------------------------------------------------------------
def augment(
    x: torch.Tensor, generator: torch.Generator, crop: bool = True, flip: bool = True, pad: int = 4
) -> torch.Tensor:
    """Random crop (zero padding `pad`) and horizontal flip of a whole uint8 batch (B, C, H, W).

    Random draws come from `generator` (a CPU generator, so runs are reproducible on any
    device and resumable); the pixel work is one gather on x's device.
    """
    draws = _augment_draws(len(x), generator, crop, flip, pad)
    dy, dx, mirror = (None if d is None else d.to(x.device) for d in draws)
    return _crop_flip(x, dy, dx, mirror, pad)


def _augment_draws(
    n: int, generator: torch.Generator, crop: bool, flip: bool, pad: int
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(dy, dx, mirror) for n images, drawn on the CPU in this order; None where disabled."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator) if crop else None
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator) if crop else None
    mirror = torch.rand(n, generator=generator).lt(0.5) if flip else None
    return dy, dx, mirror


def _crop_flip(
    x: torch.Tensor, dy: torch.Tensor | None, dx: torch.Tensor | None, mirror: torch.Tensor | None, pad: int = 4
) -> torch.Tensor:
    """The window at (dy, dx) of each image zero-padded by `pad`, mirrored where `mirror`.

    Crop and flip are one gather of flat pixel positions per image, shared by its channels
    (few, large memory accesses: see bench/README.md for how it compares).
    dy/dx None = no crop, mirror None = no flip.
    """
    if dy is None and mirror is None:
        return x
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).expand(b, h)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if mirror is not None:  # column j of a mirrored window is column w-1-j of the window
        cols = torch.where(mirror[:, None], w - 1 - cols, cols)
    if dy is not None and dx is not None:
        x = F.pad(x, (pad, pad, pad, pad))
        rows = rows + dy[:, None]
        cols = cols + dx[:, None]
    index = (rows[:, :, None] * x.shape[3] + cols[:, None, :]).view(b, 1, h * w)
    return x.reshape(b, c, -1).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image (centre uniform over the image, clipped at the border).

    Applied after normalization, so zero is the dataset mean.
    """
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (b,), generator=generator).to(x.device)
    return _cutout_at(x, cy, cx, size)


def _cutout_at(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero the size x size square centred at (cy, cx) of each image (clipped at the border)."""
    h, w = x.shape[2:]
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys - cy[:, None]).abs() <= size // 2 - (1 - size % 2) * (ys >= cy[:, None])
    in_x = (xs - cx[:, None]).abs() <= size // 2 - (1 - size % 2) * (xs >= cx[:, None])
    mask = in_y[:, :, None] & in_x[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (x/255 - mean) / std, as one multiply-add.

    With `channels_last`, the result is written in that memory format by the same kernel.
    """
    return _scale_shift(x, *_affine(mean, std), channels_last=channels_last)


def _affine(mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (1, C, 1, 1) with x * scale + shift == (x/255 - mean) / std."""
    return (1.0 / (255.0 * std)).view(1, -1, 1, 1), (-mean / std).view(1, -1, 1, 1)


def _scale_shift(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    # One kernel: addcmul reads the uint8 pixels directly (type promotion, no float copy)
    # and writes straight into the requested layout (no separate .contiguous() copy).
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=fmt)
    return torch.addcmul(shift, x, scale, out=out)


# ---------------------------------------------------------------------------------------
# 4. Training
# ---------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """An invalid TrainConfig field; the message lists the valid choices."""


class RanksDisagree(ConfigError):
    """Ranks of one distributed run were started with different settings or data; raised on every
    rank at the same point (resnet_tools.distributed.check_ranks_agree), so they can end together."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
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
            # Count on the meta device (no memory, ~ms), so an over-budget architecture is
            # refused here, with the parameters, not when the run builds it.
            def n_params(arch: str) -> int:
                with torch.device("meta"):
                    return count_params(ResNet(*ARCHS[arch], allow_over_budget=True))

            n = n_params(self.model)
            if n > PARAM_BUDGET:
                within = [a for a in ARCHS if a != self.model and n_params(a) <= PARAM_BUDGET]
                raise ConfigError(
                    f"model={self.model!r} has {n:,} parameters, over the {PARAM_BUDGET:,} budget; choose one of: "
                    f"{', '.join(within)}, or set allow_over_budget=True"
                )

    @classmethod
    def from_recipe(cls, recipe: str, **overrides: Any) -> "TrainConfig":
        """A named preset from RECIPES, with any field overridden (None = keep the preset's).
        A preset means the same on every device: the same batch size and learning rate on a CPU and
        a GPU (where the graphed step, `cuda_graph`, keeps batch 128 from being bound by kernel
        launches). A larger GPU batch, tried before (batch 256, lr 0.4), cost the Improved model
        about 5 points on real held-out images; bench/README.md, "The modern recipe's batch size"."""
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; valid choices: {', '.join(RECIPES)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; valid fields: {', '.join(sorted(known))}")
        values = {**RECIPES[recipe], "recipe": recipe}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if recipe.startswith("seed") and values.get("optimizer") in ("adam", "adamw") and overrides.get("lr") is None:
            values["lr"] = 1e-3  # the usual Adam default; the report does not give its rates
        return cls(**values)


# fmt: off
RECIPES: dict[str, dict[str, Any]] = {
    # What the seed report describes, read literally: 40 epochs, no augmentation, a constant
    # learning rate, SGD + momentum (or Adam). It gives no learning rate, batch size or weight
    # decay; these are the course-standard values (SGD 0.01 / Adam 0.001, batch 128).
    "seed": dict(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0, schedule="constant",
                 warmup_epochs=0.0, label_smoothing=0.0, crop=False, flip=False, cutout=0, epochs=40,
                 batch_size=128, tta=False),
    # The reading of the seed's recipe that came closest to its Lite row (README, "Which reading of
    # the seed's recipe"): kuangliu/pytorch-cifar's main.py, the usual starting point of such course
    # projects (lr 0.1, momentum 0.9, weight decay 5e-4, CosineAnnealingLR(T_max=200)) run for 40
    # epochs, so the lr stays near 0.1, without its augmentation, as the report says.
    "seed-kuangliu": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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
    dy, dx, mirror = _augment_draws(n, gen, cfg.crop, cfg.flip, pad=4)
    cy = torch.randint(0, h, (n,), generator=gen) if cfg.cutout else None
    cx = torch.randint(0, w, (n,), generator=gen) if cfg.cutout else None
    absent = torch.zeros(n, dtype=torch.int64)
    rows = torch.stack([perm] + [absent if d is None else d.long() for d in (dy, dx, mirror, cy, cx)])
    batch_size = cfg.batch_size
    if world_size > 1:
        from resnet_tools.distributed import rank_positions

        positions, _ = rank_positions(n, cfg.batch_size, rank, world_size)
        rows, n, batch_size = rows[:, positions], len(positions), cfg.batch_size // world_size
    train_x, train_y = p.train_x, p.train_y
    if p.sharded:  # this rank's images of the epoch, in the order it takes them, to its device (one copy)
        train_x, train_y = train_x[rows[0]].to(device), train_y[rows[0]].to(device)
    perm, dy, dx, mirror, cy, cx = rows.to(device).unbind(0)
    mirror = mirror.bool()
    train_y = train_y if p.sharded else train_y[perm]
    scale, shift = _affine(p.mean, p.std)
    chunk = batch_size * (1 if device.type == "cpu" else 64)
    for c0 in range(0, n, chunk):
        part = slice(c0, c0 + chunk)
        images = _crop_flip(
            train_x[part] if p.sharded else train_x[perm[part]],
            dy[part] if cfg.crop else None,
            dx[part] if cfg.crop else None,
            mirror[part] if cfg.flip else None,
        )
        for start in range(c0, min(c0 + chunk, n), batch_size):
            batch = slice(start, start + batch_size)
            x = _scale_shift(images[start - c0 : start - c0 + batch_size], scale, shift, cfg.channels_last)
            if cfg.cutout:  # after normalization, so the square is the dataset mean
                x = _cutout_at(x, cy[batch], cx[batch], cfg.cutout)
                if cfg.channels_last:  # masked_fill returns a contiguous tensor
                    x = x.contiguous(memory_format=torch.channels_last)
            yield x, train_y[batch]


def _bf16_autocast(device: torch.device, bf16: bool | None):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_enabled(device.type, bf16))


def _autocast(device: torch.device, cfg: TrainConfig):
    return _bf16_autocast(device, cfg.bf16)


class EvalResult(NamedTuple):
    loss: float
    accuracy: float
    logits: torch.Tensor  # (N, 10) float32 on the CPU
    predictions: torch.Tensor  # (N,) int64 on the CPU
    labels: torch.Tensor  # (N,) int64 on the CPU


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: CIFAR10 | tuple[torch.Tensor, torch.Tensor],
    split: str = "test",
    tta: bool = False,
    batch_size: int = 1000,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    bf16: bool | None = None,
) -> EvalResult:
    """Loss, accuracy, logits and predictions of `model` on a split ('test' or 'train') of
    `data`, or on explicit `(images, labels)` (uint8 images, as for the validation split).

    Normalizes with `stats` (mean, std) if given, else with `data.stats`, as training
    did. With `tta`, logits are averaged over the image and its horizontal mirror. Runs
    on the model's device; restores its train/eval mode.
    """
    if isinstance(data, CIFAR10):
        if split not in ("test", "train"):
            raise ValueError(f"split={split!r}; valid choices: test, train")
        x_all, y_all = (data.test_x, data.test_y) if split == "test" else (data.train_x, data.train_y)
        stats = stats if stats is not None else data.stats
    else:
        x_all, y_all = data
        if stats is None:
            raise ValueError("pass stats=(mean, std) when evaluating explicit (images, labels)")
    logits_t = logits_of(model, x_all, stats, tta=tta, batch_size=batch_size, bf16=bf16)
    loss = F.cross_entropy(logits_t, y_all).item() if len(y_all) else float("nan")
    preds = logits_t.argmax(1)
    acc = (preds == y_all).float().mean().item() if len(y_all) else float("nan")
    return EvalResult(loss, acc, logits_t, preds, y_all.clone())


@torch.no_grad()
def logits_of(
    model: nn.Module,
    x_all: torch.Tensor,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    tta: bool = False,
    batch_size: int = 1000,
    bf16: bool | None = None,
) -> torch.Tensor:
    """float32 logits (N, 10) on the CPU for uint8 images (N, 3, 32, 32), in eval mode."""
    param = next(model.parameters())
    device = param.device
    mean, std = stats
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    channels_last = param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    logits = []
    try:
        for start in range(0, len(x_all), batch_size):
            x = normalize(x_all[start : start + batch_size].to(device), mean_t, std_t)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _bf16_autocast(device, bf16):
                out = model(x).float()
                if tta:
                    out = 0.5 * (out + model(x.flip(3)).float())
            logits.append(out)  # kept on the device: one copy to the CPU at the end, not a sync per batch
    finally:
        model.train(was_training)
    return torch.cat(logits).cpu() if logits else torch.zeros(0, len(CLASSES))


def _evaluate_splits(
    model: nn.Module,
    val_xy: tuple[torch.Tensor, torch.Tensor],
    data: CIFAR10,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    tta: bool,
    bf16: bool,
) -> tuple[EvalResult | None, EvalResult]:
    """(validation or None without a split, test) results. Under DDP each rank evaluates its
    slice and the sums are all-reduced (resnet_tools.distributed.evaluate_sharded)."""
    from resnet_tools import distributed as ddp

    def run(xy: tuple[torch.Tensor, torch.Tensor]) -> EvalResult:
        if ddp.world().distributed:
            return ddp.evaluate_sharded(model, xy, stats, tta, bf16)
        return evaluate(model, xy, tta=tta, stats=stats, bf16=bf16)

    return (run(val_xy) if len(val_xy[1]) else None), run((data.test_x, data.test_y))


def make_step(
    model: nn.Module, optimizer: Any, scheduler: Any, cfg: TrainConfig, device: torch.device, batch: int,
    teacher: nn.Module | None = None, steps: int = 0,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """fit's training step, `step(x, y, scale=1.0) -> (loss, logits)`: resnet_tools.cudagraph.make_train_step
    (a CUDA graph where cfg allows one) through torch.compile where compile_enabled says for a run of
    `steps` steps. An automatic compile (cfg.compile None) that fails, e.g. without a C++ compiler, warns
    and trains eagerly from the failed step on; one asked for fails as torch says. The benchmark builds
    its steps here too (bench/methods.py), so it times the step fit takes."""
    from resnet_tools.cudagraph import make_train_step  # imports only torch

    def make(compiled: bool) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        # dynamic=False: the smaller last batch of an epoch gets its own static graph instead
        # of turning the batch size symbolic for every later step (automatic dynamic shapes).
        step_model = torch.compile(model, dynamic=False) if compiled else model
        return make_train_step(step_model, optimizer, scheduler, dataclasses.replace(cfg, compile=compiled),
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
    accuracy so far); then `on_epoch(history)` is called, if given (train_and_evaluate's writes
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
    from resnet_tools import distributed as ddp  # imports only torch

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
    optimizer, scheduler = _optimizer_and_schedule(model, cfg, len(batch_sizes))
    gen = torch.Generator().manual_seed(cfg.seed)
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    return _FitRun(model, cfg, device, world, checkpoint, prepared, val_xy, batch_sizes, optimizer, scheduler, gen,
                   history, started=time.perf_counter())


def _optimizer_and_schedule(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int) -> tuple[Any, Any]:
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


def _restore(run: _FitRun, data: CIFAR10) -> None:
    """Continue from run.checkpoint (checked against this run's config, model, data and processes)."""
    from resnet_tools import distributed as ddp  # imports only torch
    from resnet_tools.checkpoints import check_resumable, elapsed_seconds, load_checkpoint_dict

    saved = load_checkpoint_dict(run.checkpoint)
    check_resumable(saved, run.cfg, run.model, run.checkpoint, data)
    ddp.check_world_size(saved, run.world, run.checkpoint)
    run.model.load_state_dict(saved["model_state"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.gen.set_state(saved["rng"]["data"])
    run.history = {k: list(v) for k, v in saved["history"].items()}
    run.start_epoch, run.elapsed_before = int(saved["epoch"]), elapsed_seconds(saved)


def _fit_step(run: _FitRun, teacher: nn.Module | None) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The run's training step (make_step) on the model, wrapped in DDP under a process group;
    a teacher frozen, in eval mode, with the student's device and memory layout."""
    from resnet_tools import distributed as ddp  # imports only torch

    cfg = run.cfg
    train_model = ddp.wrap(run.model, run.device, cfg.sync_bn) if run.world.distributed else run.model
    if teacher is not None:
        teacher.to(run.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
        teacher.eval().requires_grad_(False)
    return make_step(train_model, run.optimizer, run.scheduler, cfg, run.device, cfg.batch_size // run.world.size,
                     teacher, run.total_steps)


def _train_epoch(run: _FitRun, step_fn: Callable[..., Any], epoch: int, bar: Any) -> _Trained:
    """One epoch of training steps; stops with TrainingDiverged at a non-finite loss."""
    from resnet_tools import distributed as ddp  # imports only torch

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
    from resnet_tools import distributed as ddp  # imports only torch

    val, ev = _evaluate_splits(run.model, run.val_xy, data, data.stats, tta=False, bf16=run.cfg.bf16)
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
    from resnet_tools.checkpoints import checkpoint_state

    state = checkpoint_state(
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


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    scale: float = 1.0,
    teacher: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimization step on a prepared batch; returns (detached loss, logits) without a
    host sync. Shared by `fit` and the benchmark's fixed-batch ceiling. `scale` multiplies
    the loss that is differentiated (DDP: this rank's share of an uneven last batch). With a
    `teacher` (eval mode, frozen), the loss is distillation's on the same batch and numerics."""
    with _autocast(device, cfg):
        logits = model(x)
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(x)
    if teacher is None:
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    else:
        from resnet_tools.distill import distillation_loss  # imports only torch

        loss = distillation_loss(
            logits, teacher_logits, y, cfg.distill_temperature, cfg.distill_alpha, cfg.label_smoothing
        )
    optimizer.zero_grad(set_to_none=True)
    (loss * scale if scale != 1.0 else loss).backward()
    optimizer.step()
    scheduler.step()
    return loss.detach(), logits


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


def train_and_evaluate(
    cfg: TrainConfig,
    data: CIFAR10 | None = None,
    data_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    download: bool = True,
    resume: bool = False,
    progress: bool = True,
) -> tuple[ResNet, dict[str, Any]]:
    """The whole job: load data, build the model, fit, evaluate, write results.

    Writes `out_dir/checkpoint.pt`, `out_dir/best.pt` (the best validation accuracy so far),
    `out_dir/history.csv` and TensorBoard event files (every epoch) and `out_dir/results.json`;
    returns (trained model, results dict). The results say what produced them: data, epochs,
    device, wall time. With `resume`, continues from `out_dir/checkpoint.pt`; without it,
    refuses to overwrite the checkpoint of an unfinished run (ValueError, before any work).

    Under torchrun (WORLD_SIZE > 1) it starts the process group (NCCL on GPUs, Gloo on CPUs)
    and ends it when done; `fit` then trains with DDP and only rank 0 writes files.
    """
    from resnet_tools import distributed as ddp  # imports only torch

    # What fails without data fails first: the config, a device this machine lacks, an
    # unwritable output folder. OUT/.lock (run_lock, held by rank 0 alone under torchrun) makes a
    # second process training into the same folder fail at once instead of both writing there.
    cfg.validate()
    device = resolve_device(cfg.device)
    lock = contextlib.nullcontext()
    if out_dir is not None:
        check_writable(Path(out_dir))
        if int(os.environ.get("RANK", "0")) == 0:
            lock = run_lock(Path(out_dir))
    with lock:
        started = ddp.init_from_env(device) if ddp.env_world_size() > 1 else False
        together = False  # every rank got here at once: the closing barrier is safe
        try:
            result = _train_and_evaluate(cfg, device, data, data_dir, out_dir, download, resume, progress)
            together = True
            return result
        except RanksDisagree:
            together = True
            raise
        except RuntimeError as e:  # Gloo's timeout or lost peer: one line that says what happened
            failure = ddp.rank_failure(e)
            if failure is None:
                raise
            raise failure from e
        finally:
            if started:
                ddp.shutdown(together)


def _train_and_evaluate(
    cfg: TrainConfig,
    device: torch.device,  # resolve_device(cfg.device), chosen once by train_and_evaluate
    data: CIFAR10 | None,
    data_dir: str | Path | None,
    out_dir: str | Path | None,
    download: bool,
    resume: bool,
    progress: bool,
) -> tuple[ResNet, dict[str, Any]]:
    from resnet_tools import distributed as ddp
    from resnet_tools.results import run_record  # it imports this module

    # train_and_evaluate checked the config, the device and the output folder; what else can
    # fail without data fails here, before loading (or downloading) data and before training:
    # the batch split across ranks, the model's budget, and what an existing checkpoint allows.
    if ddp.world().distributed:
        # First, before any rank can stop alone (a checkpoint check, its data) and leave the others waiting.
        ddp.check_ranks_agree(ddp.run_settings(cfg, device, resume=resume), ddp.world())
        ddp.check_batch_size(cfg.batch_size, ddp.world())
    out = Path(out_dir) if out_dir is not None else None
    checkpoint = out / "checkpoint.pt" if out is not None else None
    model = build_model(cfg.model, seed=cfg.seed, allow_over_budget=cfg.allow_over_budget)
    if checkpoint is not None and checkpoint.exists():
        from resnet_tools.checkpoints import check_existing_checkpoint  # it imports this module

        check_existing_checkpoint(checkpoint, cfg, model, resume)
    finished = _finished_run(out, cfg) if resume and checkpoint is not None and checkpoint.exists() else None
    if finished is not None:  # nothing to resume: a second final evaluation would rewrite its wall time
        from resnet_tools.checkpoints import load_checkpoint_dict  # it imports this module

        print(f"{out}: this run is finished ({cfg.epochs} epochs); its results.json is kept as it is", file=sys.stderr)
        model.load_state_dict(load_checkpoint_dict(checkpoint)["model_state"])
        return model.to(device), finished
    source = None
    if cfg.init_from and not (resume and checkpoint is not None and checkpoint.exists()):
        source = _init_weights_from(model, cfg)
    if data is None:
        data = load_cifar10(data_dir, download=download)
    teacher, teacher_record = _load_teacher(cfg, data) if cfg.teacher else (None, None)
    world = ddp.world()
    # history.csv and TensorBoard scalars in out_dir after every epoch (resnet_tools.runlog), rank 0 only.
    fresh = not (resume and checkpoint is not None and checkpoint.exists())
    log = _epoch_log(out, fresh) if world.main else None
    t0 = time.perf_counter()
    if not fresh:  # the wall time of a resumed run counts its earlier sessions too
        from resnet_tools.checkpoints import elapsed_seconds, load_checkpoint_dict  # they import this module

        t0 -= elapsed_seconds(load_checkpoint_dict(checkpoint))
    try:
        history = fit(
            model, data, cfg, checkpoint=checkpoint, resume=resume, progress=progress, on_epoch=log, teacher=teacher
        )
    except BaseException:
        if log is not None:
            log.close()
        raise
    wall = time.perf_counter() - t0
    (train_x, _), val_xy = split_train_val(data, cfg)
    device = ddp.rank_device(device) if world.distributed else device
    val, test = _evaluate_splits(model, val_xy, data, data.stats, tta=cfg.tta, bf16=cfg.bf16)
    results = run_record(cfg, model, history, val, test, data, len(train_x), len(val_xy[1]), device, wall)
    if source is not None or cfg.init_from:  # on a resume the checkpoint already holds those weights
        results["init_from"] = source or {"path": cfg.init_from}
    if teacher is not None:  # which teacher, and how often the student predicts as it does on the test set
        from resnet_tools.distill import agreement  # imports only torch

        teacher_test = logits_of(teacher, data.test_x, data.stats, tta=cfg.tta, bf16=cfg.bf16)
        results["teacher"] = {**teacher_record, "test_agreement": agreement(test.predictions, teacher_test)}
    if log is not None:
        log.final(results)
        log.close()
    if out is not None and world.main:
        write_json(results, out / "results.json")
    ddp.barrier()
    return model, results


def _finished_run(out: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """out/results.json when it records this run finished: all cfg.epochs epochs of the same
    model, recipe and seed (the checkpoint beside it was already checked to match cfg)."""
    import json

    try:
        res = json.loads((out / "results.json").read_text())
        c, epochs = res["config"], res["history"]["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none, or unreadable: the resume evaluates and writes it anew
    same = all(c.get(k) == getattr(cfg, k) for k in ("model", "recipe", "seed", "epochs"))
    return res if same and isinstance(epochs, list) and len(epochs) == cfg.epochs else None


def _init_weights_from(model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """Load cfg.init_from's weights into `model` (same architecture, checked); what results.json
    records of where they came from: the path, its model, recipe, seed, epochs and validation accuracy."""
    from resnet_tools.checkpoints import load_checkpoint  # it imports this module

    path = Path(cfg.init_from).expanduser()
    if not path.is_file():
        raise ConfigError(f"init_from={cfg.init_from!r}: no such checkpoint file")
    trained, saved = load_checkpoint(path, device="cpu", expect={"model": cfg.model})
    model.load_state_dict(trained.state_dict())
    src, val = saved["config"], [a for a in saved["history"].get("val_acc", []) if not math.isnan(a)]
    described = {k: src.get(k) for k in ("model", "recipe", "seed")}
    return {"path": str(path), **described, "epochs": saved["epoch"], "val_acc": val[-1] if val else None}


def _load_teacher(cfg: TrainConfig, data: CIFAR10) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher cfg.teacher names (a checkpoint or a safetensors export, checked as for
    inference: sums, finite weights), and what results.json records of it. Refused unless it
    normalizes as `data` does and predicts its classes: a teacher of other data misleads silently."""
    import json

    from resnet_tools.inference import load_for_inference_with_config  # it imports this module

    path = Path(cfg.teacher).expanduser()
    if not path.is_file():
        raise ConfigError(f"teacher={cfg.teacher!r}: no such checkpoint or safetensors file")
    try:
        teacher, stats, config = load_for_inference_with_config(path, device="cpu")
    except ValueError as e:
        raise ConfigError(f"teacher: {e}") from None
    theirs, ours = [*stats[0], *stats[1]], [*data.stats[0], *data.stats[1]]
    if len(theirs) != len(ours) or not all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(theirs, ours)):
        raise ConfigError(
            f"teacher {path} normalizes with mean/std {stats}, this data with {data.stats}: it was trained on "
            "other data; train a teacher on this data first"
        )
    with torch.no_grad():
        n_out = teacher(torch.zeros(1, 3, *data.train_x.shape[2:])).shape[1]
    if n_out != len(data.classes):
        raise ConfigError(f"teacher {path} predicts {n_out} classes, this data has {len(data.classes)}")
    record = {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        **{k: config.get(k) for k in ("model", "recipe", "seed", "epochs")},
        "num_params": count_params(teacher),
    }
    beside = path.with_name("results.json")  # the run the teacher came from, when it is there to tell
    try:
        final = json.loads(beside.read_text())["final"]
        record.update(test_acc=float(final["test_acc"]), val_acc=float(final["val_acc"]), tta=bool(final["tta"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return teacher, record


def _epoch_log(out: Path | None, fresh: bool) -> Any:
    """fit's on_epoch callback writing history.csv and TensorBoard event files into `out`, or None;
    `fresh` (not a resume) first moves an earlier run's files aside (runlog.set_aside_earlier_run)."""
    if out is None:
        return None
    from resnet_tools.runlog import EpochLog  # imports safeio only; tensorboard (optional) when it runs

    return EpochLog(out, fresh=fresh)


# ---------------------------------------------------------------------------------------
# Names the notebooks use from resnet_tools, loaded on first use (no import cycle, no
# matplotlib or pandas at import time): rl.plot_confusion_matrix is figures.plot_confusion_matrix.
# ---------------------------------------------------------------------------------------
_REEXPORTS = {
    "resnet_tools.cifarfiles": "CIFAR10_URL CIFAR10_FOLDER read_batch",
    "resnet_tools.devices": "device_name mps_available",
    "resnet_tools.checkpoints": "CHECKPOINT_FORMAT checkpoint_state load_checkpoint load_checkpoint_dict",
    "resnet_tools.safeio": "write_json check_writable atomic_write atomic_save",
    "resnet_tools.inference": "predict export_safetensors load_pretrained load_for_inference read_unlabeled "
    "write_submission as_nchw_uint8",
    "resnet_tools.results": "SEED_REPORTED run_name group_name optimizer_label run_label load_results saved_results "
    "best_run best_of_each_group merge_seeds missing_runs results_table summary_table write_table class_counts "
    "channel_stats_table confusion_matrix per_class_accuracy confused_pairs",
    "resnet_tools.figures": "save_figure plot_class_balance plot_samples_per_class plot_augmentation_preview "
    "plot_training_curves plot_confusion_matrix plot_per_class_accuracy plot_misclassified plot_predictions",
    "resnet_tools.explain": "fit_temperature expected_calibration_error calibrate calibration_table "
    "plot_reliability_diagram grad_cam pick_examples example_titles plot_grad_cam",
    "resnet_tools.cli": "main",
}
_REEXPORTED = {name: module for module, names in _REEXPORTS.items() for name in names.split()}


def __getattr__(name: str) -> Any:
    if name in _REEXPORTED:
        return getattr(importlib.import_module(_REEXPORTED[name]), name)
    raise AttributeError(f"module 'resnet_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_REEXPORTED])


if __name__ == "__main__":
    from resnet_tools.cli import main

    sys.exit(main())
