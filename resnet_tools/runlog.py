"""Per-epoch logs where people look: OUT/history.csv and TensorBoard event files in OUT/; and
the per-epoch record they hold (HISTORY_KEYS, epoch_record: what `fit`'s history is made of).

`train_and_evaluate` passes an `EpochLog` to `fit` as its `on_epoch` callback: after every
epoch it rewrites `history.csv` (atomically; one row per epoch, HISTORY_KEYS as columns)
and adds the epoch's scalars to TensorBoard, so `tensorboard --logdir results` shows every
run side by side while they train. TensorBoard is optional: without the `tensorboard`
package the run says so in one line and writes history.csv only.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from resnet_tools.safeio import atomic_write

HISTORY_CSV = "history.csv"

# fit's history: one list per key, one value per epoch (epoch_record); the columns of history.csv.
HISTORY_KEYS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "seconds",
    "images_per_sec",
)

# TensorBoard tag of each history column: loss and accuracy per split side by side, in %.
_SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "test_loss": "loss/test",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "test_acc": "accuracy/test",
    "lr": "lr",
    "images_per_sec": "images_per_sec",
}


def epoch_record(
    epoch: int, lr: float, train_loss: float, train_acc: float, val: Any | None, test: Any, seconds: float, images: int
) -> dict[str, float]:
    """One epoch's row of fit's history (HISTORY_KEYS) from the epoch's numbers and its validation and
    test results (resnet_tools.evaluation.EvalResult: .loss, .accuracy); val_* are NaN without a validation split."""
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val.loss if val else math.nan,
        "val_acc": val.accuracy if val else math.nan,
        "test_loss": test.loss,
        "test_acc": test.accuracy,
        "seconds": seconds,
        "images_per_sec": images / seconds,
    }


def history_rows(history: dict[str, list[float]]) -> list[dict[str, Any]]:
    """The history dict (one list per key) as one dict per epoch."""
    keys = list(history)
    return [dict(zip(keys, values)) for values in zip(*(history[k] for k in keys))]


def write_history_csv(history: dict[str, list[float]], path: str | Path) -> Path:
    """Write the per-epoch history as CSV (header = its keys), atomically. NaN (no
    validation split) is written as an empty cell."""

    def cell(v: Any) -> Any:
        return "" if isinstance(v, float) and math.isnan(v) else v

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(history))
    for row in history_rows(history):
        writer.writerow([cell(v) for v in row.values()])
    path = Path(path)
    atomic_write(path, "w", lambda f: f.write(buf.getvalue()))
    return path


def summary_writer(log_dir: str | Path) -> Any | None:
    """A TensorBoard SummaryWriter for `log_dir`, or None (with a one-line notice on stderr)
    where the `tensorboard` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        why = "the tensorboard package is not installed"
    except Exception as e:  # an installed but broken tensorboard (e.g. a protobuf mismatch) must not stop training
        why = f"tensorboard does not import: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    else:
        return SummaryWriter(log_dir=str(log_dir))
    print(f"note: TensorBoard logs skipped ({why}); history.csv is written", file=sys.stderr)
    return None


# What a run leaves in its folder: a fresh run into the folder moves them aside together.
RUN_FILES = ("checkpoint.pt", "best.pt", "results.json", HISTORY_CSV, "model.safetensors")
REPLACED_PREFIX = "replaced-"


def set_aside_earlier_run(out_dir: Path) -> Path | None:
    """Move an earlier run's files (checkpoint, best.pt, results.json, logs) from `out_dir` into
    `out_dir/replaced-<time>/` before a new run writes there, saying so in one line: a finished
    run is never lost to a new one, and its curves never mix into the new run's TensorBoard logs.
    Nested one level down, it is no run of the results folder's. The folder, or None if empty."""
    found = sorted(out_dir.glob("events.out.tfevents.*")) + [out_dir / n for n in RUN_FILES if (out_dir / n).exists()]
    if not found:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = out_dir / f"{REPLACED_PREFIX}{stamp}"
    for k in range(2, 1000):  # two replacements within one second
        if not aside.exists():
            break
        aside = out_dir / f"{REPLACED_PREFIX}{stamp}-{k}"
    aside.mkdir()
    for path in found:
        os.replace(path, aside / path.name)  # same file system: a rename, nothing copied
    print(f"note: the earlier run in {out_dir} was moved to {aside.name}/ ({len(found)} files)", file=sys.stderr)
    return aside


class EpochLog:
    """The `on_epoch(history)` callback of `fit`: history.csv and TensorBoard scalars in
    `out_dir`. Call `final(results)` after the final evaluation and `close()` at the end
    (or use it as a context manager)."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, fresh: bool = True) -> None:
        self.out = Path(out_dir)
        self.csv = self.out / HISTORY_CSV
        if fresh:  # a new run replaces the folder's old one: kept aside, its curves apart from the new run's
            set_aside_earlier_run(self.out)
        self._writer = summary_writer(self.out) if tensorboard else None

    def __call__(self, history: dict[str, list[float]]) -> None:
        write_history_csv(history, self.csv)
        if self._writer is None or not history.get("epoch"):
            return
        step = int(history["epoch"][-1])
        for key, tag in _SCALARS.items():
            v = history.get(key, [math.nan])[-1]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            self._writer.add_scalar(tag, 100 * v if key.endswith("_acc") else v, step)
        self._writer.flush()

    def final(self, results: dict[str, Any]) -> None:
        """The final evaluation's accuracies (with the run's TTA setting) at the last epoch."""
        if self._writer is None:
            return
        fin, step = results["final"], results["config"]["epochs"]
        tta = "flip TTA" if fin.get("tta") else "no TTA"
        for split in ("val", "test"):
            if fin.get(f"{split}_acc") is not None:
                self._writer.add_scalar(f"final/{split}_acc", 100 * fin[f"{split}_acc"], step)
        accs = [f"{s} acc {fin[f'{s}_acc']:.2%}" for s in ("val", "test") if fin.get(f"{s}_acc") is not None]
        self._writer.add_text("final", f"{', '.join(accs)} ({tta})", step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "EpochLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
