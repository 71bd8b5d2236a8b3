"""Data-parallel training (issue #18): torchrun with 2 CPU processes on Gloo, on a small synthetic set.

The 2-process runs are real `python -m torch.distributed.run --nproc_per_node=2 --standalone`
subprocesses of `resnet_lib.py train` (through tests/_ddp_worker.py, which can pause rank 0
mid-epoch to be killed); each takes a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tiny_config, write_cifar

import resnet_lib as rl
from _ddp_worker import fit_no_batchnorm
from resnet_tools import distributed as ddp

WORKER = ROOT / "tests" / "_ddp_worker.py"
# 200 synthetic images: 180 to train on (20 held out), 32 a global batch (16 per rank), so an
# epoch is 5 full steps and a last one of 20 (10 per rank); cutout on, so a resume must restore
# the data generator exactly.
# fp32, so the runs compute the same on every processor (bf16 auto follows the CPU's instructions).
CONFIG = dict(
    model="lite", epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.5, device="cpu", seed=0, cutout=8, bf16=False
)
STEPS_PER_EPOCH = 6
TIMEOUT = 600  # generous: a 2-process run on a loaded 2-core machine takes minutes (only a failing run waits this long)


def cli_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    flag = {k: "--" + k.replace("_", "-") for k in CONFIG}
    opts = [
        (flag[k] if v else "--no-" + flag[k][2:]) if isinstance(v, bool) else f"{flag[k]}={v}"
        for k, v in CONFIG.items()
    ]
    return [
        "train",
        "--recipe=modern",
        f"--data-dir={data_dir}",
        "--no-download",
        f"--out={out}",
        "--quiet",
        *opts,
        *extra,
    ]


class Torchrun:
    """`torchrun --nproc_per_node=2 --standalone tests/_ddp_worker.py ARGS` with its output read
    line by line in a thread. The workers write their pids and "paused" to files in a folder of
    their own (`signals`): two ranks' printed lines can merge in the shared pipe."""

    def __init__(self, args: list[str], **env: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(WORKER), *args]
        self.signals = Path(tempfile.mkdtemp(prefix="ddp-signals-"))
        full_env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
            "DDP_SIGNAL_DIR": str(self.signals),
            **env,
        }
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=full_env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True
        )
        self.reader.start()

    def output(self) -> str:
        return "".join(self.lines)

    def finish(self) -> str:
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        finally:
            self.kill()
        self.reader.join(timeout=10)
        assert rc == 0, self.output()
        return self.output()

    def wait_for(self, name: str) -> None:
        """Until a worker has written the signal file `name`."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if (self.signals / name).exists():
                return
            if self.proc.poll() is not None:
                self.reader.join(timeout=10)
                raise AssertionError(f"torchrun exited ({self.proc.returncode}) before {name!r}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"no {name!r} within {TIMEOUT} s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL the workers (each in its own session) and torchrun's process group."""
        for pid_file in self.signals.glob("pid-*"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        shutil.rmtree(self.signals, ignore_errors=True)


def comparable(history: dict) -> dict:
    return {k: v for k, v in history.items() if k not in ("seconds", "images_per_sec")}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("ddp") / "cifar")


@pytest.fixture(scope="module")
def two_process_run(data_dir: Path, tmp_path_factory) -> Path:
    """An uninterrupted 2-process run; its output folder."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    Torchrun(cli_args(data_dir, out)).finish()
    return out


def test_rank_shares_make_up_the_single_process_batches(cifar):
    cfg = tiny_config(cutout=8)
    prepared = rl._prepare(cifar, cfg, torch.device("cpu"))
    single = list(rl._batches(prepared, cfg, torch.Generator().manual_seed(0)))
    ranks = [list(rl._batches(prepared, cfg, torch.Generator().manual_seed(0), r, 2)) for r in range(2)]
    assert [len(b[1]) for b in single] == [32] * 5 + [20]
    assert [[len(b[1]) for b in r] for r in ranks] == [[16] * 5 + [10]] * 2
    for step, (x, y) in enumerate(single):  # global batch k is the same images, augmented the same way
        assert torch.equal(torch.cat([r[step][0] for r in ranks]), x)
        assert torch.equal(torch.cat([r[step][1] for r in ranks]), y)
    # As fit prepares them under DDP: the images stay on the host, and each epoch a rank's
    # device gets only its share; the batches are the same.
    host = rl._prepare(cifar, cfg, torch.device("cpu"), world_size=2)
    assert host.sharded and not prepared.sharded
    for r in range(2):
        for (x, y), (xs, ys) in zip(ranks[r], rl._batches(host, cfg, torch.Generator().manual_seed(0), r, 2)):
            assert torch.equal(x, xs) and torch.equal(y, ys)


def test_global_batch_split():
    assert ddp.global_batch_sizes(180, 32, 2) == [32] * 5 + [20]
    assert ddp.global_batch_sizes(161, 32, 2) == [32] * 5  # a last batch of 1 image for 2 ranks is skipped
    positions, sizes = ddp.rank_positions(70, 32, 1, 4)
    assert sizes == [8, 8, 2] and positions[:8].tolist() == list(range(8, 16))
    with pytest.raises(rl.ConfigError, match="multiple of the 3 processes"):
        ddp.check_batch_size(32, ddp.World(0, 3, "gloo"))
    with pytest.raises(rl.ConfigError, match="sync_bn=True needs CUDA"):
        ddp.check_sync_bn(True, torch.device("cpu"), ddp.World(0, 2, "gloo"))
    with pytest.raises(rl.ConfigError, match="runs on CUDA GPUs .NCCL. or CPUs .Gloo."):
        ddp.check_device(torch.device("meta"), ddp.World(0, 2, "gloo"))
    ddp.check_device(torch.device("cpu"), ddp.World(0, 2, "gloo"))
    assert ddp.world() == ddp.World(0, 1, None)  # no process group in the test process


def test_two_processes_write_one_result_and_match_one_process(two_process_run, data_dir, tmp_path):
    out = two_process_run
    assert sorted(p.name for p in out.glob("*.json")) == ["results.json"]
    assert sorted(p.name for p in out.glob("*.pt*")) == ["best.pt", "checkpoint.pt"]  # no temporary files either
    res = json.loads((out / "results.json").read_text())
    assert res["distributed"]["world_size"] == 2 and res["distributed"]["backend"] == "gloo"
    assert len(res["distributed"]["devices"]) == 2
    assert res["history"]["epoch"] == [1, 2] and res["config"]["batch_size"] == 32
    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert saved["world_size"] == 2 and saved["epoch"] == 2

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, one = rl.train_and_evaluate(
            rl.TrainConfig.from_recipe("modern", **CONFIG),
            data_dir=data_dir,
            out_dir=tmp_path / "one",
            download=False,
            progress=False,
        )
    assert one["distributed"] == {"world_size": 1, "backend": None, "devices": one["distributed"]["devices"]}
    # The same global batches; only BatchNorm statistics (per rank) and summation order differ.
    assert res["final"]["test_acc"] >= 0.9 and one["final"]["test_acc"] >= 0.9
    assert abs(res["final"]["test_acc"] - one["final"]["test_acc"]) <= 0.05


def test_without_batchnorm_two_processes_compute_what_one_does(data_dir, tmp_path):
    """BatchNorm aside (its statistics are per rank), DDP with 2 processes is one process: the
    same global batches and gradients, an uneven last batch included (float tolerance)."""
    out = tmp_path / "history.json"
    Torchrun(["no-batchnorm", str(data_dir), str(out)]).finish()
    torch.set_num_threads(1)
    one, two = fit_no_batchnorm(str(data_dir)), json.loads(out.read_text())
    assert one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6, nan_ok=True), key


def test_two_processes_killed_mid_epoch_resume_to_the_same_history(two_process_run, data_dir, tmp_path):
    out = tmp_path / "killed"
    run = Torchrun(cli_args(data_dir, out), DDP_PAUSE_AT=str(STEPS_PER_EPOCH + 3))  # epoch 2, step 3
    try:
        run.wait_for("paused")
    finally:
        run.kill()
    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and not (out / "results.json").exists()

    Torchrun(cli_args(data_dir, out, "--resume")).finish()
    resumed = json.loads((out / "results.json").read_text())
    reference = json.loads((two_process_run / "results.json").read_text())
    a, b = comparable(resumed["history"]), comparable(reference["history"])
    assert a.keys() == b.keys()
    for key in a:
        assert all(
            math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(x) and math.isnan(y))
            for x, y in zip(a[key], b[key], strict=True)
        ), key
    assert resumed["final"]["test_acc"] == pytest.approx(reference["final"]["test_acc"], abs=1e-6)


def test_resuming_with_another_world_size_is_refused(two_process_run, data_dir, tmp_path, capsys):
    out = tmp_path / "resume"
    out.mkdir()
    shutil.copy(two_process_run / "checkpoint.pt", out / "checkpoint.pt")  # written by 2 processes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert rl.main(cli_args(data_dir, out, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "written by a run with 2 process(es) and this run has 1" in err, err


def test_benchmark_scaling_row_says_when_there_are_not_two_gpus():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_under_test", ROOT / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.scaling(bench.parse_args(["--device", "cpu"]), torch.device("cpu"), "lite", 128)
    assert result == {"gpus": 0, "skipped": "no GPU present"}
    assert bench.scaling_text(result).startswith("Scaling (DDP, torchrun): no GPU present; no scaling row")
    row = {
        "gpus": 4,
        "model": "lite",
        "per_gpu_batch": 256,
        "images_per_sec": {"1": 1000.0, "4": 3600.0},
        "speedup": 3.6,
        "efficiency": 0.9,
    }
    assert "| lite | 1,000 | 3,600 | 3.60x | 90% |" in bench.scaling_text(row)
