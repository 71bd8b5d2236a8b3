"""Fault injection, processes and interruptions: training processes and checkpoint saves SIGKILLed
(mid-epoch, inside a save, at random moments), full disks (injected, and a real 1 MiB tmpfs), loss
divergence, Ctrl-C and SIGTERM during command-line training, and a second run in the same output folder
(its lock); and the check that every file the project writes goes through the atomic writer. Skipped
only where the machine cannot run a case, with the reason: the real full disk needs root to mount a
tmpfs.

Every group of cases is a module-level list that its test is parametrized over; FAULT_CASES below
collects this module's groups, and tests/fault_counts.py prints their sizes with those of
test_faults_files.py, test_faults_inputs.py and test_faults_weak.py (the counts quoted in
docs/development.md, "Reliability"). Helpers and fixtures shared with those: tests/faults_common.py.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import resnet_lib as rl
from resnet_tools import checkpoints, cli, inference, job
from conftest import ROOT, tiny_config, write_cifar
from resnet_tools.evaluation import evaluate
from faults_common import run_main
from faults_common import no_training, one_torch_thread  # noqa: F401 - fixtures

WORKER = Path(__file__).with_name("_train_worker.py")


# ---------------------------------------------------------------------------------------
# Subprocess workers that the tests SIGKILL
# ---------------------------------------------------------------------------------------
class Worker:
    """tests/_train_worker.py in a subprocess; its output lines arrive on a queue."""

    def __init__(self, *args: Any) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _next(self, deadline: float) -> str | None:
        try:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError("worker timed out; output so far:\n" + "\n".join(self.seen)) from None
        if line is not None:
            self.seen.append(line)
        return line

    def wait_for(self, prefix: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while (line := self._next(deadline)) is not None:
            if line.startswith(prefix):
                return line
        raise AssertionError(f"worker exited ({self.proc.wait()}) before {prefix!r}:\n" + "\n".join(self.seen))

    def finish(self, timeout: float = 240) -> list[str]:
        """Wait for the end of its output; returns every line it printed."""
        deadline = time.monotonic() + timeout
        while self._next(deadline) is not None:
            pass
        self.proc.wait(timeout=30)
        return self.seen

    def sigkill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        self.finish(timeout=60)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def workers():
    started: list[Worker] = []
    yield lambda *args: started.append(Worker(*args)) or started[-1]
    for w in started:
        w.stop()


def temps(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".*.tmp"))


def assert_complete(path: Path) -> int:
    """The checkpoint loads and is entirely one save (every tensor holds its epoch); returns the epoch."""
    from _train_worker import PAYLOAD_FLOATS

    saved = checkpoints.load_checkpoint_dict(path)
    epoch = saved["epoch"]
    assert saved["payload"].shape == (PAYLOAD_FLOATS,) and bool((saved["payload"] == epoch).all())
    assert all(bool((t == epoch).all()) for t in saved["model_state"].values())
    return epoch


# Kill points of the training process: (epoch, step) in the forward pass of that step,
# after the epoch's earlier steps changed the weights in memory.
KILL_MID_EPOCH = [(2, 4)]


@pytest.mark.parametrize("epoch, step", KILL_MID_EPOCH)
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, workers, epoch, step):
    data_dir = write_cifar(tmp_path / "cifar")
    full = workers("train", data_dir, tmp_path / "full.pt", tmp_path / "full.json")
    part = workers("train", data_dir, tmp_path / "part.pt", tmp_path / "part.json",
                   "--pause-epoch", epoch, "--pause-step", step)
    part.wait_for("PAUSED")
    assert checkpoints.load_checkpoint_dict(tmp_path / "part.pt")["epoch"] == epoch - 1  # the kill lands mid-epoch
    assert part.sigkill() == -signal.SIGKILL
    assert checkpoints.load_checkpoint_dict(tmp_path / "part.pt")["epoch"] == epoch - 1
    assert not temps(tmp_path / "part.pt") and not (tmp_path / "part.json").exists()

    resumed = workers("train", data_dir, tmp_path / "part.pt", tmp_path / "part.json", "--resume")
    assert "DONE" in resumed.finish() and "DONE" in full.finish(), resumed.seen + full.seen
    a = json.loads((tmp_path / "full.json").read_text())
    b = json.loads((tmp_path / "part.json").read_text())
    assert b["steps_trained"] < a["steps_trained"]  # it continued; it did not start over
    assert a["history"]["epoch"] == [1, 2, 3] and set(a["history"]) >= {"train_loss", "test_acc", "val_loss"}
    for key in a["history"]:
        assert b["history"][key] == a["history"][key], key  # exactly: same floats
    assert b["state_hash"] == a["state_hash"]  # bit-identical final weights


# Kill points inside _atomic_save, placed deterministically by the worker.
KILL_IN_SAVE = ["mid-write", "before-rename"]


@pytest.mark.parametrize("where", KILL_IN_SAVE)
def test_sigkill_inside_a_save_keeps_the_previous_checkpoint_whole(tmp_path, workers, where):
    path = tmp_path / "checkpoint.pt"
    w = workers("save", path, "--first", 1, "--count", 2, "--pause", where)
    assert w.wait_for("PAUSED") == f"PAUSED 3 {where}"
    [tmp] = temps(path)  # the kill lands while the new file exists only as a temporary
    assert w.sigkill() == -signal.SIGKILL
    assert assert_complete(path) == 2  # the previous save, entire
    if where == "mid-write":
        with pytest.raises(ValueError, match="truncated or corrupt checkpoint"):
            checkpoints.load_checkpoint_dict(tmp)  # what a non-atomic save would have left at `path`
    assert temps(path) == [tmp]  # SIGKILL leaves no chance to clean up ...
    from _train_worker import checkpoint_of

    rl.atomic_save(checkpoint_of(4), path)  # ... the next save removes the dead writer's file
    assert assert_complete(path) == 4 and temps(path) == []


RANDOM_KILL_SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", RANDOM_KILL_SEEDS)
def test_sigkill_at_a_random_moment_while_saving(tmp_path, workers, seed):
    path = tmp_path / "checkpoint.pt"
    w = workers("save", path, "--first", 1, "--count", 10_000)
    w.wait_for("SAVED 1")
    time.sleep(random.Random(seed).uniform(0.0, 0.6))
    assert w.sigkill() == -signal.SIGKILL
    last = [line for line in w.seen if line.startswith(("SAVING", "SAVED"))][-1]
    n = int(last.split()[1])
    epoch = assert_complete(path)
    assert epoch == n if last.startswith("SAVED") else epoch in (n - 1, n)
    assert len(temps(path)) <= 1  # at most the one save that was cut short


def test_disk_full_during_a_save_keeps_the_last_checkpoint(cifar, tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def disk_full_on_second_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04 half a zip file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    ck = tmp_path / "checkpoint.pt"
    cfg = tiny_config(epochs=2)
    with monkeypatch.context() as m:
        m.setattr(torch, "save", disk_full_on_second_save)
        with pytest.raises(OSError, match="No space left"):
            rl.fit(rl.build_model("lite", seed=0), cifar, cfg, checkpoint=ck, progress=False)
    assert checkpoints.load_checkpoint_dict(ck)["epoch"] == 1 and temps(ck) == []
    history = rl.fit(rl.build_model("lite", seed=0), cifar, cfg, checkpoint=ck, resume=True, progress=False)
    assert history["epoch"] == [1, 2]  # space freed: the run continues from epoch 1


STOPS_IN_SAVE = [KeyboardInterrupt, cli.Terminated]


@pytest.mark.parametrize("stop", STOPS_IN_SAVE, ids=["ctrl-c", "sigterm"])
def test_a_stop_while_torch_writes_a_checkpoint_is_that_stop(tmp_path, monkeypatch, stop):
    """CI, 2026-12-07: SIGTERM arrived while torch.save wrote best.pt; torch's zip writer turned it
    into RuntimeError("unexpected pos") when closing, and the run ended in a traceback with exit 1
    instead of its resume line and 143. The signal's exception is what atomic_save raises."""
    real_save = torch.save

    class StoppedFile:  # the file torch writes to; the signal arrives during its third write
        def __init__(self, f: Any) -> None:
            self.f, self.writes = f, 0

        def write(self, data: bytes) -> int:
            self.writes += 1
            if self.writes == 3:
                raise stop()
            return self.f.write(data)

        def flush(self) -> None:
            self.f.flush()

    ck = tmp_path / "best.pt"
    rl.atomic_save({"epoch": 1, "w": torch.zeros(1000)}, ck)
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save(obj, StoppedFile(f), *a, **k))
    with pytest.raises(stop) as caught:
        rl.atomic_save({"epoch": 2, "w": torch.ones(1000)}, ck)
    assert type(caught.value) is stop and caught.value.__suppress_context__  # not torch's RuntimeError
    monkeypatch.undo()
    assert torch.load(ck, weights_only=True)["epoch"] == 1 and temps(ck) == []  # the previous file, whole


# ---------------------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------------------
def test_divergence_after_a_good_epoch_keeps_that_checkpoint(cifar, tmp_path):
    """NaN from the second epoch on: fit stops naming epoch and step; the checkpoint of
    epoch 1 stays, whole and finite, and a run without --resume will not overwrite it."""
    cfg = tiny_config(epochs=3)
    model = rl.build_model("lite", seed=0)
    steps = -(-len(rl.split_train_val(cifar, cfg)[0][1]) // cfg.batch_size)
    calls = {"n": 0}

    def nan_from_epoch_2(module, inputs, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] > steps:
                return output * float("nan")
        return output

    model.register_forward_hook(nan_from_epoch_2)
    ck = tmp_path / "out" / "checkpoint.pt"
    with pytest.raises(
        rl.TrainingDiverged, match=rf"loss became NaN or infinite at epoch 2, step 1/{steps}; lower the learning rate"
    ):
        rl.fit(model, cifar, cfg, checkpoint=ck, progress=False)
    saved = checkpoints.load_checkpoint_dict(ck)
    assert saved["epoch"] == 1 and saved["history"]["epoch"] == [1]
    assert all(torch.isfinite(t).all() for t in saved["model_state"].values() if t.is_floating_point())
    good, _ = inference.load_checkpoint(ck, device="cpu")
    assert np.isfinite(evaluate(good, cifar).loss)
    with pytest.raises(ValueError, match=r"unfinished run \(epoch 1 of 3\)"):
        job.train_and_evaluate(cfg, data=cifar, out_dir=ck.parent, progress=False)


def test_huge_learning_rate_stops_the_cli_with_a_clear_message(cifar_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        code, err = run_main(["train", "--lr", "1e12", "--warmup-epochs", "0", "--label-smoothing", "0",
                              "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--data-dir", str(cifar_dir),
                              "--no-download", "--out", str(out), "--quiet"], capsys)
    assert code == 2
    assert err.startswith("error: loss became NaN or infinite at epoch 1, step ") and "lower the learning rate" in err
    assert "Traceback" not in err and not (out / "results.json").exists()


def test_sigterm_during_cli_training_stops_as_cleanly_as_ctrl_c(tmp_path):
    """kill, a scheduler's time limit or a closed session: the same stop as Ctrl-C (exit 143, the
    resume line, the last checkpoint whole, the lock released), not a silent death."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "resnet_lib.py"), "train", "--model", "lite", "--epochs", "200", "--quiet",
           "--device", "cpu", "--no-download", "--no-bf16", "--batch-size", "32", "--out", str(out),
           "--data-dir", str(write_cifar(tmp_path / "cifar"))]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert f"terminated. {out / 'checkpoint.pt'} holds the last completed epoch; rerun with --resume" in err
    assert not (out / ".lock").exists()
    assert inference.load_checkpoint(out / "checkpoint.pt", device="cpu")[1]["epoch"] >= 1


# Ctrl-C after the first epoch's checkpoint, or before any checkpoint was written.
CTRL_C = ["after a checkpoint", "before the first checkpoint"]


@pytest.mark.parametrize("when", CTRL_C)
def test_ctrl_c_during_cli_training_says_how_to_resume(tmp_path, capsys, monkeypatch, when):
    def interrupted(model, data, cfg, checkpoint=None, **kwargs):
        if when == "after a checkpoint":
            Path(checkpoint).write_bytes(b"an epoch's checkpoint")
        raise KeyboardInterrupt  # what SIGINT (Ctrl-C, a stopped Colab cell) raises mid-epoch

    monkeypatch.setattr(rl, "fit", interrupted)
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        code, err = run_main(["train", "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu", "--no-download",
                              "--data-dir", str(write_cifar(tmp_path / "cifar"))], capsys)
    assert code == 130 and "Traceback" not in err
    if when == "after a checkpoint":
        assert err == (f"interrupted. {tmp_path / 'out' / 'checkpoint.pt'} holds the last completed epoch; "
                       "rerun with --resume to continue.\n")
    else:
        assert err == ("interrupted. It stopped before the end of its first epoch, so no checkpoint was written: "
                       "rerun to start over.\n")


# ---------------------------------------------------------------------------------------
# A second run in the same folder
# ---------------------------------------------------------------------------------------
# A process holding OUT/.lock with resnet_tools.safeio.run_lock, as a running `train` does.
HOLDER = """import sys, time
sys.path.insert(0, sys.argv[1])
from resnet_tools.safeio import run_lock
with run_lock(sys.argv[2]):
    print("HELD", flush=True)
    time.sleep(120)
"""
# How OUT/.lock is found: held by a live process (refused), or left behind (taken over).
LOCKS = ["held by a running process", "left by a SIGKILLed process", "empty (killed while creating it)",
         "of another machine, active just now", "of another machine, silent for 10 minutes"]


@pytest.mark.parametrize("lock", LOCKS)
def test_a_second_run_in_the_same_folder_fails_at_once(tmp_path, capsys, monkeypatch, no_training, lock):
    out = tmp_path / "out"
    argv = ["train", "--out", str(out), "--quiet", "--device", "cpu", "--no-download", "--data-dir",
            str(tmp_path / "nowhere")]
    if lock.startswith("of another machine"):  # a shared Drive folder: its pid cannot be checked from here
        out.mkdir()
        (out / ".lock").write_text("4242 colab-vm-elsewhere\n")
        if "silent" in lock:
            os.utime(out / ".lock", (time.time() - 600, time.time() - 600))
        else:
            code, err = run_main(argv, capsys)
            assert code == 2 and re.match(rf"error: {re.escape(str(out))} is in use by process 4242 on colab-vm-"
                                          r"elsewhere, active \d s ago \(taken over after 300 s without", err), err
            return
    else:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), str(out)], stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert holder.stdout.readline() == "HELD\n"
            assert (out / ".lock").read_text().split()[0] == str(holder.pid)
            if lock == "held by a running process":
                t0 = time.monotonic()
                code, err = run_main(argv, capsys)
                assert code == 2 and time.monotonic() - t0 < 30
                assert err == (f"error: {out} is in use by process {holder.pid} on {os.uname().nodename} (lock file "
                               f"{out / '.lock'}): another training run writes there. Wait for it to finish or choose "
                               "another output folder; if no run uses it, delete the lock file\n")
                assert (out / ".lock").exists() and not (out / "checkpoint.pt").exists()
                return
        finally:
            holder.kill()
            holder.wait(timeout=30)
        assert (out / ".lock").exists()  # SIGKILL: the holder could not remove it
        if lock.startswith("empty"):
            (out / ".lock").write_text("")
            os.utime(out / ".lock", (time.time() - 60, time.time() - 60))

    class Reached(Exception):
        pass

    def reached(*a, **k):
        assert (out / ".lock").read_text().split()[0] == str(os.getpid())  # taken over
        raise Reached

    monkeypatch.setattr(rl, "load_cifar10", reached)
    with pytest.raises(Reached):
        job.train_and_evaluate(tiny_config(), out_dir=out)
    assert not (out / ".lock").exists() and not list(out.glob(".lock*"))  # released, even on an error


def test_lock_heartbeat_keeps_a_long_run_fresh(tmp_path, monkeypatch):
    from resnet_tools import safeio

    monkeypatch.setattr(safeio, "LOCK_HEARTBEAT_S", 0.05)
    with safeio.run_lock(tmp_path / "out") as lock:
        os.utime(lock, (0, 0))  # as if last touched in 1970: another machine would take it over
        deadline = time.monotonic() + 10
        while lock.stat().st_mtime == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.time() - lock.stat().st_mtime < 60
    assert not lock.exists()


def test_finished_run_removes_its_lock(cifar, tmp_path):
    job.train_and_evaluate(tiny_config(epochs=1), data=cifar, out_dir=tmp_path / "out", progress=False)
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert ".lock" not in left and {"checkpoint.pt", "results.json"} <= set(left)


# ---------------------------------------------------------------------------------------
# A real full disk: a small tmpfs (needs root and mount; skipped with the reason otherwise)
# ---------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk (one Lite checkpoint fits, two do not); yields
    (folder, resize(size)), unmounted at the end."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    try:
        yield disk, resize
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(folder: Path) -> None:
    """Write zeros into folder/filler until the disk is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_real_disk_full_keeps_every_previous_file_whole(cifar, small_disk):
    disk, resize = small_disk
    ck = disk / "checkpoint.pt"
    cfg = tiny_config(epochs=2)
    with pytest.raises(OSError, match="No space left"):  # the second epoch's save does not fit
        rl.fit(rl.build_model("lite", seed=0), cifar, cfg, checkpoint=ck, progress=False)
    assert checkpoints.load_checkpoint_dict(ck)["epoch"] == 1 and temps(ck) == []
    resize("8m")  # space freed: the run continues from epoch 1
    history = rl.fit(rl.build_model("lite", seed=0), cifar, cfg, checkpoint=ck, resume=True, progress=False)
    assert history["epoch"] == [1, 2]
    model, saved = inference.load_checkpoint(ck, device="cpu")
    exported = inference.export_safetensors(ck, disk / "m.safetensors")
    sub = inference.write_submission(disk / "sub.csv", list(range(5000)), torch.zeros(5000, dtype=torch.long))
    before = {p: p.read_bytes() for p in (ck, exported, sub)}
    fill(disk)
    with pytest.raises(OSError, match="No space left"):
        inference.export_safetensors(ck, exported)
    with pytest.raises(OSError, match="No space left"):
        inference.write_submission(sub, [f"image-{i}" for i in range(5000)], torch.ones(5000, dtype=torch.long))
    with pytest.raises(OSError, match="No space left"):
        rl.fit(model, cifar, tiny_config(epochs=1), checkpoint=ck, progress=False)
    assert {p: p.read_bytes() for p in (ck, exported, sub)} == before
    assert not list(disk.glob("*.tmp"))
    inference.load_pretrained(exported, device="cpu")


# ---------------------------------------------------------------------------------------
# Every file the project writes goes through the atomic writer
# ---------------------------------------------------------------------------------------
# Ways of writing a file that bypass resnet_tools.safeio.atomic_write (a crash or a full disk
# leaves half a file under the real name); allowed only as the writer's argument `f`.
DIRECT_WRITES = re.compile(r"\.write_text\(|\.write_bytes\(|save_file\(|np\.save\(|torch\.save\((?!obj, f\))|"
                           r"open\([^)]*['\"][wa]b?['\"]|savefig\((?!f,)|to_csv\((?!f,)|json\.dump\(")


def test_every_file_the_project_writes_goes_through_the_atomic_writer():
    """Not a fault injected: the check that the writers tested above are the only ones. safeio.py
    (the atomic writer, and the lock file it creates with O_EXCL) is not scanned; the image-folder
    cache has its own atomic writer (open 'xb' + os.replace), which the pattern allows."""
    tools = sorted(p for p in (ROOT / "resnet_tools").glob("*.py") if p.name != "safeio.py")
    sources = [ROOT / "resnet_lib.py", *tools,
               *sorted((ROOT / "scripts").glob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]
    direct = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in sources
              for i, line in enumerate(p.read_text().splitlines(), start=1) if DIRECT_WRITES.search(line)]
    assert direct == [], "\n".join(direct)


# ---------------------------------------------------------------------------------------
# What this module injects and tries, for tests/fault_counts.py and the README
# ---------------------------------------------------------------------------------------
FAULT_CASES: dict[str, list] = {
    "SIGKILL of a training process mid-epoch, then resume": KILL_MID_EPOCH,
    "SIGKILL inside a checkpoint save (mid-write, before the rename)": KILL_IN_SAVE,
    "SIGKILL at a random moment while saving": RANDOM_KILL_SEEDS,
    "disk full during a save (injected)": [test_disk_full_during_a_save_keeps_the_last_checkpoint],
    "a real full disk (1 MiB tmpfs): checkpoint, export and submission saves": [
        test_real_disk_full_keeps_every_previous_file_whole],
    "a second training process in the same output folder (live or dead lock owner)": LOCKS,
    "Ctrl-C during command-line training (after a checkpoint, before the first)": CTRL_C,
    "SIGTERM during command-line training": [test_sigterm_during_cli_training_stops_as_cleanly_as_ctrl_c],
    "Ctrl-C or SIGTERM while torch writes a checkpoint": STOPS_IN_SAVE,
    "loss divergence (NaN mid-run, huge learning rate)": [test_divergence_after_a_good_epoch_keeps_that_checkpoint,
                                                          test_huge_learning_rate_stops_the_cli_with_a_clear_message],
}
BAD_INPUT_CASES: dict[str, list] = {}
