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

This file holds the options and `main`; beside it, methods.py (the ways of training and the
throughput section's rounds), sections.py (each section, and the registry `SECTIONS`) and
reporting.py (environment, tables, targets).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

if str(Path(__file__).resolve().parent) not in sys.path:  # imported by path (tests): its modules beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))

# methods goes first: it puts the repository on sys.path for resnet_lib and resnet_tools.
from methods import FULL_EPOCH_IMAGES, ROOT, SAME_ALLOCATOR_REFERENCE, compile_wanted  # noqa: E402
import resnet_lib as rl  # noqa: E402
from reporting import check_targets, cpu_busy_fraction, environment  # noqa: E402
from resnet_tools.cli import field_parser  # noqa: E402
from resnet_tools.devices import keep_freed_memory, resolve_device  # noqa: E402
from resnet_tools.errors import ConfigError  # noqa: E402
from sections import DEFAULT_DATA_DIR, SECTIONS, Run, pipeline_config, profile_step, run_order  # noqa: E402
from sections import scaling_worker  # noqa: E402

MODELS = ("lite", "improved")
# Reference-loop workers: on CUDA what most repositories ship (2) and a generous 8; on the
# CPU see `fairness_note`.
DEFAULT_WORKERS = {"cpu": (0, 1), "cuda": (2, 8)}


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_measurement_options(p)
    add_section_options(p)
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


def add_measurement_options(p: argparse.ArgumentParser) -> None:
    """What is measured and how: device, models, sections, batch, windows, workers, compile, graph, --set."""
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


def add_section_options(p: argparse.ArgumentParser) -> None:
    """The epoch, accuracy and options sections' sizes, the output, --quick and --strict."""
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


def resolve_bench_device(name: str) -> torch.device:
    """resolve_device, limited to what the benchmark measures (cpu, cuda)."""
    try:
        device = resolve_device(name)
    except ConfigError as e:
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
                " fit keeps freed memory in its process (glibc malloc thresholds, keep_freed_memory); each "
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
# Main: check the arguments, start the report, run the chosen sections, finish the report
# ---------------------------------------------------------------------------------------
def chosen(args: argparse.Namespace, device: torch.device) -> tuple[list[str], list[str]]:
    """(--sections, --options-models) as lists, checked, with --options-seeds; SystemExit names a bad one."""
    default_sections = "throughput,accuracy,scaling" if device.type == "cpu" else "throughput,epoch,options,scaling"
    sections = [s.strip() for s in (args.sections or default_sections).split(",") if s.strip()]
    if set(sections) - set(SECTIONS):
        raise SystemExit(f"error: --sections {args.sections!r}: choose from {', '.join(SECTIONS)}")
    options_models = [m.strip() for m in args.options_models.split(",") if m.strip()]
    if set(options_models) - set(MODELS):
        raise SystemExit(f"error: --options-models {args.options_models!r}: choose from {', '.join(MODELS)}")
    if args.options_seeds < 1:
        raise SystemExit("error: --options-seeds must be at least 1")
    return sections, options_models


def start_run(
    args: argparse.Namespace, argv: list[str] | None, device: torch.device, models: list[str], allocator_tuned: bool
) -> Run:
    """The run's settings, checked, and its report's header (hardware, software, settings)."""
    sections, options_models = chosen(args, device)
    workers = tuple(int(w) for w in args.workers.split(",")) if args.workers else DEFAULT_WORKERS[device.type]
    run = Run(
        args=args, device=device, models=models, options_models=options_models, threads=torch.get_num_threads(),
        workers=workers, overrides=parse_overrides(args.set), options_overrides=parse_overrides(args.options_set),
        allocator_tuned=allocator_tuned, compile=compile_wanted(args.compile, device),
        out=Path(args.out) if args.out else ROOT / "bench" / "results" / f"latest-{device.type}.json",
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    run.batch_size = pipeline_config(run, models[0]).batch_size
    run.report = {
        "benchmark": "bench/bench.py",
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.executable).name, "bench/bench.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        **environment(device, run.threads),
        "settings": settings(run, sections),
    }
    run.started = time.perf_counter()
    return run


def settings(run: Run, sections: list[str]) -> dict[str, Any]:
    """The report's `settings`: what was measured, and how."""
    args, device = run.args, run.device
    return {
        "device": str(device),
        "models": run.models,
        "sections": sections,
        "batch_size": run.batch_size,
        "windows": args.windows,
        "warmup_rounds": args.warmup,
        "reference_num_workers": list(run.workers),
        "compile": run.compile,
        "cuda_graph": args.cuda_graph == "on",  # used on CUDA without compile (see resnet_tools.cudagraph)
        "cudnn_benchmark": bool(device.type == "cuda" and args.cudnn_benchmark),
        "reference_in_own_process": run.allocator_tuned,  # True where fit's allocator settings apply (see fairness)
        "config_overrides": run.overrides,
        "fairness": fairness_note(device, run.threads, run.workers, run.allocator_tuned),
        "throughput_data": (
            "synthetic uniform uint8 images and labels (pixel values do not change any step's cost)"
        ),
        "pipeline_config": {name: dataclasses.asdict(pipeline_config(run, name)) for name in run.models},
    }


def announce(run: Run) -> None:
    """The run's first lines: machine, batch, sections, fairness, and a warning on a busy CPU."""
    report = run.report
    print(
        f"bench: {report['hardware']['device']}, torch {torch.__version__}, batch {run.batch_size}, "
        f"sections {', '.join(report['settings']['sections'])}",
        flush=True,
    )
    print(f"bench: {report['settings']['fairness']}", flush=True)
    busy = report["hardware"]["cpu_busy_before_start"]
    if run.device.type == "cpu" and busy is not None and busy > 0.2:
        print(
            f"bench: warning: the CPU was {busy:.0%} busy with other processes just before the start: "
            "they compete with the benchmark, so its numbers are noisy",
            flush=True,
        )


def finish(run: Run) -> int:
    """The heading, the targets (with a profile of each model that missed one on CUDA), the end
    state of the machine; writes the report. 1 under --strict when a target is missed, else 0."""
    report = run.report
    run.markdown[0] = (
        f"Benchmark on {report['hardware']['device']} ({report['hardware']['cpu']}), torch {torch.__version__}, "
        f"{report['started']}; compile {'on' if run.compile else 'off'}."
    )
    report["targets"] = check_targets(run.device, report)
    missed = sorted({c["model"] for c in report["targets"] if not c["ok"]} & set(run.models))
    if run.device.type == "cuda" and missed:  # where the time goes, for the model(s) that missed a target
        report["profiles"] = {}
        for name in missed:
            table = profile_step(name, pipeline_config(run, name), run.device)
            report["profiles"][name] = table
            run.markdown.append(
                f"Profile of {name}'s training step (a target was missed): top ops by self CUDA time\n\n"
                f"```\n{table}\n```"
            )
            print(run.markdown[-1], flush=True)
    report["hardware"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["hardware"]["cpu_busy_after_end"] = cpu_busy_fraction()
    report["total_seconds"] = time.perf_counter() - run.started
    if report["targets"]:
        run.markdown.append(
            "Targets\n\n"
            + "\n".join(f"- {'PASS' if c['ok'] else 'MISS'}: {c['target']}: {c['value']}" for c in report["targets"])
        )
        print(run.markdown[-1], flush=True)
    run.save()
    print(f"\nbench: {report['total_seconds']:.0f} s; wrote {run.out} and {run.out.with_suffix('.md')}", flush=True)
    return 1 if run.args.strict and not all(c["ok"] for c in report["targets"]) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_bench_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # fit keeps freed memory in its process on the CPU (keep_freed_memory, glibc only), a
    # process-wide setting: applied here before anything runs, so that the pipeline and the
    # ceiling run alike from the first window; the reference loops then run in processes
    # of their own, with the default allocator (see `throughput`).
    allocator_tuned = device.type == "cpu" and keep_freed_memory()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"error: unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if args.scaling_worker:
        return scaling_worker(args, device, models[0])
    run = start_run(args, argv, device, models, allocator_tuned)
    announce(run)
    run.shared = {name: rl.build_model(name, seed=0) for name in models}
    for name in run_order(run.report["settings"]["sections"]):
        SECTIONS[name](run)
    return finish(run)


if __name__ == "__main__":
    sys.exit(main())
