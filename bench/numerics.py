"""Numerics benchmark: fp32 and bf16 autocast, eager and torch.compile, side by side.

For each model, four variants of the `modern` recipe's training (fp32 eager, fp32 compiled,
bf16 eager, bf16 compiled) are timed in one run, two ways each:

  fit epoch  `resnet_lib.fit` itself, one epoch over exactly `steps` batches (its own timer)
  step       the same model and step on one fixed, prepared batch (no data pipeline)

Rounds are interleaved (one window of every method per round, back to back), so machine load
hits every variant alike; ratios are medians over rounds of per-round ratios against fp32
eager. The warm-up round carries torch.compile's cold start, reported apart, and a projection
of a 40-epoch run (warm-up + 40 x 352 steps at the measured step time) shows which variant
is fastest *including* warm-up: the figure `fit`'s CPU default follows (bench/README.md).

    python bench/numerics.py                    # this machine's CPU: make bench-numerics
    python bench/numerics.py --models lite --windows 2 --steps 2   # smoke run

Writes bench/results/numerics-<device>.json and .md. The processor and its bf16 capability
are in the header: bf16 is only fast where the processor has native bf16 instructions.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

# bench/methods.py goes first: it puts the repository on sys.path. The benchmark's ways of training and its
# report's environment and files (bench/reporting.py), shared with bench/bench.py.
from methods import Method, ceiling_method, config_for, paired_ratio, pipeline_method, synthetic_cifar
import resnet_lib as rl  # noqa: E402
from resnet_tools.dataset import CIFAR10  # noqa: E402
from resnet_tools.devices import keep_freed_memory  # noqa: E402
from reporting import environment, write_outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (label, bf16, compile): fp32 eager first, the baseline every ratio is taken against.
VARIANTS = (("fp32 eager", False, False), ("fp32 compiled", False, True),
            ("bf16 eager", True, False), ("bf16 compiled", True, True))
KINDS = ("fit epoch", "step")
# Steps per window on the CPU: Improved costs about 20x Lite (the throughput section's sizes).
DEFAULT_STEPS = {"lite": 24, "improved": 3}
RUN_STEPS = 40 * 352  # 40 epochs of 45,000 training images at batch 128: the record's runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu, where the choice matters)")
    p.add_argument("--models", default="lite,improved", help="comma-separated: lite,improved")
    p.add_argument("--steps", type=int, default=None, help="steps per window (default: lite 24, improved 3)")
    p.add_argument("--windows", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: one per core)")
    p.add_argument("--variants", default=",".join(v[0] for v in VARIANTS),
                   help="comma-separated subset of the variants; fp32 eager (the baseline) is always run")
    p.add_argument("--out", default=None, help="JSON path (default: bench/results/numerics-<device>.json)")
    return p.parse_args(argv)


def chosen_variants(option: str) -> tuple[tuple[str, bool, bool], ...]:
    names = {v.strip() for v in option.split(",") if v.strip()} | {VARIANTS[0][0]}
    unknown = sorted(names - {v[0] for v in VARIANTS})
    if unknown:
        raise SystemExit(f"error: --variants: unknown {unknown}; choose from {', '.join(v[0] for v in VARIANTS)}")
    return tuple(v for v in VARIANTS if v[0] in names)


def variant_methods(name: str, device: torch.device, steps: int, data: CIFAR10,
                    variants: tuple[tuple[str, bool, bool], ...]) -> list[Method]:
    """A fresh model per variant (compiled variants compile their own), serving its fit epoch
    and its step, as the throughput section shares one model between pipeline and ceiling."""
    methods = []
    for label, bf16, compiled in variants:
        # warmup_epochs=0: a one-epoch fit would warn that its warm-up never ends; the lr's value costs nothing
        cfg = config_for("modern", name, device, bf16=bf16, compile=compiled, seed=0, warmup_epochs=0.0)
        model = rl.build_model(name, seed=0)
        fit_epoch = pipeline_method(model, data, cfg)
        step = ceiling_method(model, data, cfg, device, steps)
        fit_epoch.name, step.name = f"{label}, fit epoch", f"{label}, step"
        methods += [fit_epoch, step]
    return methods


def measure(name: str, device: torch.device, steps: int, windows: int,
            variants: tuple[tuple[str, bool, bool], ...]) -> dict[str, Any]:
    data = synthetic_cifar(steps * rl.RECIPES["modern"]["batch_size"], n_test=32)
    methods = variant_methods(name, device, steps, data, variants)
    images = len(data.train_y)
    for r in range(1 + windows):  # round 0: warm-up (compile)
        for m in methods:
            t0 = time.perf_counter()
            s = m.window()
            (m.warmup_seconds if r == 0 else m.seconds).append(time.perf_counter() - t0 if r == 0 else s)
        print(f"  {name} round {r + 1}/{1 + windows}{' (warm-up)' if r == 0 else ''}: "
              + ", ".join(f"{m.name} {images / (m.warmup_seconds + m.seconds)[-1]:,.0f} img/s" for m in methods),
              flush=True)
    return summarize(methods, steps, images, variants)


def summarize(methods: list[Method], steps: int, images: int,
              variants: tuple[tuple[str, bool, bool], ...]) -> dict[str, Any]:
    by_name = {m.name: m for m in methods}
    out: dict[str, Any] = {"steps_per_window": steps, "images_per_window": images, "variants": {}}
    for label, bf16, compiled in variants:
        row: dict[str, Any] = {"bf16": bf16, "compile": compiled}
        for kind in KINDS:
            m, base = by_name[f"{label}, {kind}"], by_name[f"fp32 eager, {kind}"]
            ms = 1000 * statistics.median(m.seconds) / steps
            row[kind] = {
                "ms_per_step": ms,
                "images_per_sec": images / statistics.median(m.seconds),
                "window_seconds": m.seconds,
                "warmup_window_seconds": m.warmup_seconds[0],  # compile's cold start included
                "speedup_over_fp32_eager": paired_ratio(m.seconds, base.seconds),
            }
        # A record run through fit: its first window's excess (compile's cold start: the fit epoch runs
        # first in every round, so it compiles the model its step then shares), plus RUN_STEPS steps.
        fit = row["fit epoch"]
        extra = max(0.0, fit["warmup_window_seconds"] - statistics.median(by_name[f"{label}, fit epoch"].seconds))
        row["warmup_extra_seconds"] = extra
        row["projected_run_seconds"] = extra + RUN_STEPS * fit["ms_per_step"] / 1000
        out["variants"][label] = row
    fastest = min(out["variants"], key=lambda k: out["variants"][k]["projected_run_seconds"])
    out["fastest_run_including_warmup"] = fastest
    return out


def table(results: dict[str, Any], header: str) -> str:
    head = ["model", "numerics", "fit epoch ms/step", "x fp32 eager", "step ms/step", "x fp32 eager",
            "compile + warm-up (s)", f"40 epochs ({RUN_STEPS:,} steps) projected"]
    lines = [header, "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for name, res in results.items():
        for label, v in res["variants"].items():
            best = " (fastest)" if label == res["fastest_run_including_warmup"] else ""
            lines.append("| " + " | ".join([
                name, label,
                f"{v['fit epoch']['ms_per_step']:.1f}", f"{v['fit epoch']['speedup_over_fp32_eager']:.2f}",
                f"{v['step']['ms_per_step']:.1f}", f"{v['step']['speedup_over_fp32_eager']:.2f}",
                f"{v['warmup_extra_seconds']:.1f}", f"{v['projected_run_seconds'] / 60:.1f} min{best}",
            ]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu":
        keep_freed_memory()  # fit's allocator setting, process-wide: every variant alike
    variants = chosen_variants(args.variants)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - set(DEFAULT_STEPS) or not models:
        raise SystemExit(f"error: --models {args.models!r}: choose from lite, improved")
    report: dict[str, Any] = {
        "benchmark": "bench/numerics.py",
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/numerics.py", *(argv if argv is not None else sys.argv[1:])]),
        **environment(device, torch.get_num_threads()),
        "settings": {"recipe": "modern", "batch_size": rl.RECIPES["modern"]["batch_size"], "windows": args.windows,
                     "variants": [dict(zip(("label", "bf16", "compile"), v)) for v in variants],
                     "data": "synthetic uniform uint8 images (pixel values do not change any step's cost)"},
        "models": {},
    }
    hw = report["hardware"]
    native = "native bf16 (AMX or AVX512-BF16)" if hw["cpu_native_bf16"] else "no native bf16 (emulated: slow)"
    header = (f"Numerics on {hw['device']} ({native}), torch {torch.__version__}, "
              f"batch {report['settings']['batch_size']}, {report['started']}: "
              "ms per training step (median of the timed rounds); x = median per-round ratio against fp32 eager; "
              f"projected: compile + warm-up + {RUN_STEPS:,} fit steps (40 epochs of 45,000 images, evaluation apart)")
    print(header, flush=True)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"numerics-{device.type}.json"
    for name in models:
        report["models"][name] = measure(name, device, args.steps or DEFAULT_STEPS[name], args.windows, variants)
        write_outputs(report, table(report["models"], header), out)
    markdown = table(report["models"], header)
    write_outputs(report, markdown, out)
    print("\n" + markdown + f"\n\nbench: wrote {out} and {out.with_suffix('.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
