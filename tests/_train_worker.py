"""Subprocess worker for tests/test_faults_processes.py: a process the tests can SIGKILL.

    python tests/_train_worker.py train DATA_DIR CHECKPOINT OUT_JSON [--resume] [--pause-epoch E --pause-step S]
    python tests/_train_worker.py save CHECKPOINT --first N --count K [--pause mid-write|before-rename]

train: fit the small Lite config of WORKER_CONFIG on DATA_DIR with a checkpoint; write the
history and a hash of the final weights to OUT_JSON. With --pause-epoch/--pause-step it
prints "PAUSED" in the forward pass of that (1-based) step of that epoch, after the
epoch's earlier steps have updated the weights, and waits there to be killed.

save: write checkpoints with resnet_lib._atomic_save, epochs first .. first+count-1, each
a full checkpoint whose every tensor holds the epoch number (so a torn file is visible),
printing "SAVING i" / "SAVED i". With --pause, the next save stops at that point (half
of the file written / fully written but not yet renamed), prints "PAUSED i" and waits.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import resnet_lib as rl  # noqa: E402
from resnet_tools import checkpoints  # noqa: E402

# Three short epochs on the 200-image synthetic set: 180 training images (20 held out),
# 6 steps of 32 per epoch; cutout on, so resuming must restore the data RNG exactly.
WORKER_CONFIG = dict(model="lite", epochs=3, batch_size=32, lr=0.05, warmup_epochs=0.5, device="cpu", seed=0,
                     cutout=8, tta=False, bf16=False)
PAYLOAD_FLOATS = 2_000_000  # 8 MB per save: a save takes long enough to be killed in the middle
PAUSE_SECONDS = 120  # the test kills the process long before this


def state_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def pause(tag: str) -> None:
    print(f"PAUSED {tag}", flush=True)
    time.sleep(PAUSE_SECONDS)
    sys.exit("not killed")


def train(args: argparse.Namespace) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the synthetic folder is "not the official CIFAR-10"
        data = rl.load_cifar10(args.data_dir, download=False)
    cfg = rl.TrainConfig.from_recipe("modern", **WORKER_CONFIG)
    model = rl.build_model(cfg.model, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(rl.split_train_val(data, cfg)[0][1]) / cfg.batch_size)
    pause_at = (args.pause_epoch - 1) * steps_per_epoch + args.pause_step if args.pause_epoch else -1
    calls = {"train": 0}

    def hook(module: torch.nn.Module, inputs: tuple) -> None:
        if module.training:  # evaluation forwards run in eval mode and are not counted
            calls["train"] += 1
            if calls["train"] == pause_at:
                pause(f"epoch {args.pause_epoch} step {args.pause_step}")

    model.register_forward_pre_hook(hook)
    history = rl.fit(model, data, cfg, checkpoint=args.checkpoint, resume=args.resume, progress=False)
    keep = {k: v for k, v in history.items() if k not in ("seconds", "images_per_sec")}
    out = {"history": keep, "state_hash": state_hash(model), "steps_trained": calls["train"]}
    Path(args.out_json).write_text(json.dumps(out))
    print("DONE", flush=True)


class _PausingFile:
    """A binary file that pauses the process once `pause_after` bytes have been written."""

    def __init__(self, f, pause_after: int, tag: str) -> None:
        self._f, self._left, self._tag = f, pause_after, tag

    def write(self, b) -> int:
        b = memoryview(b).cast("B")
        if len(b) < self._left:
            self._left -= len(b)
            return self._f.write(b)
        self._f.write(b[: self._left])  # stop inside this chunk: the file ends mid-record
        self._f.flush()
        os.fsync(self._f.fileno())  # the partial file is really on disk when we are killed
        pause(self._tag)

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def checkpoint_of(epoch: int) -> dict:
    cfg = rl.TrainConfig.from_recipe("modern", **WORKER_CONFIG)
    with torch.random.fork_rng(devices=[]):
        model = rl.build_model("lite", seed=0)
    state = {k: torch.full_like(v, epoch) for k, v in model.state_dict().items()}
    return {
        "format": checkpoints.CHECKPOINT_FORMAT, "epoch": epoch, "config": dataclasses.asdict(cfg),
        "num_params": rl.count_params(model), "stats": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "model_state": state, "payload": torch.full((PAYLOAD_FLOATS,), float(epoch)),
    }


def save(args: argparse.Namespace) -> None:
    path = Path(args.checkpoint)
    for epoch in range(args.first, args.first + args.count):
        print(f"SAVING {epoch}", flush=True)
        rl.atomic_save(checkpoint_of(epoch), path)
        print(f"SAVED {epoch}", flush=True)
    if not args.pause:
        return
    epoch = args.first + args.count
    obj = checkpoint_of(epoch)
    if args.pause == "mid-write":
        real_fdopen = os.fdopen
        size = 4 * PAYLOAD_FLOATS  # the payload dominates the file: half of it is mid-file
        os.fdopen = lambda fd, *a, **k: _PausingFile(real_fdopen(fd, *a, **k), size // 2, f"{epoch} mid-write")
    else:
        real_replace = os.replace
        os.replace = lambda src, dst: pause(f"{epoch} before-rename") if Path(dst) == path else real_replace(src, dst)
    print(f"SAVING {epoch}", flush=True)
    rl.atomic_save(obj, path)
    sys.exit("the pause did not happen")


def main() -> None:
    torch.set_num_threads(1)  # two CPU cores are shared with the test process and others
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("data_dir")
    t.add_argument("checkpoint")
    t.add_argument("out_json")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--pause-epoch", type=int, default=0)
    t.add_argument("--pause-step", type=int, default=0)
    s = sub.add_parser("save")
    s.add_argument("checkpoint")
    s.add_argument("--first", type=int, default=1)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--pause", choices=("mid-write", "before-rename"))
    args = parser.parse_args()
    train(args) if args.mode == "train" else save(args)


if __name__ == "__main__":
    main()
