"""Run `python resnet_lib.py train ...` under torchrun, a process the tests can SIGKILL mid-epoch.

    python -m torch.distributed.run --nproc_per_node=2 --standalone tests/_ddp_worker.py train ARGS...

Each rank prints "PID <rank> <pid>" first (torchrun starts its workers in their own sessions,
so the test kills them by pid). With DDP_PAUSE_AT=K in the environment, rank 0 prints "PAUSED"
in the forward pass of its K-th training step (1-based, counted over epochs; the earlier steps
have updated the weights) and waits there to be killed; the other ranks wait in DDP's gradient
all-reduce of that step.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import resnet_lib as rl  # noqa: E402
from resnet_tools.cli import main  # noqa: E402

PAUSE_SECONDS = 120  # the test kills the processes long before this


def with_pause(build_model, pause_at: int):
    def build(*args, **kwargs) -> torch.nn.Module:
        model = build_model(*args, **kwargs)
        calls = {"train": 0}

        def hook(module: torch.nn.Module, inputs: tuple) -> None:
            if module.training:  # evaluation forwards run in eval mode and are not counted
                calls["train"] += 1
                if calls["train"] == pause_at:
                    print(f"PAUSED {pause_at}", flush=True)
                    time.sleep(PAUSE_SECONDS)
                    sys.exit("not killed")

        model.register_forward_pre_hook(hook)
        return model

    return build


if __name__ == "__main__":
    torch.set_num_threads(1)  # two CPU cores are shared with the test process and others
    rank = int(os.environ.get("RANK", "0"))
    print(f"PID {rank} {os.getpid()}", flush=True)
    pause_at = int(os.environ.get("DDP_PAUSE_AT", "0"))
    if pause_at and rank == 0:
        rl.build_model = with_pause(rl.build_model, pause_at)  # train_and_evaluate looks it up here
    sys.exit(main(sys.argv[1:]))
