#!/usr/bin/env python3
"""Evaluation-only ablation: flip + 1-pixel translate test-time augmentation against the flip TTA
that `modern` uses, on finished runs' own checkpoints (no training).

The translate views are airbench's (Jordan, 2024, `infer_mirror_translate`): half the weight on
the image and its mirror, half on the two copies shifted one pixel up-left and down-right
(reflect padding), each with its mirror. For every run folder (results.json + checkpoint.pt) it
re-evaluates the validation split and the test set, checks that the run's own evaluation reproduces
its recorded validation accuracy (same data, same split), and writes a copy of the run's
results.json whose final validation and test numbers are the translate-TTA ones (`evaluation`
says so), with McNemar's paired test against the run's own TTA on the same validation images.

    python scripts/screen_tta.py --data-dir DIR --out report/experiments results/lite-modern ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import resnet_lib as rl  # noqa: E402
from resnet_tools.dataset import CIFAR10  # noqa: E402
from resnet_tools.inference import load_for_inference_with_config  # noqa: E402
from resnet_tools.results import mcnemar  # noqa: E402
from resnet_tools.safeio import write_json  # noqa: E402
from resnet_tools.evaluation import evaluate, logits_of  # noqa: E402

EVALUATION = "flip + 1-pixel translate TTA (airbench's mirror-translate views), re-evaluated from the checkpoint"


def translate_views(x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs for images (B, C, H, W) of any dtype (uint8 too); the weights sum to 1."""
    h, w = x.shape[2:]
    rows, cols = torch.tensor([1, *range(h), h - 2]), torch.tensor([1, *range(w), w - 2])
    p = x[:, :, rows][:, :, :, cols]  # reflect-padded by one pixel: (B, C, H+2, W+2)
    down_right, up_left = p[:, :, :-2, :-2], p[:, :, 2:, 2:]  # the content moved one pixel each way
    views = [(0.25, x), (0.25, x.flip(3))]
    for t in (down_right, up_left):
        views += [(0.125, t), (0.125, t.flip(3))]
    return views


def translate_logits(model: torch.nn.Module, x_u8: torch.Tensor, stats: Any, batch_size: int = 500) -> torch.Tensor:
    """float32 logits (N, 10) averaged over translate_views of uint8 images (N, 3, 32, 32), each
    view evaluated as `logits_of` evaluates images (fp32: the runs' recorded numbers came
    from CPUs, where bf16 autocast is off)."""
    return sum(w * logits_of(model, v, stats, batch_size=batch_size, bf16=False) for w, v in translate_views(x_u8))


def screen(run_dir: Path, data: CIFAR10, device: str = "cpu") -> dict[str, Any]:
    """The run's results record, re-evaluated with translate TTA (see the module docstring)."""
    res = json.loads((run_dir / "results.json").read_text())
    model, stats, cfg_dict = load_for_inference_with_config(run_dir / "checkpoint.pt", device)
    fields = {f.name for f in dataclasses.fields(rl.TrainConfig)}
    cfg = rl.TrainConfig(**{k: v for k, v in cfg_dict.items() if k in fields})
    _, (val_x, val_y) = rl.split_train_val(data, cfg)
    own = evaluate(model, (val_x, val_y), tta=cfg.tta, stats=stats)  # as the run evaluated itself
    recorded = res["final"].get("val_acc")
    if recorded is None or abs(own.accuracy - recorded) > 1e-6:
        raise SystemExit(
            f"{run_dir}: its checkpoint gives validation accuracy {own.accuracy:.4f} here, the run recorded "
            f"{recorded}; not the data (or the split) it was trained on"
        )
    val_pred = translate_logits(model, val_x, stats).argmax(1)
    test_pred = translate_logits(model, data.test_x, stats).argmax(1)
    paired = mcnemar(own.predictions, val_pred, val_y)
    final = dict(res["final"])
    final.update(
        val_acc=(val_pred == val_y).float().mean().item(),
        test_acc=(test_pred == data.test_y).float().mean().item(),
        val_loss=None,
        test_loss=None,
        test_predictions="".join(map(str, test_pred.tolist())),
        tta="flip+translate",
    )
    return {
        **res,
        "final": final,
        "evaluation": EVALUATION,
        "screened_from": str(run_dir),
        "val_mcnemar_vs_run": paired._asdict(),  # only_a: the run's own TTA right, translate wrong
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders holding results.json and checkpoint.pt")
    ap.add_argument("--data-dir", required=True, help="the data the runs trained on")
    ap.add_argument("--out", type=Path, required=True, help="folder for ablation-tta-translate-sN.json")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    data = rl.load_cifar10(args.data_dir, download=False)
    for run in args.runs:
        rec = screen(run, data, args.device)
        seed = rec["config"].get("seed", 0)
        m = rec["val_mcnemar_vs_run"]
        path = args.out / f"ablation-tta-translate-s{seed}.json"
        write_json(rec, path)
        print(
            f"{run}: val {100 * rec['final']['val_acc']:.2f}% (its own TTA only right on {m['only_a']}, "
            f"translate only right on {m['only_b']}, McNemar p={m['p']:.3f}), test "
            f"{100 * rec['final']['test_acc']:.2f}% -> {path}"
        )


if __name__ == "__main__":
    main()
