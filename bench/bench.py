"""Training-throughput benchmark of the project's pipeline (`resnet_lib`).

Three ways of training the same model with the same batch size, side by side (one timed
window of each per round, rounds interleaved so that a change in machine load hits all
of them alike; img/s is the median over windows after a warm-up round):

  reference  the loop most CIFAR repositories ship: a torchvision.datasets.CIFAR10-style
             Dataset (HWC uint8 -> PIL image per sample) with RandomCrop(32, padding=4),
             RandomHorizontalFlip, ToTensor, Normalize, through a DataLoader; fp32, NCHW.
  pipeline   `resnet_lib.fit` itself (device-resident uint8 data, batched augmentation,
             channels_last, bf16 autocast on CUDA, torch.compile unless --compile off),
             one epoch per window, on a training set of exactly `steps` batches.
  ceiling    the pipeline's model and training step (same autocast, compile, loss,
             optimizer) on one fixed, already-prepared batch: no data pipeline at all.

On CUDA both take fit's step as a CUDA graph where fit would (`--cuda-graph on`, compile
off: resnet_tools.cudagraph); its warm-up and capture time is reported apart, not timed.

Sections (`--sections`): `throughput` (both models), `epoch` (CUDA: one full-size epoch
of 50,000 synthetic images through `fit`, seconds per epoch and the projected 40-epoch
time, compile/warm-up apart), `accuracy` (CPU, Lite, the mini CIFAR set: epochs and
seconds the `modern` recipe needs to reach the test accuracy of the `seed` recipe after
40 epochs) and `options` (the mini CIFAR set: the `modern` recipe with and without the
speed options (bf16, channels_last, compile or the CUDA graph), 3 seeds each). Defaults: CPU runs throughput +
accuracy, CUDA runs throughput + epoch + options (sections on real images only when the
data folder exists).

    python bench/bench.py                    # CPU; make bench
    python bench/bench.py --device cuda      # GPU part (sized for the issue's 4-minute budget)
    python bench/bench.py --quick            # smoke run, seconds

Writes bench/results/latest-<device>.json (hardware, versions, settings, every window)
and latest-<device>.md (the printed tables). Needs only torch, torchvision, numpy, tqdm.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import resnet_lib as rl  # noqa: E402
from resnet_tools import cifarfiles, devices, job, safeio  # noqa: E402
from resnet_tools import cudagraph  # noqa: E402
from resnet_tools.cli import field_parser  # noqa: E402
from resnet_tools.cudagraph import make_train_step  # noqa: E402
from resnet_tools.devices import cpu_model, cpu_native_bf16  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "cifar10-mini"
MODELS = ("lite", "improved")

# Targets from the issue that asked for this benchmark (see bench/README.md).
CPU_MIN_SPEEDUP = {"lite": 1.6, "improved": 1.3}  # pipeline / best reference loop
MIN_FRACTION_OF_CEILING = 0.90
GPU_MAX_EPOCH_SECONDS = {"lite": 0.25, "improved": 0.45}  # one 50,000-image epoch at the modern recipe's batch
GPU_MAX_RUN_SECONDS = {"improved": 25.0}  # 40 epochs, warm-up and the per-epoch evaluation included
GPU_MIN_SPEEDUP_OVER_8_WORKERS = 3.0  # pipeline / the reference loop with num_workers=8 (CUDA)
FULL_EPOCH_IMAGES = 50_000  # the CIFAR-10 training set
FULL_TEST_IMAGES = 10_000  # the CIFAR-10 test set (evaluated after every epoch by fit)
PROJECTED_EPOCHS = 40  # the seed report's training length

# Default timed steps per window: same for every method of a model. On the CPU, Improved
# (about 20x the FLOPs of Lite) gets fewer steps so that `make bench` stays short.
DEFAULT_STEPS = {"cpu": {"lite": 24, "improved": 3}, "cuda": {"lite": 50, "improved": 50}}
# Reference-loop workers: on CUDA what most repositories ship (2) and a generous 8; on the
# CPU see `fairness_note`.
DEFAULT_WORKERS = {"cpu": (0, 1), "cuda": (2, 8)}


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if available, else cpu)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: lite,improved")
    p.add_argument(
        "--sections",
        default=None,
        help="comma-separated: throughput,epoch,accuracy,options,scaling "
        "(default: cpu -> throughput,accuracy,scaling; cuda -> throughput,epoch,options,scaling)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="default: the modern recipe's batch size"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps per window (default: cpu lite 24 / improved 3, cuda 50)"
    )
    p.add_argument("--windows", type=int, default=5, help="timed windows per method (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds before the timed ones")
    p.add_argument(
        "--workers",
        default=None,
        help="reference DataLoader num_workers to measure, comma-separated (default: cpu 0,1; cuda 2,8)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's default, normally one per core)"
    )
    p.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile the pipeline's (and the ceiling's) model, as fit does with compile=True; "
        "falls back to off, with a message, where compiling fails. auto: on for the CPU (1.1-1.2x there), off "
        "on CUDA, where the project's default step is the CUDA graph (--cuda-graph) (default: auto)",
    )
    p.add_argument(
        "--cuda-graph",
        choices=("on", "off"),
        default="on",
        help="replay the pipeline's (and the ceiling's) training step as a CUDA graph, as fit does with "
        "cuda_graph=True (CUDA without compile only; eager elsewhere) (default: on)",
    )
    p.add_argument(
        "--cudnn-benchmark",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="set torch.backends.cudnn.benchmark for every method (default off: fit does not set it)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a TrainConfig field of the pipeline/ceiling config, e.g. --set bf16=false (repeatable)",
    )
    p.add_argument("--epoch-images", type=int, default=FULL_EPOCH_IMAGES, help="images in the full-size epoch section")
    p.add_argument(
        "--epoch-runs",
        type=int,
        default=3,
        help="epochs run in the full-size epoch section (the first is warm-up/compile)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"CIFAR-10 folder for the accuracy and options sections (default: {DEFAULT_DATA_DIR} if it exists)",
    )
    p.add_argument(
        "--accuracy-epochs",
        type=int,
        default=40,
        help="epochs of the training runs in the accuracy and options sections",
    )
    p.add_argument("--options-models", default="lite", help="models of the options section, comma-separated")
    p.add_argument(
        "--options-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="TrainConfig override of the options section's speed variant (e.g. batch_size=512, lr=0.8); repeatable",
    )
    p.add_argument("--options-seeds", type=int, default=3, help="runs per variant in the options section")
    p.add_argument("--out", default=None, help="JSON path (default: bench/results/latest-<device>.json)")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 2 steps x 2 windows, Lite only, 2-epoch accuracy section"
    )
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    p.add_argument("--scaling-worker", default=None, help=argparse.SUPPRESS)  # a torchrun rank of `scaling`
    args = p.parse_args(argv)
    if args.quick:
        args.models = "lite" if args.models == ",".join(MODELS) else args.models
        args.steps = args.steps or 2
        args.windows = min(args.windows, 2)
        args.epoch_images = min(args.epoch_images, 2048)
        args.epoch_runs = min(args.epoch_runs, 2)
        args.accuracy_epochs = min(args.accuracy_epochs, 2)
        args.options_seeds = min(args.options_seeds, 2)
    return args


def compile_wanted(option: str, device: torch.device) -> bool:
    """--compile on|off|auto; auto compiles on the CPU only (on CUDA fit replays a CUDA graph,
    which compile excludes, and compiling costs about 30 s up front there)."""
    return option == "on" or (option == "auto" and device.type != "cuda")


def resolve_bench_device(name: str) -> torch.device:
    """rl.resolve_device, limited to what the benchmark measures (cpu, cuda)."""
    try:
        device = rl.resolve_device(name)
    except rl.ConfigError as e:
        raise SystemExit(f"error: --device {name}: {e}") from None
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device {name}: only cpu and cuda are benchmarked")
    return device


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """--set FIELD=VALUE pairs -> typed TrainConfig overrides, read as the CLI reads its options."""
    fields = [f.name for f in dataclasses.fields(rl.TrainConfig)]
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"error: --set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        try:
            out[key] = field_parser(key)(raw)
        except ValueError as e:
            raise SystemExit(f"error: --set {item!r}: {e}") from None
    return out


def config_for(recipe: str, model: str, device: torch.device, **overrides: Any) -> rl.TrainConfig:
    """A recipe's TrainConfig for `model` on `device`, training on all given images
    (no validation split: the benchmark's training sets are sized to whole windows)."""
    fields = {f.name for f in dataclasses.fields(rl.TrainConfig)}
    extra = {"val_size": 0} if "val_size" in fields else {}
    return rl.TrainConfig.from_recipe(recipe, model=model, device=str(device), **extra, **overrides)


def fairness_note(device: torch.device, threads: int, workers: tuple[int, ...], allocator: bool = False) -> str:
    if device.type == "cpu":
        return (
            f"CPU: every method trains with torch.set_num_threads({threads})"
            f"{'' if allocator else ' in this one process'}, on the same "
            f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores. "
            "The reference runs with num_workers=0 (per-sample PIL transforms in the training process, between "
            "steps) and num_workers=1 (one worker process preparing batches while the training threads compute, "
            "sharing the same cores, as a user of such a repository would run it here); targets compare the "
            "pipeline with the faster of the reference runs. The reference runs eager, as those repositories do."
            + (
                " fit keeps freed memory in its process (glibc malloc thresholds, rl.keep_freed_memory); each "
                "reference loop runs in its own process with the default allocator, as those repositories run, and "
                f"waits while the others run; the '{SAME_ALLOCATOR_REFERENCE}' row is the reference loop in fit's "
                "process, with fit's allocator settings."
                if allocator
                else ""
            )
        )
    return (
        f"CUDA: reference DataLoader with num_workers={' and '.join(map(str, workers))} (2 is what most "
        "repositories ship), pin_memory=False, fp32 (cuDNN's default TF32 convolutions), NCHW, no compile."
    )


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
def synthetic_cifar(n_train: int, n_test: int, seed: int = 0) -> rl.CIFAR10:
    """Uniform random uint8 images and labels in CIFAR-10's layout. Pixel values do not
    change the cost of any step (nothing is decoded), so throughput needs no real data."""
    g = torch.Generator().manual_seed(seed)
    return rl.CIFAR10(
        torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n_train,), generator=g),
        torch.randint(0, 256, (n_test, 3, 32, 32), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n_test,), generator=g),
        root="synthetic",
        official=False,
        label="synthetic images",
    )


class ArrayCIFAR(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: index an (N, 32, 32, 3) uint8
    numpy array, make a PIL image, apply the transform."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[Image.Image], torch.Tensor]
    ) -> None:
        self.data = np.ascontiguousarray(images.numpy().transpose(0, 2, 3, 1))  # HWC, as CIFAR10.data
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def reference_loader(
    data: rl.CIFAR10, batch_size: int, num_workers: int, total_batches: int
) -> torch.utils.data.DataLoader:
    """The usual CIFAR training loader (e.g. kuangliu/pytorch-cifar): shuffled, per-sample
    PIL transforms. The sampler runs over as many epochs as `total_batches` needs, so one
    iterator serves every window (worker start-up falls in the warm-up round)."""
    import torchvision.transforms as T

    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(rl.CIFAR10_MEAN, rl.CIFAR10_STD),
        ]
    )
    dataset = ArrayCIFAR(data.train_x, data.train_y, transform)
    sampler = torch.utils.data.RandomSampler(
        dataset, num_samples=total_batches * batch_size, generator=torch.Generator().manual_seed(0)
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True
    )


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, cfg: rl.TrainConfig, device: torch.device) -> Callable[..., Any]:
    """One training step exactly as `rl.fit` takes it (compile call, make_train_step: a CUDA
    graph where fit would replay one; autocast, loss, optimizer, scheduler), without fit's
    per-step bookkeeping. Keep in step with fit. A graphed step has `capture_seconds`."""
    step_model = torch.compile(model, dynamic=False) if cfg.compile else model
    optimizer = rl.make_optimizer(model, cfg)
    # A LambdaLR like fit's; a constant factor, since the schedule's value costs nothing.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return make_train_step(step_model, optimizer, scheduler, cfg, device, cfg.batch_size)


@contextlib.contextmanager
def built_steps() -> Iterator[list[Any]]:
    """The training steps that `rl.fit` builds meanwhile, to read their warm-up + capture time."""
    real, steps = cudagraph.make_train_step, []

    def record(*args: Any, **kwargs: Any) -> Any:
        steps.append(real(*args, **kwargs))
        return steps[-1]

    cudagraph.make_train_step = record  # fit imports it from the module when it starts
    try:
        yield steps
    finally:
        cudagraph.make_train_step = real


def capture_seconds(steps: list[Any]) -> float:
    """Warm-up + capture seconds of graphed steps (0 for eager ones)."""
    return sum(getattr(s, "capture_seconds", 0.0) for s in steps)


def timed(device: torch.device, run: Callable[[], None]) -> float:
    sync(device)
    t0 = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - t0


class Method:
    """A way of training, measured one window at a time: `window()` returns its seconds."""

    def __init__(self, name: str, window: Callable[[], float], close: Callable[[], None] = lambda: None) -> None:
        self.name, self.window, self.close = name, window, close
        self.seconds: list[float] = []
        self.warmup_seconds: list[float] = []
        self.capture_seconds: list[float] = []  # CUDA-graph warm-up + capture per window, not in `seconds`


def pipeline_method(model: nn.Module, data: rl.CIFAR10, cfg: rl.TrainConfig) -> Method:
    """One window = one epoch of rl.fit over exactly `steps` batches; fit's own timing
    (first step to the device sync after the last, evaluation excluded), less the CUDA
    graph's warm-up + capture (once per run of fit, so in every window here)."""
    one_epoch = dataclasses.replace(cfg, epochs=1)

    def window() -> float:
        with built_steps() as steps:
            seconds = rl.fit(model, data, one_epoch, progress=False)["seconds"][0]
        method.capture_seconds.append(capture_seconds(steps))
        return seconds - method.capture_seconds[-1]

    method = Method("pipeline", window)
    return method


def ceiling_method(
    model: nn.Module, data: rl.CIFAR10, cfg: rl.TrainConfig, device: torch.device, steps: int
) -> Method:
    """The pipeline's model and step on one batch prepared once (augmented, normalized,
    in the pipeline's layout, on the device)."""
    mean, std = (torch.tensor(s, dtype=torch.float32, device=device) for s in data.stats)
    x = data.train_x[: cfg.batch_size].to(device)
    x = rl.augment(x, torch.Generator().manual_seed(0), crop=cfg.crop, flip=cfg.flip)
    x = rl.normalize(x, mean, std, channels_last=cfg.channels_last)
    y = data.train_y[: cfg.batch_size].to(device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    step = make_step(model, cfg, device)

    def window() -> float:
        model.train()

        def run() -> None:
            for _ in range(steps):
                step(x, y)

        before = getattr(step, "capture_seconds", 0.0)
        seconds = timed(device, run)
        method.capture_seconds.append(getattr(step, "capture_seconds", 0.0) - before)  # the first window's
        return seconds - method.capture_seconds[-1]

    method = Method("ceiling", window)
    return method


def reference_method(
    name: str,
    data: rl.CIFAR10,
    cfg: rl.TrainConfig,
    device: torch.device,
    steps: int,
    num_workers: int,
    total_windows: int,
) -> Method:
    """The reference loop on its own fp32, NCHW, uncompiled copy of the model."""
    ref_cfg = dataclasses.replace(cfg, bf16=False, channels_last=False, compile=False, cuda_graph=False)
    model = rl.build_model(name, seed=0).to(device)
    step = make_step(model, ref_cfg, device)
    loader = reference_loader(data, cfg.batch_size, num_workers, steps * total_windows)
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(loader)

    def window() -> float:
        model.train()

        def run() -> None:
            for _ in range(steps):
                x, y = next(batches)
                step(x.to(device), y.to(device))

        return timed(device, run)

    def close() -> None:
        nonlocal batches
        batches = iter(())  # drops the DataLoader iterator: its workers exit

    return Method(f"reference, num_workers={num_workers}", window, close)


# The in-process reference row on the CPU: the reference loop with the allocator settings
# fit applies (its name does not start with "reference", so targets never compare with it).
SAME_ALLOCATOR_REFERENCE = "same-allocator reference, num_workers=0"


def _reference_worker(
    conn: Any,
    name: str,
    cfg: dict[str, Any],
    device: str,
    steps: int,
    num_workers: int,
    total_windows: int,
    threads: int,
) -> None:
    """A fresh process running the reference loop one window per request, with the
    C library's default allocator (as the repositories it stands for run)."""
    torch.set_num_threads(threads)
    data = synthetic_cifar(steps * cfg["batch_size"], n_test=32)  # the same images as the parent's
    method = reference_method(
        name, data, rl.TrainConfig(**cfg), torch.device(device), steps, num_workers, total_windows
    )
    conn.send("ready")
    try:
        while conn.recv() == "window":
            conn.send(method.window())
    finally:
        method.close()


def reference_process_method(
    name: str, cfg: rl.TrainConfig, device: torch.device, steps: int, num_workers: int, total_windows: int
) -> Method:
    """`reference_method` in its own spawned process (so `fit`'s allocator settings in this
    process do not reach it); this process waits while it runs a window."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's allocator settings
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(
        target=_reference_worker,
        daemon=False,  # daemonic processes cannot start DataLoader workers
        args=(
            child_conn,
            name,
            dataclasses.asdict(cfg),
            str(device),
            steps,
            num_workers,
            total_windows,
            torch.get_num_threads(),
        ),
    )
    proc.start()

    def receive() -> Any:
        try:
            return conn.recv()
        except EOFError:
            raise RuntimeError(
                f"the reference process (num_workers={num_workers}) died; its traceback is above"
            ) from None

    receive()  # "ready"

    def window() -> float:
        conn.send("window")
        return receive()

    def close() -> None:
        try:
            conn.send("close")
        except (BrokenPipeError, OSError):
            pass
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()

    return Method(f"reference, num_workers={num_workers}", window, close)


def throughput(
    name: str,
    model: nn.Module,
    device: torch.device,
    args: argparse.Namespace,
    cfg: rl.TrainConfig,
    steps: int,
    workers: tuple[int, ...],
    reference_processes: bool = False,
) -> dict[str, Any]:
    """Interleaved rounds of one window per method; img/s = median over timed windows.
    `model` serves the pipeline and the ceiling (compiled once when compile is on). With
    `reference_processes` (the CPU, where fit changes the allocator), each reference loop
    runs in its own process with the default allocator, and one more row measures the
    reference loop in this process, with fit's allocator settings."""
    data = synthetic_cifar(steps * cfg.batch_size, n_test=32)  # a tiny test split: fit evaluates it per window
    rounds = args.warmup + args.windows
    methods = [pipeline_method(model, data, cfg), ceiling_method(model, data, cfg, device, steps)]
    try:
        if reference_processes:
            methods += [reference_process_method(name, cfg, device, steps, nw, rounds) for nw in workers]
            same = reference_method(name, data, cfg, device, steps, 0, rounds)
            same.name = SAME_ALLOCATOR_REFERENCE
            methods.append(same)
        else:
            methods += [reference_method(name, data, cfg, device, steps, nw, rounds) for nw in workers]
        for r in range(rounds):
            for m in methods:
                s = m.window()
                (m.warmup_seconds if r < args.warmup else m.seconds).append(s)
            print(
                f"  {name} round {r + 1}/{rounds}"
                + (" (warm-up)" if r < args.warmup else "")
                + ": "
                + ", ".join(
                    f"{m.name} {steps * cfg.batch_size / (m.warmup_seconds + m.seconds)[-1]:,.0f} img/s"
                    for m in methods
                ),
                flush=True,
            )
    finally:
        for m in methods:
            m.close()
    images = steps * cfg.batch_size
    result: dict[str, Any] = {"steps_per_window": steps, "images_per_window": images, "methods": {}}
    for m in methods:
        rates = [images / s for s in m.seconds]
        result["methods"][m.name] = {
            "images_per_sec": statistics.median(rates),
            "min_images_per_sec": min(rates),
            "max_images_per_sec": max(rates),
            "window_seconds": m.seconds,
            "warmup_window_seconds": m.warmup_seconds,
            "capture_seconds": m.capture_seconds,  # per window, warm-up rounds first; not in window_seconds
        }
    rate = {k: v["images_per_sec"] for k, v in result["methods"].items()}
    refs = {k: v for k, v in rate.items() if k.startswith("reference")}
    best_ref = max(refs, key=refs.get)  # the faster reference by median img/s

    def ratio(a: str, b: str) -> float:
        return paired_ratio(result["methods"][a]["window_seconds"], result["methods"][b]["window_seconds"])

    def key(ref: str) -> str:
        return ref.replace(", ", "_").replace("=", "")

    result["ratios"] = {
        "statistic": (
            "median over timed rounds of the per-round ratio of img/s (the methods of a round run back to back)"
        ),
        "best_reference": best_ref,
        "pipeline_over_best_reference": ratio("pipeline", best_ref),
        **{f"pipeline_over_{key(k)}": ratio("pipeline", k) for k in refs},
        "pipeline_over_ceiling": ratio("pipeline", "ceiling"),
        "best_reference_over_ceiling": ratio(best_ref, "ceiling"),
        **(
            {"pipeline_over_same_allocator_reference": ratio("pipeline", SAME_ALLOCATOR_REFERENCE)}
            if SAME_ALLOCATOR_REFERENCE in rate
            else {}
        ),
        "ratio_of_medians": {
            "pipeline_over_best_reference": rate["pipeline"] / refs[best_ref],
            "pipeline_over_ceiling": rate["pipeline"] / rate["ceiling"],
        },
    }
    return result


def paired_ratio(seconds_a: list[float], seconds_b: list[float]) -> float:
    """Median over rounds of (img/s of a) / (img/s of b) = seconds of b / seconds of a, for
    windows of equal size timed in the same rounds: load that changes between rounds
    cancels out of each ratio."""
    return statistics.median(b / a for a, b in zip(seconds_a, seconds_b))


# ---------------------------------------------------------------------------------------
# Full-size epoch (CUDA) and time to accuracy (CPU)
# ---------------------------------------------------------------------------------------
def full_epoch(
    model: nn.Module, device: torch.device, args: argparse.Namespace, cfg: rl.TrainConfig
) -> dict[str, Any]:
    """`epoch_runs` epochs of rl.fit over `epoch_images` synthetic images with a fresh
    (never compiled) model: the first epoch carries compilation and warm-up, the others
    are steady state."""
    data = synthetic_cifar(args.epoch_images, FULL_TEST_IMAGES if args.epoch_images >= FULL_EPOCH_IMAGES else 256)
    run_cfg = dataclasses.replace(cfg, epochs=args.epoch_runs)
    t0 = time.perf_counter()
    with built_steps() as steps:
        history = rl.fit(model, data, run_cfg, progress=False)
    wall = time.perf_counter() - t0
    seconds = history["seconds"]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    evals = []
    for _ in range(3):  # what fit adds after every epoch: the test-split evaluation
        evals.append(timed(device, lambda: rl.evaluate(model, data, "test", stats=data.stats, bf16=cfg.bf16)))
    eval_s = statistics.median(evals)
    warm = seconds[0] - steady
    return {
        "images": args.epoch_images,
        "test_images": len(data.test_y),
        "batch_size": cfg.batch_size,
        "steps_per_epoch": math.ceil(args.epoch_images / cfg.batch_size),
        "epoch_seconds": steady,
        "images_per_sec": args.epoch_images / steady,
        "epoch_seconds_all": seconds,
        "first_epoch_seconds": seconds[0],
        "compile_and_warmup_seconds": warm,
        "capture_seconds": capture_seconds(steps),  # CUDA graph warm-up + capture, within the first epoch
        "eval_seconds": eval_s,
        "fit_wall_seconds": wall,
        f"projected_{PROJECTED_EPOCHS}_epochs_train_seconds": PROJECTED_EPOCHS * steady,
        f"projected_{PROJECTED_EPOCHS}_epochs_seconds": warm + PROJECTED_EPOCHS * (steady + eval_s),
    }


def time_to_accuracy(data: rl.CIFAR10, epochs: int, threads: int) -> dict[str, Any]:
    """Lite on the CPU: the seed recipe's test accuracy after `epochs` epochs, and the
    first epoch at which the modern recipe (same epochs, its own schedule) reaches it."""
    runs = {}
    for recipe in ("seed", "modern"):
        cfg = config_for(recipe, "lite", torch.device("cpu"), epochs=epochs, seed=0)
        print(
            f"  accuracy: training lite/{recipe} for {epochs} epochs on {len(data.train_y):,} images ...", flush=True
        )
        t0 = time.perf_counter()
        history = rl.fit(rl.build_model("lite", seed=0), data, cfg, progress=sys.stderr.isatty())
        runs[recipe] = {
            "config": dataclasses.asdict(cfg),
            "history": history,
            "wall_seconds": time.perf_counter() - t0,
        }
    target = runs["seed"]["history"]["test_acc"][-1]
    modern = runs["modern"]["history"]
    reached = next((i for i, a in enumerate(modern["test_acc"]) if a >= target), None)
    seed_s, modern_s = runs["seed"]["history"]["seconds"], modern["seconds"]
    k = None if reached is None else reached + 1
    # Epoch times are also given as epochs x the run's median epoch: a competing process
    # can slow single epochs many-fold (seen here: 2.2 s epochs taking 40 s), and the
    # median ignores such epochs. `disturbed` says when the sums are inflated that way.
    med = {"seed": statistics.median(seed_s), "modern": statistics.median(modern_s)}
    disturbed = any(
        sum(v["history"]["seconds"]) > 1.25 * len(v["history"]["seconds"]) * med[r] for r, v in runs.items()
    )
    result: dict[str, Any] = {
        "model": "lite",
        "device": "cpu",
        "threads": threads,
        "epochs": epochs,
        "train_images": len(data.train_y),
        "test_images": len(data.test_y),
        "data": {"root": data.root, "official": data.official},
        "seed_final_test_acc": target,
        "modern_final_test_acc": modern["test_acc"][-1],
        "modern_epochs_to_target": k,
        "seed_train_seconds": sum(seed_s),
        "modern_train_seconds_to_target": None if k is None else sum(modern_s[:k]),
        "median_epoch_seconds": med,
        "seed_train_seconds_median_based": epochs * med["seed"],
        "modern_train_seconds_to_target_median_based": None if k is None else k * med["modern"],
        "disturbed_by_other_load": disturbed,
        "note": "test accuracy without TTA after each epoch; seconds = training time (fit's per-epoch timing, "
        "evaluation excluded); *_median_based = epochs x the run's median epoch time",
        "runs": runs,
    }
    if k is not None:
        result["speedup_epochs"] = epochs / k
        result["speedup_seconds"] = sum(seed_s) / sum(modern_s[:k])
        result["speedup_seconds_median_based"] = (epochs * med["seed"]) / (k * med["modern"])
    return result


def speed_options_accuracy(
    data: rl.CIFAR10,
    models: list[str],
    device: torch.device,
    epochs: int,
    seeds: int,
    compile_on: bool,
    speed_overrides: dict[str, Any] | None = None,
    cuda_graph_on: bool = True,
) -> dict[str, Any]:
    """Is accuracy traded for speed? The modern recipe trained on real images `seeds`
    times each way, at its batch size and learning rate: `plain` (fp32, NCHW, eager step) and
    `speed` (bf16 autocast, channels_last, compile when on, else the CUDA-graph step where on). bf16
    is obeyed on every device; on a CPU without native bf16 it is emulated (slow, the GPU's numerics)."""
    modern = rl.RECIPES["modern"]
    variants = {
        "plain": dict(
            batch_size=modern["batch_size"],
            lr=modern["lr"],
            bf16=False,
            channels_last=False,
            compile=False,
            cuda_graph=False,
        ),
        "speed": {
            "batch_size": modern["batch_size"],
            "lr": modern["lr"],
            "bf16": True,
            "channels_last": True,
            "compile": compile_on,
            "cuda_graph": cuda_graph_on,
            **(speed_overrides or {}),
        },
    }
    emulated = device.type == "cpu" and not cpu_native_bf16()
    result: dict[str, Any] = {
        "device": device.type,
        "epochs": epochs,
        "seeds": list(range(seeds)),
        "train_images": len(data.train_y),
        "test_images": len(data.test_y),
        "data": {"root": data.root, "official": data.official},
        "variants": variants,
        "bf16_emulated_on_this_device": emulated,
        "note": "final test accuracy without TTA (fit's per-epoch evaluation), no validation split; "
        "within noise: |difference of means| <= 2 x its standard error from the seed-to-seed spread",
        "models": {},
    }
    for name in models:
        per: dict[str, Any] = {}
        for variant, kw in variants.items():
            accs, secs = [], []
            for seed in range(seeds):
                cfg = config_for("modern", name, device, epochs=epochs, seed=seed, **kw)
                print(
                    f"  options: {name}/{variant} seed {seed}: batch {cfg.batch_size}, "
                    f"lr {cfg.lr}, {epochs} epochs ...",
                    flush=True,
                )
                history = rl.fit(rl.build_model(name, seed=seed), data, cfg, progress=sys.stderr.isatty())
                accs.append(history["test_acc"][-1])
                secs.append(sum(history["seconds"]))
            per[variant] = {
                "batch_size": kw["batch_size"],
                "lr": kw["lr"],
                "test_acc": accs,
                "train_seconds": secs,
                "mean": statistics.fmean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else math.nan,
            }
        diff = per["speed"]["mean"] - per["plain"]["mean"]
        se = math.sqrt((per["speed"]["std"] ** 2 + per["plain"]["std"] ** 2) / seeds) if seeds > 1 else math.nan
        per["difference"] = diff
        per["difference_se"] = se
        per["within_noise"] = bool(seeds > 1 and abs(diff) <= 2 * se)
        result["models"][name] = per
    return result


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def scaling_worker(args: argparse.Namespace, device: torch.device, name: str) -> int:
    """One rank of a `scaling` run (under torchrun): `fit` with DDP on synthetic images, the
    per-GPU batch `--batch-size` (weak scaling); rank 0 writes the history to --scaling-worker."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_gpu = args.batch_size
    steps = max(10, args.epoch_images // (per_gpu * world))
    cfg = config_for(
        "modern",
        name,
        device,
        batch_size=per_gpu * world,
        epochs=args.epoch_runs,
        compile=compile_wanted(args.compile, device),
        cuda_graph=False,  # DDP steps eagerly: the 1-process run the same way, for a fair ratio
        seed=0,
    )
    _, res = job.train_and_evaluate(cfg, data=synthetic_cifar(steps * per_gpu * world, 1000), progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        rate = res["history"]["images_per_sec"][-1]  # the last epoch: compile and warm-up are in the first
        safeio.write_json({"images_per_sec": rate, "distributed": res["distributed"]}, args.scaling_worker)
    return 0


def scaling(args: argparse.Namespace, device: torch.device, name: str, per_gpu: int) -> dict[str, Any]:
    """Training images/s through `fit` with DDP on 1 and on all N GPUs of this machine (torchrun,
    one process per GPU, the same per-GPU batch), and the efficiency (N-GPU rate / (N x 1-GPU rate))."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2:
        return {"gpus": gpus, "skipped": "no GPU present" if gpus == 0 else "only one GPU present"}
    rates = {}
    for k in (1, gpus):
        print(
            f"bench: scaling, {name}: {args.epoch_runs} epochs on {k} GPU(s), batch {per_gpu} per GPU ...", flush=True
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rank0.json"
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc_per_node={k}",
                "--standalone",
                str(Path(__file__).resolve()),
                "--device",
                "cuda",
                "--models",
                name,
                "--batch-size",
                str(per_gpu),
                "--compile",
                args.compile,
                "--epoch-images",
                str(args.epoch_images),
                "--epoch-runs",
                str(max(2, args.epoch_runs)),
                "--scaling-worker",
                str(out),
            ]
            subprocess.run(cmd, check=True, cwd=ROOT)
            rates[k] = json.loads(out.read_text())["images_per_sec"]
    speedup = rates[gpus] / rates[1]
    return {
        "gpus": gpus,
        "model": name,
        "per_gpu_batch": per_gpu,
        "images_per_sec": {"1": rates[1], str(gpus): rates[gpus]},
        "speedup": speedup,
        "efficiency": speedup / gpus,
    }


def scaling_text(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"Scaling (DDP, torchrun): {r['skipped']}; no scaling row (it needs two or more GPUs)."
    n = r["gpus"]
    return "\n".join(
        [
            f"Scaling: rl.fit with DDP (torchrun, NCCL), {r['model']}, batch {r['per_gpu_batch']} per GPU",
            "",
            f"| model | img/s, 1 GPU | img/s, {n} GPUs | speedup | efficiency |",
            "|---|---|---|---|---|",
            f"| {r['model']} | {r['images_per_sec']['1']:,.0f} | {r['images_per_sec'][str(n)]:,.0f} | "
            f"{r['speedup']:.2f}x | {r['efficiency']:.0%} |",
        ]
    )


def cpu_busy_fraction(seconds: float = 1.0) -> float | None:
    """Fraction of all CPU time spent busy over the next `seconds` (Linux /proc/stat):
    other processes competing with the benchmark. None where /proc/stat is missing."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "hardware": {
            "device": devices.device_name(device),
            "cpu": cpu_model(),
            "cpu_native_bf16": cpu_native_bf16(),  # AMX or AVX512-BF16: what bf16=auto follows on the CPU
            "cpu_count": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": threads,
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "cpu_busy_before_start": cpu_busy_fraction(),
        },
        "software": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["hardware"].update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_multiprocessors=props.multi_processor_count,
        )
        info["software"].update(
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def throughput_table(device: torch.device, results: dict[str, Any], batch_size: int) -> str:
    lines = [
        f"Throughput on {device.type}, batch {batch_size}: images/s, median of the timed windows (spread: min-max); "
        "ratios: median over rounds of the per-round ratio (one window of each method per round, back to back)",
        "",
    ]
    first = next(iter(results.values()))
    refs = [k for k in first["methods"] if k.startswith("reference")]
    head = (
        ["model", "method", "steps/window", "img/s", "spread"]
        + [f"x {r.replace('reference, ', 'ref ')}" for r in refs]
        + ["of ceiling", "warm-up window (s)", "graph capture (s)"]
    )
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for name, res in results.items():
        secs = {k: v["window_seconds"] for k, v in res["methods"].items()}
        for method, m in res["methods"].items():
            rate = m["images_per_sec"]
            row = [
                name,
                method,
                str(res["steps_per_window"]),
                f"{rate:,.0f}",
                f"{m['min_images_per_sec']:,.0f}-{m['max_images_per_sec']:,.0f}",
            ]
            row += [f"{paired_ratio(secs[method], secs[r]):.2f}" for r in refs]
            row += [
                f"{paired_ratio(secs[method], secs['ceiling']):.0%}",
                "+".join(f"{s:.1f}" for s in m["warmup_window_seconds"]),
                f"{max(m['capture_seconds']):.2f}" if any(m.get("capture_seconds", [])) else "-",
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def epoch_table(results: dict[str, Any]) -> str:
    lines = [
        f"Full-size epoch through rl.fit (synthetic images; projected {PROJECTED_EPOCHS} epochs = compile/warm-up + "
        f"{PROJECTED_EPOCHS} x (epoch + test evaluation))",
        "",
    ]
    head = [
        "model",
        "images",
        "batch",
        "epoch (s)",
        "img/s",
        "first epoch (s)",
        "compile + warm-up (s)",
        "graph capture (s)",
        "eval (s)",
        f"{PROJECTED_EPOCHS} epochs (s)",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for name, r in results.items():
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{r['images']:,}",
                    str(r["batch_size"]),
                    f"{r['epoch_seconds']:.3f}",
                    f"{r['images_per_sec']:,.0f}",
                    f"{r['first_epoch_seconds']:.2f}",
                    f"{r['compile_and_warmup_seconds']:.2f}",
                    f"{r['capture_seconds']:.2f}" if r.get("capture_seconds") else "-",
                    f"{r['eval_seconds']:.3f}",
                    f"{r[f'projected_{PROJECTED_EPOCHS}_epochs_seconds']:.1f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def accuracy_text(r: dict[str, Any]) -> str:
    lines = [
        f"Time to accuracy (Lite, CPU, {r['threads']} threads, {r['train_images']:,} training / "
        f"{r['test_images']:,} test images, {r['data']['root']})",
        "",
    ]
    lines += [
        f"- seed recipe: {r['seed_final_test_acc']:.2%} test accuracy after {r['epochs']} epochs, "
        f"{r['seed_train_seconds']:.0f} s of training (median epoch {r['median_epoch_seconds']['seed']:.2f} s)",
        f"- modern recipe: {r['modern_final_test_acc']:.2%} after {r['epochs']} epochs "
        f"(median epoch {r['median_epoch_seconds']['modern']:.2f} s)",
    ]
    if r["modern_epochs_to_target"] is None:
        lines.append(f"- modern recipe never reached {r['seed_final_test_acc']:.2%} within {r['epochs']} epochs")
    else:
        lines.append(
            f"- modern recipe reaches {r['seed_final_test_acc']:.2%} after {r['modern_epochs_to_target']} epochs "
            f"({r['speedup_epochs']:.1f}x fewer), {r['modern_train_seconds_to_target']:.0f} s of training "
            f"({r['speedup_seconds']:.1f}x less time; from median epochs: "
            f"{r['modern_train_seconds_to_target_median_based']:.0f} s vs "
            f"{r['seed_train_seconds_median_based']:.0f} s, "
            f"{r['speedup_seconds_median_based']:.1f}x)"
        )
    if r["disturbed_by_other_load"]:
        lines.append(
            "- warning: some epochs ran far slower than the run's median (other processes competed for the "
            "CPU): the seconds from median epochs are the better estimate"
        )
    return "\n".join(lines)


def options_text(r: dict[str, Any]) -> str:
    v = r["variants"]
    emul = " (emulated on this CPU, to reproduce the GPU's numerics)" if r["bf16_emulated_on_this_device"] else ""
    lines = [
        f"Accuracy with and without the speed options ({r['device']}, {r['train_images']:,} training / "
        f"{r['test_images']:,} test images, {r['data']['root']}; modern recipe, {r['epochs']} epochs, "
        f"seeds {', '.join(map(str, r['seeds']))}; final test accuracy, no TTA)",
        "",
        f"- plain: batch {v['plain']['batch_size']}, lr {v['plain']['lr']}, fp32, NCHW, no compile, no CUDA graph",
        f"- speed: batch {v['speed']['batch_size']}, lr {v['speed']['lr']}, bf16 autocast{emul}, channels_last, "
        f"compile {'on' if v['speed']['compile'] else 'off'}, "
        f"CUDA graph {'on' if v['speed'].get('cuda_graph') else 'off'}"
        + "".join(
            f", {k} {x}"
            for k, x in v["speed"].items()
            if k not in ("batch_size", "lr", "bf16", "channels_last", "compile", "cuda_graph")
        ),
        "",
    ]
    head = [
        "model",
        "plain: mean (std)",
        "speed: mean (std)",
        "speed - plain",
        "2 x SE",
        "within noise",
        "per seed (plain / speed)",
        "training s, median (plain / speed)",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for name, m in r["models"].items():
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{m['plain']['mean']:.2%} ({m['plain']['std']:.2%})",
                    f"{m['speed']['mean']:.2%} ({m['speed']['std']:.2%})",
                    f"{m['difference']:+.2%}",
                    f"{2 * m['difference_se']:.2%}",
                    "yes" if m["within_noise"] else "no",
                    " / ".join(", ".join(f"{a:.1%}" for a in m[k]["test_acc"]) for k in ("plain", "speed")),
                    " / ".join(f"{statistics.median(m[k]['train_seconds']):.0f}" for k in ("plain", "speed")),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def check_targets(device: torch.device, report: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []

    def check(name: str, target: str, value: Any, ok: bool) -> None:
        checks.append({"model": name, "target": f"{name}: {target}", "value": value, "ok": bool(ok)})

    for name, res in report.get("throughput", {}).items():
        ratios = res["ratios"]
        if device.type == "cpu" and name in CPU_MIN_SPEEDUP:
            r = ratios["pipeline_over_best_reference"]
            check(
                name,
                f"pipeline >= {CPU_MIN_SPEEDUP[name]}x the best reference loop (CPU)",
                round(r, 3),
                r >= CPU_MIN_SPEEDUP[name],
            )
        r = ratios.get("pipeline_over_reference_num_workers8")
        if device.type == "cuda" and r is not None:
            check(
                name,
                f"pipeline >= {GPU_MIN_SPEEDUP_OVER_8_WORKERS}x the 8-worker reference loop (GPU)",
                round(r, 3),
                r >= GPU_MIN_SPEEDUP_OVER_8_WORKERS,
            )
        r = ratios["pipeline_over_ceiling"]
        check(
            name,
            f"pipeline >= {MIN_FRACTION_OF_CEILING:.0%} of the fixed-batch ceiling ({device.type})",
            round(r, 3),
            r >= MIN_FRACTION_OF_CEILING,
        )
    gpu_batch = rl.RECIPES["modern"]["batch_size"]
    for name, res in report.get("full_epoch", {}).items():
        if device.type != "cuda" or res["images"] != FULL_EPOCH_IMAGES or res["batch_size"] != gpu_batch:
            continue
        if name in GPU_MAX_EPOCH_SECONDS:
            s = res["epoch_seconds"]
            check(
                name,
                f"<= {GPU_MAX_EPOCH_SECONDS[name]} s per 50,000-image epoch (GPU)",
                round(s, 4),
                s <= GPU_MAX_EPOCH_SECONDS[name],
            )
        if name in GPU_MAX_RUN_SECONDS:
            s = res[f"projected_{PROJECTED_EPOCHS}_epochs_seconds"]
            check(
                name,
                f"<= {GPU_MAX_RUN_SECONDS[name]} s for {PROJECTED_EPOCHS} epochs with warm-up and evaluation (GPU)",
                round(s, 2),
                s <= GPU_MAX_RUN_SECONDS[name],
            )
    for name, m in report.get("speed_options", {}).get("models", {}).items():
        check(
            name,
            f"modern recipe with the speed options within noise of without them ({device.type}, mini set)",
            f"{m['difference']:+.4f} (2 x SE {2 * m['difference_se']:.4f})",
            m["within_noise"],
        )
    return checks


def profile_step(name: str, cfg: rl.TrainConfig, device: torch.device, steps: int = 5) -> str:
    """Top ops by self CUDA time over `steps` training steps as fit takes them (graphed where fit's
    would be; the ceiling's fixed batch), after as many untimed ones: printed where a GPU target is missed."""
    from torch.profiler import ProfilerActivity, profile

    ceiling = ceiling_method(rl.build_model(name, seed=0), synthetic_cifar(cfg.batch_size, 1), cfg, device, steps)
    ceiling.window()  # untimed: warm-up and graph capture
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        ceiling.window()
    return prof.key_averages().table(sort_by="self_device_time_total", row_limit=10)


def write_outputs(report: dict[str, Any], markdown: str, out: Path) -> None:
    safeio.write_json(report, out)
    safeio.atomic_write(out.with_suffix(".md"), "w", lambda f: f.write(markdown + "\n"))


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_bench_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    # fit keeps freed memory in its process on the CPU (rl.keep_freed_memory, glibc only), a
    # process-wide setting: applied here before anything runs, so that the pipeline and the
    # ceiling run alike from the first window; the reference loops then run in processes
    # of their own, with the default allocator (see `throughput`).
    allocator_tuned = device.type == "cpu" and rl.keep_freed_memory()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"error: unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if args.scaling_worker:
        return scaling_worker(args, device, models[0])
    default_sections = "throughput,accuracy,scaling" if device.type == "cpu" else "throughput,epoch,options,scaling"
    sections = [s.strip() for s in (args.sections or default_sections).split(",") if s.strip()]
    if set(sections) - {"throughput", "epoch", "accuracy", "options", "scaling"}:
        raise SystemExit(
            f"error: --sections {args.sections!r}: choose from throughput, epoch, accuracy, options, scaling"
        )
    options_models = [m.strip() for m in args.options_models.split(",") if m.strip()]
    if set(options_models) - set(MODELS):
        raise SystemExit(f"error: --options-models {args.options_models!r}: choose from {', '.join(MODELS)}")
    if args.options_seeds < 1:
        raise SystemExit("error: --options-seeds must be at least 1")
    workers = tuple(int(w) for w in args.workers.split(",")) if args.workers else DEFAULT_WORKERS[device.type]
    overrides = parse_overrides(args.set)
    options_overrides = parse_overrides(args.options_set)
    compile_on = compile_wanted(args.compile, device)
    state = {"compile": compile_on}  # turned off if torch.compile fails on this machine
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark

    def pipeline_config(name: str) -> rl.TrainConfig:
        kw = {"cuda_graph": args.cuda_graph == "on", **overrides, "compile": state["compile"], "seed": 0}
        if args.batch_size:
            kw["batch_size"] = args.batch_size
        return config_for("modern", name, device, **kw)

    batch_size = pipeline_config(models[0]).batch_size
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"latest-{device.type}.json"
    report: dict[str, Any] = {
        "benchmark": "bench/bench.py",
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.executable).name, "bench/bench.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        **environment(device, threads),
        "settings": {
            "device": str(device),
            "models": models,
            "sections": sections,
            "batch_size": batch_size,
            "windows": args.windows,
            "warmup_rounds": args.warmup,
            "reference_num_workers": list(workers),
            "compile": compile_on,
            "cuda_graph": args.cuda_graph == "on",  # used on CUDA without compile (see resnet_tools.cudagraph)
            "cudnn_benchmark": bool(device.type == "cuda" and args.cudnn_benchmark),
            "reference_in_own_process": allocator_tuned,  # True where fit's allocator settings apply (see fairness)
            "config_overrides": overrides,
            "fairness": fairness_note(device, threads, workers, allocator_tuned),
            "throughput_data": (
                "synthetic uniform uint8 images and labels (pixel values do not change any step's cost)"
            ),
            "pipeline_config": {name: dataclasses.asdict(pipeline_config(name)) for name in models},
        },
    }
    t_start = time.perf_counter()
    print(
        f"bench: {report['hardware']['device']}, torch {torch.__version__}, batch {batch_size}, "
        f"sections {', '.join(sections)}",
        flush=True,
    )
    print(f"bench: {report['settings']['fairness']}", flush=True)
    busy = report["hardware"]["cpu_busy_before_start"]
    if device.type == "cpu" and busy is not None and busy > 0.2:
        print(
            f"bench: warning: the CPU was {busy:.0%} busy with other processes just before the start: "
            "they compete with the benchmark, so its numbers are noisy",
            flush=True,
        )
    markdown: list[str] = [""]  # the heading, written at the end (compile may be turned off)

    # One model per architecture for the epoch and throughput sections: with compile on,
    # it is compiled once (in the epoch section when that runs, so its first epoch shows
    # the compile time), and the throughput section's warm-up round only re-checks guards.
    shared = {name: rl.build_model(name, seed=0) for name in models}

    def measure(section: str, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """run(); if torch.compile fails on this machine, report that once and measure
        again without it (the JSON records the error), so one command always finishes."""
        try:
            return run()
        except Exception as e:  # dynamo/inductor failures come in many types
            if not state["compile"]:
                raise
            msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            print(
                f"bench: torch.compile failed in the {section} section ({name}): {msg}; continuing with compile off",
                flush=True,
            )
            state["compile"] = False
            report["settings"].update(
                compile=False,
                compile_error=msg,
                pipeline_config={n: dataclasses.asdict(pipeline_config(n)) for n in models},
            )
            torch._dynamo.reset()
            shared[name] = rl.build_model(name, seed=0)
            return run()

    if "epoch" in sections:  # default on CUDA only; on request elsewhere (slow on a CPU)
        report["full_epoch"] = {}
        for name in models:
            print(
                f"bench: full-size epoch, {name}: {args.epoch_runs} epochs of {args.epoch_images:,} images ...",
                flush=True,
            )
            report["full_epoch"][name] = measure(
                "epoch", name, lambda: full_epoch(shared[name], device, args, pipeline_config(name))
            )
            write_outputs(report, "\n\n".join(markdown), out)
        markdown.append(epoch_table(report["full_epoch"]))
        print("\n" + markdown[-1] + "\n", flush=True)

    if "throughput" in sections:
        report["throughput"] = {}
        for name in models:
            steps = args.steps or DEFAULT_STEPS[device.type][name]
            print(
                f"bench: throughput, {name}: {args.warmup} warm-up + {args.windows} timed rounds of {steps} steps ...",
                flush=True,
            )
            report["throughput"][name] = measure(
                "throughput",
                name,
                lambda: throughput(
                    name,
                    shared[name],
                    device,
                    args,
                    pipeline_config(name),
                    steps,
                    workers,
                    reference_processes=allocator_tuned,
                ),
            )
            write_outputs(report, "\n\n".join(markdown), out)
        markdown.append(throughput_table(device, report["throughput"], batch_size))
        print("\n" + markdown[-1] + "\n", flush=True)

    data_dir = Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR
    real: list[rl.CIFAR10] = []  # loaded once, for the accuracy and options sections

    def real_data(section: str, key: str) -> rl.CIFAR10 | None:
        if not (data_dir / cifarfiles.CIFAR10_FOLDER).is_dir():
            print(f"bench: {section} section skipped: no CIFAR-10 folder at {data_dir} (give --data-dir)", flush=True)
            report[key] = {"skipped": f"no CIFAR-10 folder at {data_dir}"}
            return None
        if not real:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a subset's md5 warning; `official` is recorded
                real.append(rl.load_cifar10(data_dir, download=False))
        return real[0]

    if "accuracy" in sections:
        if device.type != "cpu":
            print("bench: accuracy section skipped: it is defined on the CPU (run it with --device cpu)", flush=True)
        elif (data := real_data("accuracy", "time_to_accuracy")) is not None:
            report["time_to_accuracy"] = time_to_accuracy(data, args.accuracy_epochs, threads)
            markdown.append(accuracy_text(report["time_to_accuracy"]))
            print("\n" + markdown[-1] + "\n", flush=True)

    if "options" in sections and (data := real_data("options", "speed_options")) is not None:
        print(
            f"bench: options: {', '.join(options_models)}, {args.options_seeds} seeds x 2 variants x "
            f"{args.accuracy_epochs} epochs ...",
            flush=True,
        )
        report["speed_options"] = measure(
            "options",
            options_models[0],
            lambda: speed_options_accuracy(
                data,
                options_models,
                device,
                args.accuracy_epochs,
                args.options_seeds,
                state["compile"],
                options_overrides,
                args.cuda_graph == "on",
            ),
        )
        markdown.append(options_text(report["speed_options"]))
        print("\n" + markdown[-1] + "\n", flush=True)

    if "scaling" in sections:
        report["scaling"] = scaling(args, device, models[0], batch_size)
        markdown.append(scaling_text(report["scaling"]))
        print("\n" + markdown[-1] + "\n", flush=True)

    markdown[0] = (
        f"Benchmark on {report['hardware']['device']} ({report['hardware']['cpu']}), torch {torch.__version__}, "
        f"{report['started']}; compile {'on' if state['compile'] else 'off'}."
    )
    report["targets"] = check_targets(device, report)
    missed = sorted({c["model"] for c in report["targets"] if not c["ok"]} & set(models))
    if device.type == "cuda" and missed:  # where the time goes, for the model(s) that missed a target
        report["profiles"] = {}
        for name in missed:
            table = profile_step(name, pipeline_config(name), device)
            report["profiles"][name] = table
            markdown.append(
                f"Profile of {name}'s training step (a target was missed): top ops by self CUDA time\n\n"
                f"```\n{table}\n```"
            )
            print(markdown[-1], flush=True)
    report["hardware"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["hardware"]["cpu_busy_after_end"] = cpu_busy_fraction()
    report["total_seconds"] = time.perf_counter() - t_start
    if report["targets"]:
        markdown.append(
            "Targets\n\n"
            + "\n".join(f"- {'PASS' if c['ok'] else 'MISS'}: {c['target']}: {c['value']}" for c in report["targets"])
        )
        print(markdown[-1], flush=True)
    write_outputs(report, "\n\n".join(markdown), out)
    print(f"\nbench: {report['total_seconds']:.0f} s; wrote {out} and {out.with_suffix('.md')}", flush=True)
    return 1 if args.strict and not all(c["ok"] for c in report["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
