"""The benchmark's sections (bench/bench.py): what each measures, and the section functions that
run them into the report, in a registry (`SECTIONS`, name -> function of the `Run`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

import resnet_lib as rl
from methods import FULL_EPOCH_IMAGES, FULL_TEST_IMAGES, PROJECTED_EPOCHS, ROOT, built_steps, capture_seconds
from methods import ceiling_method, compile_wanted, config_for, synthetic_cifar, throughput, timed
from reporting import accuracy_text, epoch_table, options_text, scaling_text, throughput_table, write_outputs
from resnet_tools import cifarfiles, job, safeio
from resnet_tools.dataset import CIFAR10
from resnet_tools.devices import cpu_native_bf16
from resnet_tools.evaluation import evaluate

BENCH = Path(__file__).resolve().with_name("bench.py")  # what torchrun starts for each rank of `scaling`
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "cifar10-mini"
# Default timed steps per window: same for every method of a model. On the CPU, Improved
# (about 20x the FLOPs of Lite) gets fewer steps so that `make bench` stays short.
DEFAULT_STEPS = {"cpu": {"lite": 24, "improved": 3}, "cuda": {"lite": 50, "improved": 50}}


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
        evals.append(timed(device, lambda: evaluate(model, data, "test", stats=data.stats, bf16=cfg.bf16)))
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


def time_to_accuracy(data: CIFAR10, epochs: int, threads: int) -> dict[str, Any]:
    """Lite on the CPU: the report recipe's (the seed's) test accuracy after `epochs` epochs, and
    the first epoch at which the modern recipe (same epochs, its own schedule) reaches it. The
    result's seed_* fields name the seed report's recipe, as in the files measured before the rename."""
    runs = {}
    for recipe in ("report", "modern"):
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
    target = runs["report"]["history"]["test_acc"][-1]
    modern = runs["modern"]["history"]
    reached = next((i for i, a in enumerate(modern["test_acc"]) if a >= target), None)
    seed_s, modern_s = runs["report"]["history"]["seconds"], modern["seconds"]
    k = None if reached is None else reached + 1
    # Epoch times are also given as epochs x the run's median epoch: a competing process
    # can slow single epochs many-fold (seen here: 2.2 s epochs taking 40 s), and the
    # median ignores such epochs. `disturbed` says when the sums are inflated that way.
    med = {"seed": statistics.median(seed_s), "modern": statistics.median(modern_s)}
    disturbed = any(sum(t) > 1.25 * len(t) * m for t, m in ((seed_s, med["seed"]), (modern_s, med["modern"])))
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


def speed_variants(
    compile_on: bool, speed_overrides: dict[str, Any] | None, cuda_graph_on: bool
) -> dict[str, dict[str, Any]]:
    """The options section's two ways of training the modern recipe, at its batch size and lr:
    `plain` (fp32, NCHW, eager step) and `speed` (bf16, channels_last, compile or the CUDA graph)."""
    modern = rl.RECIPES["modern"]
    return {
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


def speed_options_accuracy(
    data: CIFAR10,
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
    variants = speed_variants(compile_on, speed_overrides, cuda_graph_on)
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
        per = {
            variant: train_variant(data, name, device, epochs, seeds, variant, kw) for variant, kw in variants.items()
        }
        diff = per["speed"]["mean"] - per["plain"]["mean"]
        se = math.sqrt((per["speed"]["std"] ** 2 + per["plain"]["std"] ** 2) / seeds) if seeds > 1 else math.nan
        per["difference"] = diff
        per["difference_se"] = se
        per["within_noise"] = bool(seeds > 1 and abs(diff) <= 2 * se)
        result["models"][name] = per
    return result


def train_variant(
    data: CIFAR10, name: str, device: torch.device, epochs: int, seeds: int, variant: str, kw: dict[str, Any]
) -> dict[str, Any]:
    """`seeds` runs of the modern recipe with `kw`: their final test accuracies and training seconds."""
    accs, secs = [], []
    for seed in range(seeds):
        cfg = config_for("modern", name, device, epochs=epochs, seed=seed, **kw)
        print(
            f"  options: {name}/{variant} seed {seed}: batch {cfg.batch_size}, lr {cfg.lr}, {epochs} epochs ...",
            flush=True,
        )
        history = rl.fit(rl.build_model(name, seed=seed), data, cfg, progress=sys.stderr.isatty())
        accs.append(history["test_acc"][-1])
        secs.append(sum(history["seconds"]))
    return {
        "batch_size": kw["batch_size"],
        "lr": kw["lr"],
        "test_acc": accs,
        "train_seconds": secs,
        "mean": statistics.fmean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else math.nan,
    }


# ---------------------------------------------------------------------------------------
# Scaling over GPUs (DDP) and the profile of a step
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
                str(BENCH),
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


def profile_step(name: str, cfg: rl.TrainConfig, device: torch.device, steps: int = 5) -> str:
    """Top ops by self CUDA time over `steps` training steps as fit takes them (graphed where fit's
    would be; the ceiling's fixed batch), after as many untimed ones: printed where a GPU target is missed."""
    from torch.profiler import ProfilerActivity, profile

    ceiling = ceiling_method(rl.build_model(name, seed=0), synthetic_cifar(cfg.batch_size, 1), cfg, device, steps)
    ceiling.window()  # untimed: warm-up and graph capture
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        ceiling.window()
    return prof.key_averages().table(sort_by="self_device_time_total", row_limit=10)


# ---------------------------------------------------------------------------------------
# The sections of a run, in a registry
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """One benchmark run as its sections see it: the arguments and what main derived from them
    (once), the report and Markdown so far, and whether torch.compile is still on."""

    args: argparse.Namespace
    device: torch.device
    models: list[str]
    options_models: list[str]
    threads: int
    workers: tuple[int, ...]  # the reference loop's DataLoader num_workers
    overrides: dict[str, Any]  # --set, for the pipeline and the ceiling
    options_overrides: dict[str, Any]  # --options-set, for the options section's speed variant
    allocator_tuned: bool  # fit's allocator settings apply in this process: references run in their own
    out: Path
    compile: bool  # turned off, once, where torch.compile fails on this machine (`measure`)
    batch_size: int = 0
    started: float = 0.0  # time.perf_counter() at the report's start
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
    markdown: list[str] = dataclasses.field(default_factory=lambda: [""])  # [0]: the heading, written at the end
    # One model per architecture for the epoch and throughput sections: with compile on,
    # it is compiled once (in the epoch section when that runs, so its first epoch shows
    # the compile time), and the throughput section's warm-up round only re-checks guards.
    shared: dict[str, nn.Module] = dataclasses.field(default_factory=dict)
    real: CIFAR10 | None = None  # the CIFAR-10 folder's images, loaded once (accuracy and options)

    def save(self) -> None:
        write_outputs(self.report, "\n\n".join(self.markdown), self.out)

    def add_markdown(self, text: str) -> None:
        self.markdown.append(text)
        print("\n" + text + "\n", flush=True)


def pipeline_config(run: Run, name: str) -> rl.TrainConfig:
    """The modern recipe for `name` as the pipeline and the ceiling train it in this run."""
    kw = {"cuda_graph": run.args.cuda_graph == "on", **run.overrides, "compile": run.compile, "seed": 0}
    if run.args.batch_size:
        kw["batch_size"] = run.args.batch_size
    return config_for("modern", name, run.device, **kw)


def measure(run: Run, section: str, name: str, fn: Callable[[Run, str], dict[str, Any]]) -> dict[str, Any]:
    """fn(run, name); if torch.compile fails on this machine, report that once and measure
    again without it (the JSON records the error), so one command always finishes."""
    try:
        return fn(run, name)
    except Exception as e:  # dynamo/inductor failures come in many types
        if not run.compile:
            raise
        msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
        print(
            f"bench: torch.compile failed in the {section} section ({name}): {msg}; continuing with compile off",
            flush=True,
        )
        run.compile = False
        run.report["settings"].update(
            compile=False,
            compile_error=msg,
            pipeline_config={n: dataclasses.asdict(pipeline_config(run, n)) for n in run.models},
        )
        torch._dynamo.reset()
        run.shared[name] = rl.build_model(name, seed=0)
        return fn(run, name)


def real_data(run: Run, section: str, key: str) -> CIFAR10 | None:
    """The CIFAR-10 folder's images (loaded once), or None, with the section marked skipped in the report."""
    data_dir = Path(run.args.data_dir) if run.args.data_dir else DEFAULT_DATA_DIR
    if not (data_dir / cifarfiles.CIFAR10_FOLDER).is_dir():
        print(f"bench: {section} section skipped: no CIFAR-10 folder at {data_dir} (give --data-dir)", flush=True)
        run.report[key] = {"skipped": f"no CIFAR-10 folder at {data_dir}"}
        return None
    if run.real is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a subset's md5 warning; `official` is recorded
            run.real = rl.load_cifar10(data_dir, download=False)
    return run.real


def _epoch_of(run: Run, name: str) -> dict[str, Any]:
    return full_epoch(run.shared[name], run.device, run.args, pipeline_config(run, name))


def epoch_section(run: Run) -> None:
    """A full-size epoch through fit per model (default on CUDA only; on request elsewhere, slow on a CPU)."""
    run.report["full_epoch"] = {}
    for name in run.models:
        print(
            f"bench: full-size epoch, {name}: {run.args.epoch_runs} epochs of {run.args.epoch_images:,} images ...",
            flush=True,
        )
        run.report["full_epoch"][name] = measure(run, "epoch", name, _epoch_of)
        run.save()
    run.add_markdown(epoch_table(run.report["full_epoch"]))


def _steps(run: Run, name: str) -> int:
    return run.args.steps or DEFAULT_STEPS[run.device.type][name]


def _throughput_of(run: Run, name: str) -> dict[str, Any]:
    cfg = pipeline_config(run, name)
    return throughput(
        name, run.shared[name], run.device, run.args, cfg, _steps(run, name), run.workers,
        reference_processes=run.allocator_tuned,
    )


def throughput_section(run: Run) -> None:
    """The reference loop, the pipeline and the ceiling side by side, per model."""
    run.report["throughput"] = {}
    for name in run.models:
        print(
            f"bench: throughput, {name}: {run.args.warmup} warm-up + {run.args.windows} timed rounds of "
            f"{_steps(run, name)} steps ...",
            flush=True,
        )
        run.report["throughput"][name] = measure(run, "throughput", name, _throughput_of)
        run.save()
    run.add_markdown(throughput_table(run.device, run.report["throughput"], run.batch_size))


def accuracy_section(run: Run) -> None:
    """Time to accuracy: Lite's modern recipe against the seed recipe on the CPU (real images)."""
    if run.device.type != "cpu":
        print("bench: accuracy section skipped: it is defined on the CPU (run it with --device cpu)", flush=True)
        return
    data = real_data(run, "accuracy", "time_to_accuracy")
    if data is not None:
        run.report["time_to_accuracy"] = time_to_accuracy(data, run.args.accuracy_epochs, run.threads)
        run.add_markdown(accuracy_text(run.report["time_to_accuracy"]))


def _options_of(run: Run, name: str) -> dict[str, Any]:
    a = run.args
    return speed_options_accuracy(
        run.real, run.options_models, run.device, a.accuracy_epochs, a.options_seeds, run.compile,
        run.options_overrides, a.cuda_graph == "on",
    )


def options_section(run: Run) -> None:
    """The modern recipe with and without the speed options, several seeds each (real images)."""
    if real_data(run, "options", "speed_options") is None:
        return
    print(
        f"bench: options: {', '.join(run.options_models)}, {run.args.options_seeds} seeds x 2 variants x "
        f"{run.args.accuracy_epochs} epochs ...",
        flush=True,
    )
    run.report["speed_options"] = measure(run, "options", run.options_models[0], _options_of)
    run.add_markdown(options_text(run.report["speed_options"]))


def scaling_section(run: Run) -> None:
    """fit with DDP on 1 and on all GPUs (skipped with fewer than two)."""
    run.report["scaling"] = scaling(run.args, run.device, run.models[0], run.batch_size)
    run.add_markdown(scaling_text(run.report["scaling"]))


# --sections NAME -> its function. They run in this order, but `epoch` first: with compile on,
# the shared model is compiled in its first epoch, which then shows the compile time.
SECTIONS: dict[str, Callable[[Run], None]] = {
    "throughput": throughput_section,
    "epoch": epoch_section,
    "accuracy": accuracy_section,
    "options": options_section,
    "scaling": scaling_section,
}


def run_order(names: list[str]) -> list[str]:
    """The chosen sections once each, in the order they run."""
    return sorted(set(names), key=lambda s: (s != "epoch", list(SECTIONS).index(s)))
