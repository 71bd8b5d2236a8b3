"""The benchmark's report (bench/bench.py): the machine and software it ran on, the Markdown
tables of each section, and the issue's targets checked against the measurements."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

import resnet_lib as rl
from methods import FULL_EPOCH_IMAGES, PROJECTED_EPOCHS, paired_ratio
from resnet_tools import devices, safeio
from resnet_tools.devices import cpu_model, cpu_native_bf16

# Targets from the issue that asked for this benchmark (see bench/README.md).
CPU_MIN_SPEEDUP = {"lite": 1.6, "improved": 1.3}  # pipeline / best reference loop
MIN_FRACTION_OF_CEILING = 0.90
GPU_MAX_EPOCH_SECONDS = {"lite": 0.25, "improved": 0.45}  # one 50,000-image epoch at the modern recipe's batch
GPU_MAX_RUN_SECONDS = {"improved": 25.0}  # 40 epochs, warm-up and the per-epoch evaluation included
GPU_MIN_SPEEDUP_OVER_8_WORKERS = 3.0  # pipeline / the reference loop with num_workers=8 (CUDA)


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
        f"- report recipe (the seed's): {r['seed_final_test_acc']:.2%} test accuracy after {r['epochs']} epochs, "
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


def write_outputs(report: dict[str, Any], markdown: str, out: Path) -> None:
    safeio.write_json(report, out)
    safeio.atomic_write(out.with_suffix(".md"), "w", lambda f: f.write(markdown + "\n"))
