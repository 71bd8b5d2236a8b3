"""The benchmark's ways of training (bench/bench.py): synthetic data, the reference loop, fit's
pipeline and the fixed-batch ceiling, each a `Method` timed one window at a time, and the
throughput section that interleaves them. Every step is fit's own (`make_step`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as bench/*.py from any folder
    sys.path.insert(0, str(ROOT))

import resnet_lib as rl  # noqa: E402
from resnet_tools.augment import augment, normalize  # noqa: E402
from resnet_tools.compile_step import make_step  # noqa: E402
from resnet_tools.dataset import CIFAR10  # noqa: E402
from resnet_tools.optim import make_optimizer  # noqa: E402

FULL_EPOCH_IMAGES = 50_000  # the CIFAR-10 training set
FULL_TEST_IMAGES = 10_000  # the CIFAR-10 test set (evaluated after every epoch by fit)
PROJECTED_EPOCHS = 40  # the seed report's training length


def compile_wanted(option: str, device: torch.device) -> bool:
    """--compile on|off|auto; auto compiles on the CPU only (on CUDA fit replays a CUDA graph,
    which compile excludes, and compiling costs about 30 s up front there)."""
    return option == "on" or (option == "auto" and device.type != "cuda")


def config_for(recipe: str, model: str, device: torch.device, **overrides: Any) -> rl.TrainConfig:
    """A recipe's TrainConfig for `model` on `device`, training on all given images
    (no validation split: the benchmark's training sets are sized to whole windows)."""
    fields = {f.name for f in dataclasses.fields(rl.TrainConfig)}
    extra = {"val_size": 0} if "val_size" in fields else {}
    return rl.TrainConfig.from_recipe(recipe, model=model, device=str(device), **extra, **overrides)


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
def synthetic_cifar(n_train: int, n_test: int, seed: int = 0) -> CIFAR10:
    """Uniform random uint8 images and labels in CIFAR-10's layout. Pixel values do not
    change the cost of any step (nothing is decoded), so throughput needs no real data."""
    g = torch.Generator().manual_seed(seed)
    return CIFAR10(
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
    data: CIFAR10, batch_size: int, num_workers: int, total_batches: int
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


def bench_step(model: nn.Module, cfg: rl.TrainConfig, device: torch.device) -> Callable[..., Any]:
    """One training step as `rl.fit` takes it, built by fit's own factory (`make_step`: the
    compile call, a CUDA graph where fit would replay one; autocast, loss, optimizer, scheduler),
    without fit's per-step bookkeeping. A graphed step has `capture_seconds`. The benchmark's
    configs say compile on or off, so the run length that decides fit's automatic compile is moot."""
    optimizer = make_optimizer(model, cfg)
    # A LambdaLR like fit's; a constant factor, since the schedule's value costs nothing.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return make_step(model, optimizer, scheduler, cfg, device, cfg.batch_size)


@contextlib.contextmanager
def built_steps() -> Iterator[list[Any]]:
    """The training steps that `rl.fit` builds meanwhile, to read their warm-up + capture time: fit
    calls make_step by resnet_lib's module-level name, so that name is wrapped while this is open."""
    real, steps = rl.make_step, []

    def record(*args: Any, **kwargs: Any) -> Any:
        steps.append(real(*args, **kwargs))
        return steps[-1]

    rl.make_step = record
    try:
        yield steps
    finally:
        rl.make_step = real


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


def pipeline_method(model: nn.Module, data: CIFAR10, cfg: rl.TrainConfig) -> Method:
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
    model: nn.Module, data: CIFAR10, cfg: rl.TrainConfig, device: torch.device, steps: int
) -> Method:
    """The pipeline's model and step on one batch prepared once (augmented, normalized,
    in the pipeline's layout, on the device)."""
    mean, std = (torch.tensor(s, dtype=torch.float32, device=device) for s in data.stats)
    x = data.train_x[: cfg.batch_size].to(device)
    x = augment(x, torch.Generator().manual_seed(0), crop=cfg.crop, flip=cfg.flip)
    x = normalize(x, mean, std, channels_last=cfg.channels_last)
    y = data.train_y[: cfg.batch_size].to(device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    step = bench_step(model, cfg, device)

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
    data: CIFAR10,
    cfg: rl.TrainConfig,
    device: torch.device,
    steps: int,
    num_workers: int,
    total_windows: int,
) -> Method:
    """The reference loop on its own fp32, NCHW, uncompiled copy of the model."""
    ref_cfg = dataclasses.replace(cfg, bf16=False, channels_last=False, compile=False, cuda_graph=False)
    model = rl.build_model(name, seed=0).to(device)
    step = bench_step(model, ref_cfg, device)
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
            run_round(name, methods, r, args.warmup, rounds, steps * cfg.batch_size)
    finally:
        for m in methods:
            m.close()
    return throughput_result(methods, steps, cfg.batch_size)


def run_round(name: str, methods: list[Method], r: int, warmup: int, rounds: int, images: int) -> None:
    """Round `r`: one window of every method, back to back (the first `warmup` rounds untimed)."""
    for m in methods:
        s = m.window()
        (m.warmup_seconds if r < warmup else m.seconds).append(s)
    print(
        f"  {name} round {r + 1}/{rounds}"
        + (" (warm-up)" if r < warmup else "")
        + ": "
        + ", ".join(f"{m.name} {images / (m.warmup_seconds + m.seconds)[-1]:,.0f} img/s" for m in methods),
        flush=True,
    )


def throughput_result(methods: list[Method], steps: int, batch_size: int) -> dict[str, Any]:
    """The throughput section's record of one model: each method's rates and windows, and the ratios."""
    images = steps * batch_size
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
    result["ratios"] = throughput_ratios(result["methods"])
    return result


def throughput_ratios(methods: dict[str, Any]) -> dict[str, Any]:
    """The pipeline against the best reference loop, each reference, the ceiling and (where it ran)
    the same-allocator reference: medians of per-round ratios, and the ratios of the medians."""
    rate = {k: v["images_per_sec"] for k, v in methods.items()}
    refs = {k: v for k, v in rate.items() if k.startswith("reference")}
    best_ref = max(refs, key=refs.get)  # the faster reference by median img/s

    def ratio(a: str, b: str) -> float:
        return paired_ratio(methods[a]["window_seconds"], methods[b]["window_seconds"])

    def key(ref: str) -> str:
        return ref.replace(", ", "_").replace("=", "")

    return {
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


def paired_ratio(seconds_a: list[float], seconds_b: list[float]) -> float:
    """Median over rounds of (img/s of a) / (img/s of b) = seconds of b / seconds of a, for
    windows of equal size timed in the same rounds: load that changes between rounds
    cancels out of each ratio."""
    return statistics.median(b / a for a, b in zip(seconds_a, seconds_b))
