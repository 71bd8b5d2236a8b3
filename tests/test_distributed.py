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
from resnet_tools import cli, errors, job
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
        """The output of a run that must succeed; also checks that no rank still had Gloo's threads
        when its interpreter shut down (a thread left running there can abort a finished rank)."""
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
            threads = {p.name: p.read_text().split() for p in sorted(self.signals.glob("threads-*"))}
        finally:
            self.kill()
        self.reader.join(timeout=10)
        assert rc == 0, self.output()
        if Path("/proc/self/task").is_dir():  # Linux: the workers list their threads from /proc
            assert sorted(threads) == ["threads-0", "threads-1"], self.output()
            left = {rank: [t for t in names if "gloo" in t] for rank, names in threads.items()}
            assert left == {"threads-0": [], "threads-1": []}, left
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ranks:
    """Two ranks started by hand with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT), each with its own arguments, as a user might: no torchrun agent stops the others
    when one fails, so what the ranks do is their own. Each writes its output to a file of its own
    in `signals` (besides its pid-<rank>), never to a pipe shared with the other."""

    def __init__(self, args_of_rank: list[list[str]], **env: str) -> None:
        self.signals = Path(tempfile.mkdtemp(prefix="ddp-ranks-"))
        common = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
            "DDP_SIGNAL_DIR": str(self.signals),
            "WORLD_SIZE": str(len(args_of_rank)),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
            **env,
        }
        self.procs = []
        for rank, args in enumerate(args_of_rank):
            with open(self.signals / f"output-{rank}", "w") as out:  # the child keeps its own handle
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), *args],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                        env={**common, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                        start_new_session=True,
                    )
                )

    def finish(self, rank: int, timeout: float = TIMEOUT) -> tuple[int, str]:
        """(exit status, output) of rank `rank`; AssertionError if it runs past `timeout` seconds."""
        try:
            rc = self.procs[rank].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"rank {rank} still runs after {timeout} s:\n{self.output(rank)}") from None
        return rc, self.output(rank)

    def output(self, rank: int) -> str:
        return (self.signals / f"output-{rank}").read_text()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
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
        _, one = job.train_and_evaluate(
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
        assert cli.main(cli_args(data_dir, out, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "written by a run with 2 process(es) and this run has 1" in err, err


def test_benchmark_scaling_row_says_when_there_are_not_two_gpus():
    from test_bench import load_bench

    bench, sections, reporting = load_bench(), load_bench("sections"), load_bench("reporting")
    result = sections.scaling(bench.parse_args(["--device", "cpu"]), torch.device("cpu"), "lite", 128)
    assert result == {"gpus": 0, "skipped": "no GPU present"}
    assert reporting.scaling_text(result).startswith("Scaling (DDP, torchrun): no GPU present; no scaling row")
    row = {
        "gpus": 4,
        "model": "lite",
        "per_gpu_batch": 256,
        "images_per_sec": {"1": 1000.0, "4": 3600.0},
        "speedup": 3.6,
        "efficiency": 0.9,
    }
    assert "| lite | 1,000 | 3,600 | 3.60x | 90% |" in reporting.scaling_text(row)


def error_line(output: str) -> str:
    """The one `error: ...` line of a rank's output; no traceback."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


def run_ranks(args_of_rank: list[list[str]], **env: str) -> list[tuple[int, str]]:
    ranks = Ranks(args_of_rank, **env)
    try:
        return [ranks.finish(rank) for rank in range(len(args_of_rank))]
    finally:
        ranks.kill()


def test_ranks_with_another_lr_both_stop_naming_it(data_dir, tmp_path):
    """Issue 29 #11: ranks started with --lr 0.1 and 0.9 both trained, and results.json said 0.1."""
    out = tmp_path / "lr"
    results = run_ranks([cli_args(data_dir, out, "--lr=0.1"), cli_args(data_dir, out, "--lr=0.9")])
    for rc, output in results:
        assert rc == 2, output
        assert error_line(output) == (
            "error: ranks disagree: rank 1 has lr=0.9, rank 0 lr=0.1; start every rank with the same options and data"
        )
    assert not (out / "results.json").exists() and not (out / "checkpoint.pt").exists()


def test_ranks_with_other_epochs_stop_at_once_not_hang(data_dir, tmp_path):
    """Issue 29 #12: ranks started with different --epochs hung until killed. The collective timeout
    is set beyond the test's wait, so only the check at the start can end them."""
    out = tmp_path / "epochs"
    t0 = time.monotonic()
    results = run_ranks(
        [cli_args(data_dir, out, "--epochs=2"), cli_args(data_dir, out, "--epochs=3")],
        RESNET_DDP_TIMEOUT=str(10 * TIMEOUT),
    )
    for rc, output in results:
        assert rc == 2 and "rank 1 has epochs=3, rank 0 epochs=2" in error_line(output), output
    assert time.monotonic() - t0 < TIMEOUT


def test_ranks_on_other_data_stop_naming_it(data_dir, tmp_path):
    other = write_cifar(tmp_path / "other", seed=1)  # as many images, other pixels and labels
    out = tmp_path / "data"
    results = run_ranks([cli_args(data_dir, out), cli_args(other, out)])
    for rc, output in results:
        line = error_line(output)
        assert rc == 2 and "ranks disagree: rank 1 has data.train_sha256=" in line, output
        assert "data.test_sha256=" in line and "data.n_train" not in line and "lr=" not in line, line


@pytest.mark.parametrize("stall", ["sleep", "exit"])
def test_a_rank_that_waits_for_a_stalled_or_dead_one_gives_up_in_one_line(data_dir, tmp_path, stall):
    """Rank 1 stops where it would load its data (stuck, or dead without a word); rank 0 waits in
    its next collective for RESNET_DDP_TIMEOUT seconds at most, then says why in one line."""
    ranks = Ranks(
        [cli_args(data_dir, tmp_path / "stall")] * 2,
        DDP_STALL_RANK="1",
        DDP_STALL=stall,
        DDP_START_TOGETHER="2",  # so the rendezvous does not use up the short timeout on a loaded machine
        RESNET_DDP_TIMEOUT="10",
    )
    try:
        rc, output = ranks.finish(0)
        assert (ranks.signals / "stalled").exists(), output
    finally:
        ranks.kill()
    line = error_line(output)
    if stall == "sleep":
        assert line.startswith("error: rank 0 of 2 waited 10 s for the other ranks and gave up"), line
        assert "RESNET_DDP_TIMEOUT=SECONDS" in line
    else:  # a dead peer is noticed at once, or at the latest when the timeout fires
        assert line.startswith(("error: rank 0 of 2 lost its connection", "error: rank 0 of 2 waited 10 s")), line
    assert rc == 2


def test_rank_settings_and_their_disagreement_message(monkeypatch):
    cfg = rl.TrainConfig.from_recipe("modern", **CONFIG)
    data = {"n_train": 180, "n_test": 100, "train_sha256": "a" * 64, "test_sha256": "b" * 64, "root": "/x"}
    mine = ddp.run_settings(cfg, torch.device("cuda", 1), data, resumes_checkpoint=False)
    assert mine["device"] == "cuda" and mine["lr"] == 0.05 and "data.root" not in mine  # the folder may move
    assert mine == ddp.run_settings(cfg, torch.device("cuda", 0), {**data, "root": "/y"}, resumes_checkpoint=False)
    others = [
        {**mine, "epochs": 3, "lr": 0.9},
        mine,
        {**mine, "data.train_sha256": "c" * 64},
        {**mine, "device": "cpu"},
        {**mine, "seed": 1},
    ]
    monkeypatch.setattr(ddp, "gather_objects", lambda obj: [obj, *others])
    with pytest.raises(errors.RanksDisagree) as caught:
        ddp.check_ranks_agree(mine, ddp.World(0, 6, "gloo"))
    assert str(caught.value) == (
        "ranks disagree: rank 1 has lr=0.9, epochs=3, rank 0 lr=0.05, epochs=2; "
        "rank 3 has data.train_sha256='cccccccccccc...', rank 0 data.train_sha256='aaaaaaaaaaaa...'; "
        "rank 4 has device='cpu', rank 0 device='cuda'; and 1 more ranks differ; "
        "start every rank with the same options and data"
    )
    monkeypatch.setattr(ddp, "gather_objects", lambda obj: [obj, obj])
    ddp.check_ranks_agree(mine, ddp.World(0, 2, "gloo"))  # agreeing ranks pass
    assert isinstance(caught.value, rl.ConfigError)  # the command line prints it in one line


def test_collective_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(ddp.TIMEOUT_ENV, raising=False)
    assert ddp.timeout_seconds() == ddp.DEFAULT_TIMEOUT_S == 600
    monkeypatch.setenv(ddp.TIMEOUT_ENV, "90.5")
    assert ddp.timeout_seconds() == 90.5
    for bad in ("0", "-3", "nan", "inf", "ten"):
        monkeypatch.setenv(ddp.TIMEOUT_ENV, bad)
        with pytest.raises(rl.ConfigError, match=f"RESNET_DDP_TIMEOUT='{bad}' must be a positive number of seconds"):
            ddp.timeout_seconds()
    assert ddp.rank_failure(RuntimeError("Timed out waiting 3000ms")) is None  # no process group here
    monkeypatch.setattr(ddp, "world", lambda: ddp.World(1, 2, "gloo"))
    monkeypatch.setenv(ddp.TIMEOUT_ENV, "30")
    timed_out = ddp.rank_failure(RuntimeError("[gloo/unbound_buffer.cc:81] Timed out waiting 30000ms for recv"))
    assert str(timed_out).startswith("rank 1 of 2 waited 30 s for the other ranks and gave up")
    lost = ddp.rank_failure(RuntimeError("[gloo/pair.cc:561] Connection closed by peer [10.0.0.2]:4321. Typically..."))
    assert str(lost).endswith("(its own output says why): Connection closed by peer [10.0.0.2]:4321")
    assert ddp.rank_failure(RuntimeError("CUDA out of memory")) is None and ddp.rank_failure(ValueError("x")) is None
