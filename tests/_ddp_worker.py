"""Run `python resnet_lib.py train ...` under torchrun, a process the tests can SIGKILL mid-epoch.

    python -m torch.distributed.run --nproc_per_node=2 --standalone tests/_ddp_worker.py train ARGS...
    python -m torch.distributed.run --nproc_per_node=2 --standalone tests/_ddp_worker.py no-batchnorm DATA OUT_JSON

Each rank first writes its pid to the file pid-<rank> in the folder $DDP_SIGNAL_DIR (torchrun
starts its workers in their own sessions, so the test kills them by pid). With DDP_PAUSE_AT=K in
the environment, rank 0 writes the file "paused" there in the forward pass of its K-th training step (1-based, counted over epochs; the earlier steps
have updated the weights) and waits there to be killed; the other ranks wait in DDP's gradient
all-reduce of that step. Files, not printed lines: the ranks share one stdout pipe, where two
lines written at once can merge into one ("10181PID 1 ..."). At exit each rank writes the names of
its threads to threads-<rank> (threads_at_exit).

Started by hand instead (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set by the test, no torchrun):
with DDP_START_TOGETHER=N a rank starts training only once pid-0 ... pid-(N-1) exist (every
rank has imported torch), so a short RESNET_DDP_TIMEOUT does not fire at the rendezvous on a
loaded machine; with DDP_STALL_RANK=R, rank R writes "stalled" when it would load its data, then
sleeps there to be killed (DDP_STALL=sleep, the default) or exits at once (DDP_STALL=exit).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import resnet_lib as rl  # noqa: E402
from resnet_tools import distributed as ddp  # noqa: E402
from resnet_tools.cli import main  # noqa: E402

PAUSE_SECONDS = 120  # the test kills the processes long before this
# no-batchnorm: `fit` of a model without BatchNorm (whose statistics are per rank), on 179 images:
# 5 global batches of 32 and a last one of 19 (10 + 9), so DDP must weight the ranks' shares.
NO_BN_CONFIG = dict(
    model="lite",
    epochs=2,
    batch_size=32,
    lr=0.05,
    warmup_epochs=0.5,
    device="cpu",
    seed=0,
    cutout=8,
    train_subset=179,
    bf16=False,  # float tolerance between 1 and 2 processes; the same on every processor
)


def no_batchnorm_model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(8, 10),
        )


def fit_no_batchnorm(data_dir: str) -> dict:
    """fit's history of the BN-free model: under torchrun with DDP, or in one process."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the synthetic folder is "not the official CIFAR-10"
        data = rl.load_cifar10(data_dir, download=False)
    cfg = rl.TrainConfig.from_recipe("modern", **NO_BN_CONFIG)
    history = rl.fit(no_batchnorm_model(), data, cfg, progress=False)
    return {k: v for k, v in history.items() if k not in ("seconds", "images_per_sec")}


def signal_file(name: str, text: str) -> None:
    """Write $DDP_SIGNAL_DIR/name whole (rename), so the test never reads half of it."""
    folder = Path(os.environ["DDP_SIGNAL_DIR"])
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / name)


def with_pause(build_model, pause_at: int):
    def build(*args, **kwargs) -> torch.nn.Module:
        model = build_model(*args, **kwargs)
        calls = {"train": 0}

        def hook(module: torch.nn.Module, inputs: tuple) -> None:
            if module.training:  # evaluation forwards run in eval mode and are not counted
                calls["train"] += 1
                if calls["train"] == pause_at:
                    signal_file("paused", str(pause_at))
                    time.sleep(PAUSE_SECONDS)
                    sys.exit("not killed")

        model.register_forward_pre_hook(hook)
        return model

    return build


def stall_loading(rank: int) -> None:
    """Make rank `rank` stop where it would load its data (after the first collective, before fit's)."""
    load = rl.load_cifar10

    def stalled(*args, **kwargs):
        signal_file("stalled", str(rank))
        if os.environ.get("DDP_STALL", "sleep") == "exit":
            os._exit(1)  # as a crashed rank: no error handling, no goodbye to the others
        time.sleep(PAUSE_SECONDS)
        return load(*args, **kwargs)

    rl.load_cifar10 = stalled  # _train_and_evaluate looks it up here


def start_together(n: int) -> None:
    folder = Path(os.environ["DDP_SIGNAL_DIR"])
    deadline = time.monotonic() + PAUSE_SECONDS
    while not all((folder / f"pid-{r}").exists() for r in range(n)) and time.monotonic() < deadline:
        time.sleep(0.05)


def threads_at_exit(rank: int) -> None:
    """Write the names of this process's threads (Linux: /proc) to the file threads-<rank> when the
    interpreter starts to shut down: Gloo's threads ("gloo_tcp_loop", "pt_gloo_runloop") must be gone."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:  # a thread that ended since the folder was listed
            pass
    signal_file(f"threads-{rank}", "\n".join(sorted(names)))


if __name__ == "__main__":
    torch.set_num_threads(1)  # two CPU cores are shared with the test process and others
    rank = int(os.environ.get("RANK", "0"))
    signal_file(f"pid-{rank}", str(os.getpid()))
    atexit.register(threads_at_exit, rank)
    if sys.argv[1] == "no-batchnorm":
        ddp.init_from_env(torch.device("cpu"))  # as train does: Gloo, after what it imports first
        history = fit_no_batchnorm(sys.argv[2])
        if rank == 0:
            Path(sys.argv[3]).write_text(json.dumps(history))
        ddp.shutdown()
        sys.exit(0)
    if os.environ.get("DDP_STALL_RANK") == str(rank):
        stall_loading(rank)
    start_together(int(os.environ.get("DDP_START_TOGETHER", "0")))
    pause_at = int(os.environ.get("DDP_PAUSE_AT", "0"))
    if pause_at and rank == 0:
        rl.build_model = with_pause(rl.build_model, pause_at)  # train_and_evaluate looks it up here
    sys.exit(main(sys.argv[1:]))
