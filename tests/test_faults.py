"""Fault injection: killed processes, full disks, flipped bits, concurrent runs, wrong data
folders, malicious and mismatched files, invalid parameters and devices, unwritable folders,
outputs that are inputs, CSV-breaking ids and divergence. Skipped only where the machine
cannot run a case, with the reason: the real full disk needs root to mount a tmpfs, and a
device-refusal case is skipped on a machine that has that device.

Every group of cases is a module-level list that its test is parametrized over;
FAULT_CASES and BAD_INPUT_CASES below collect them, and tests/fault_counts.py prints
their sizes (the counts quoted in docs/development.md, "Reliability").
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import io
import json
import os
import pickle
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest
import torch

import resnet_lib as rl
from resnet_tools.dataset import CLASSES
from resnet_tools import budget, checkpoints, cifarfiles, errors, inference, job
from resnet_tools.cli import main
from conftest import ROOT, synthetic_images, tiny_config, write_cifar
from resnet_tools import devices
from resnet_tools.evaluation import evaluate

WORKER = Path(__file__).with_name("_train_worker.py")
FOLDER = cifarfiles.CIFAR10_FOLDER


def one_error(excinfo: pytest.ExceptionInfo) -> str:
    """The message of an error that is one clear error: no chained traceback under it."""
    e = excinfo.value
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__), "chained traceback"
    return str(e)


def must_not_run(what: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{what} was called: the error came too late")

    return fail


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while this module runs (module scope: autouse fixtures come
    first, so the module-scoped checkpoint fixture trains with it too). On a small shared
    CPU, two spinning OpenMP threads made a 6-step epoch take 16 s instead of 0.5 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if data loading or training starts: errors must come before them."""
    monkeypatch.setattr(rl, "fit", must_not_run("fit (training)"))
    monkeypatch.setattr(rl, "load_cifar10", must_not_run("load_cifar10 (data loading)"))


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


# ---------------------------------------------------------------------------------------
# Data folders that are wrong in the ways users manage
# ---------------------------------------------------------------------------------------
def batch_path(root: Path, name: str) -> Path:
    return root / FOLDER / name


def rewrite(name: str, **fields: Any) -> Callable[[Path], None]:
    """Rewrite one batch file with some of its fields replaced (None: remove the field)."""

    def mutate(root: Path) -> None:
        path = batch_path(root, name)
        obj = pickle.loads(path.read_bytes())
        for k, v in fields.items():
            if v is None:
                obj.pop(k)
            else:
                obj[k] = v(obj) if callable(v) else v
        path.write_bytes(pickle.dumps(obj, protocol=4))

    return mutate


def remove(name: str) -> Callable[[Path], None]:
    return lambda root: batch_path(root, name).unlink()


def truncate(name: str, keep: int | float) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        p = batch_path(root, name)
        b = p.read_bytes()
        p.write_bytes(b[: int(keep * len(b)) if isinstance(keep, float) else keep])

    return mutate


def write_bytes(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda root: batch_path(root, name).write_bytes(content)


def as_directory(name: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        batch_path(root, name).unlink()
        batch_path(root, name).mkdir()

    return mutate


class BadData(NamedTuple):
    id: str
    mutate: Callable[[Path], None]
    message: str  # regex: the file and what was expected
    download: bool = False


LABELS_AS_NAMES = lambda obj: [CLASSES[i] for i in obj["labels"]]  # noqa: E731
# A protocol-5 pickle whose first frame claims 2**64 - 1 bytes: the unpickler raises
# OverflowError, which used to escape read_batch as a raw traceback.
HUGE_FRAME = b"\x80\x05\x95" + b"\xff" * 8 + b"}."

BAD_DATA = [
    BadData("missing train batch", remove("data_batch_3"),
            r"files missing in .*cifar-10-batches-py: data_batch_3 "
            r"\(expected data_batch_1..data_batch_5 and test_batch\)"),
    BadData("test_batch missing", remove("test_batch"), r"files missing in .*: test_batch \(expected .*test_batch\)"),
    BadData("test_batch missing, download on: not downloaded over the user's files", remove("test_batch"),
            r"files missing in .*: test_batch .*not downloaded over them", download=True),
    BadData("batch file is a folder", as_directory("data_batch_1"), r"files missing in .*: data_batch_1 \(expected"),
    BadData("empty file", write_bytes("data_batch_2", b""),
            r"data_batch_2: file is empty \(0 bytes\); expected a CIFAR-10 python-version batch"),
    BadData("truncated to half", truncate("data_batch_4", 0.5),
            r"data_batch_4: truncated or corrupt batch file .*expected a CIFAR-10 python-version batch"),
    BadData("truncated to 10 bytes", truncate("test_batch", 10), r"test_batch: truncated or corrupt batch file"),
    BadData("HTML error page instead of a batch", write_bytes("data_batch_1", b"<!DOCTYPE html><title>404</title>"),
            r"data_batch_1: truncated or corrupt batch file .*expected a CIFAR-10"),
    BadData("pickle frame length overflow", write_bytes("data_batch_5", HUGE_FRAME),
            r"data_batch_5: truncated or corrupt batch file \(OverflowError"),
    BadData("images as HWC (N, 32, 32, 3)",
            rewrite("data_batch_2", data=lambda o: o["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)),
            r"data_batch_2: 'data' must have shape \(N, 3072\) .*got \(40, 32, 32, 3\)"),
    BadData("rows of 3073 values", rewrite("data_batch_3", data=np.zeros((40, 3073), np.uint8)),
            r"data_batch_3: 'data' must have shape \(N, 3072\).*got \(40, 3073\)"),
    BadData("flat 1-D pixels", rewrite("test_batch", data=lambda o: o["data"].ravel()),
            r"test_batch: 'data' must have shape \(N, 3072\).*got \(307200,\)"),
    BadData("no images", rewrite("data_batch_1", data=np.zeros((0, 3072), np.uint8), labels=[]),
            r"data_batch_1: holds no images; expected 'data' of shape \(N, 3072\) with N > 0"),
    BadData("images as float32 in [0, 1]", rewrite("data_batch_1", data=lambda o: o["data"].astype(np.float32) / 255),
            r"data_batch_1: 'data' must be a uint8 array of N x 3072 pixels, got float32"),
    BadData("images as int64", rewrite("test_batch", data=lambda o: o["data"].astype(np.int64)),
            r"test_batch: 'data' must be a uint8 array .*got int64"),
    BadData("images as a list", rewrite("data_batch_2", data=lambda o: o["data"].tolist()),
            r"data_batch_2: 'data' must be a uint8 array .*got list"),
    BadData("label 10 out of range", rewrite("data_batch_5", labels=lambda o: [10] + o["labels"][1:]),
            r"data_batch_5: labels must lie in 0..9, found \d..10"),
    BadData("label -1 out of range", rewrite("test_batch", labels=lambda o: [-1] + o["labels"][1:]),
            r"test_batch: labels must lie in 0..9, found -1..\d"),
    BadData("one label too few", rewrite("data_batch_4", labels=lambda o: o["labels"][:-1]),
            r"data_batch_4: 'labels' must be 40 integers, got shape \(39,\)"),
    BadData("labels as floats", rewrite("data_batch_1", labels=lambda o: [float(v) for v in o["labels"]]),
            r"data_batch_1: 'labels' must be 40 integers, got shape \(40,\) of float64"),
    BadData("labels as class names", rewrite("data_batch_2", labels=LABELS_AS_NAMES),
            r"data_batch_2: 'labels' must be 40 integers, got shape \(40,\) of <U"),
    BadData("CIFAR-100 keys (fine_labels)", rewrite("test_batch", labels=None, fine_labels=lambda o: [0] * 40),
            r"test_batch: expected keys 'data' and 'labels', found \[.*'fine_labels'"),
    BadData("a list instead of a dict", write_bytes("data_batch_3", pickle.dumps([1, 2, 3])),
            r"data_batch_3: expected a dict with 'data' and 'labels', got list"),
]


@pytest.mark.parametrize("case", BAD_DATA, ids=[c.id for c in BAD_DATA])
def test_bad_data_folder_gives_one_clear_error(cifar_dir, case, monkeypatch):
    import torchvision.datasets.utils as tvu

    monkeypatch.setattr(tvu, "download_and_extract_archive", must_not_run("the download"))
    case.mutate(cifar_dir)
    with pytest.raises(errors.DataError, match=case.message) as e:
        rl.load_cifar10(cifar_dir, download=case.download)
    assert "Traceback" not in one_error(e)


def data_dir_is_archive_file(tmp_path: Path) -> tuple[Path, str]:
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b not really")
    return archive, (
        r"cifar-10-python.tar.gz is a file, not a folder; "
        r"expected the folder that contains cifar-10-batches-py/ .*tar xzf"
    )


def data_dir_is_binary_version(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "cifar-10-batches-bin").mkdir()
    (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").write_bytes(b"\0" * 3073)
    return tmp_path, (
        r"files missing in .*: data_batch_1, "
        r".*found the binary version of CIFAR-10; the python version is needed"
    )


BAD_DATA_DIRS = [data_dir_is_archive_file, data_dir_is_binary_version]


@pytest.mark.parametrize("make", BAD_DATA_DIRS)
def test_wrong_kind_of_data_folder_says_what_to_do(tmp_path, make):
    path, message = make(tmp_path)
    with pytest.raises(errors.DataError, match=message) as e:
        rl.load_cifar10(path, download=False)
    one_error(e)


def test_pointing_at_the_batches_folder_itself_works(cifar_dir):
    with pytest.warns(UserWarning, match="not the official"):
        data = rl.load_cifar10(cifar_dir / FOLDER, download=False)
    assert len(data.train_y) == 200 and len(data.test_y) == 100


def corruptions() -> list[tuple[str, Callable[[bytes], bytes]]]:
    """Seeded damage to a valid batch file: truncations, overwritten bytes, flipped bits."""
    rng = random.Random(0)
    cases = []
    for i in range(8):
        cut = rng.randrange(1, 4000) if i < 5 else rng.randrange(4000, 120_000)
        cases.append((f"truncate@{cut}", lambda b, cut=cut: b[:cut]))
    for _ in range(8):
        pos, val = rng.randrange(0, 400), rng.randrange(256)
        cases.append((f"byte{pos}={val}", lambda b, pos=pos, val=val: b[:pos] + bytes([val]) + b[pos + 1 :]))
    for _ in range(8):
        pos, bit = rng.randrange(0, 300), rng.randrange(8)
        cases.append(
            (f"bitflip{pos}.{bit}", lambda b, pos=pos, bit=bit: b[:pos] + bytes([b[pos] ^ (1 << bit)]) + b[pos + 1 :])
        )
    return cases


CORRUPTIONS = corruptions()


@pytest.mark.parametrize("protocol", [2, 5])
def test_damaged_batch_files_either_load_or_raise_data_error(tmp_path, protocol):
    """A damaged file must never escape as some other exception (a raw traceback)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 40)
    blob = pickle.dumps({"data": synthetic_images(labels, rng), "labels": labels.tolist()}, protocol=protocol)
    path = tmp_path / "data_batch_1"
    outcomes = []
    for name, damage in CORRUPTIONS:
        path.write_bytes(damage(blob))
        try:
            x, y = cifarfiles.read_batch(path)
            outcomes.append("loaded")
            assert x.shape[1:] == (3, 32, 32) and x.dtype == np.uint8 and 0 <= y.min() and y.max() <= 9, name
        except errors.DataError as e:
            outcomes.append("refused")
            assert str(e).startswith(f"{path}: "), name
    truncated = [o for (name, _), o in zip(CORRUPTIONS, outcomes) if name.startswith("truncate")]
    assert truncated == ["refused"] * 8  # damaged pixels may load (the md5 check flags them), a cut file never


# ---------------------------------------------------------------------------------------
# Malicious pickles: as a batch file and as a checkpoint
# ---------------------------------------------------------------------------------------
class Payload:
    """An object whose unpickling calls `func(*args)`, which would create `marker`."""

    def __init__(self, func: Callable[..., Any], args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    m = str(marker)
    return {
        "os.system": Payload(os.system, (f"touch '{m}'",)),
        "subprocess.call": Payload(subprocess.call, (["touch", m],)),
        "builtins.exec": Payload(builtins.exec, (f"open({m!r}, 'w').close()",)),
        "builtins.eval": Payload(builtins.eval, (f"__import__('pathlib').Path({m!r}).touch()",)),
    }


PAYLOADS = list(payloads(Path("x")))


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payloads_are_live(tmp_path, kind):
    """Control: each payload really runs under plain pickle.load, so the refusals below
    are proof that the loaders ran nothing."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(payloads(marker)[kind], protocol=2))
    assert marker.exists()


def place_in_batch(root: Path, payload: Payload, protocol: int) -> Callable[[], Any]:
    write_cifar(root, per_batch=10, n_test=10)
    with open(batch_path(root, "data_batch_2"), "wb") as f:
        pickle.dump({"data": payload, "labels": [0]}, f, protocol=protocol)
    return lambda: rl.load_cifar10(root, download=False)


def place_in_checkpoint(root: Path, payload: Payload, how: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "checkpoint.pt"
    obj = {"format": 1, "epoch": 1, "config": {"model": "lite"}, "model_state": {"w": payload}}
    if how == "zip":
        torch.save(obj, path)
    elif how == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


PLACEMENTS = ["batch file (pickle protocol 2)", "batch file (pickle protocol 0)", "checkpoint (torch zip)",
              "checkpoint (legacy torch format)", "checkpoint (plain pickle)", "checkpoint given to resume",
              "checkpoint, with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"]
MALICIOUS = [(p, k) for p in PLACEMENTS for k in PAYLOADS]


@pytest.mark.parametrize("placement, kind", MALICIOUS)
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch, placement, kind):
    marker = tmp_path / "pwned"
    payload = payloads(marker)[kind]
    monkeypatch.chdir(tmp_path)
    if placement.startswith("batch file"):
        load = place_in_batch(tmp_path / "cifar", payload, protocol=int(placement[-2]))
        with pytest.raises(
            errors.DataError, match=r"data_batch_2: refused: global '.*' is not allowed.*nothing in it was run"
        ) as e:
            load()
    elif placement == "checkpoint given to resume":
        ck = place_in_checkpoint(tmp_path / "out", payload, "zip")
        monkeypatch.setattr(rl, "fit", must_not_run("fit"))
        monkeypatch.setattr(rl, "load_cifar10", must_not_run("load_cifar10"))
        with pytest.raises(ValueError, match=rf"{ck.name}: refused to load: .*nothing in it was run") as e:
            job.train_and_evaluate(tiny_config(), out_dir=ck.parent, resume=True, progress=False)
    else:
        how = "zip" if "zip" in placement or "FORCE" in placement else "legacy" if "legacy" in placement else "raw"
        if "FORCE" in placement:
            monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        ck = place_in_checkpoint(tmp_path / "out", payload, how)
        with pytest.raises(ValueError, match=rf"{ck.name}: refused to load: .*nothing in it was run") as e:
            inference.load_checkpoint(ck, device="cpu")
    func = kind.split(".")[1]  # the message names what it refused: posix.system, subprocess.call, exec, eval
    assert re.search(rf"(global '\S+\.{func}' is not allowed|asks for (\S+\.)?{func},)", one_error(e)), str(e.value)
    assert not marker.exists()


def test_cli_refuses_a_malicious_checkpoint_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    ck = place_in_checkpoint(tmp_path / "out", payloads(marker)["os.system"], "zip")
    np.save(tmp_path / "x.npy", np.zeros((2, 32, 32, 3), np.uint8))
    proc = subprocess.run([sys.executable, str(ROOT / "resnet_lib.py"), "predict", "--checkpoint", str(ck),
                           "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.csv")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "refused to load: it asks for posix.system" in proc.stderr and "nothing in it was run" in proc.stderr
    assert not marker.exists() and not (tmp_path / "s.csv").exists()


# ---------------------------------------------------------------------------------------
# Checkpoints: damaged, foreign, of the other model or of another config
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """A real one-epoch Lite checkpoint (tiny_config(epochs=1)) and its dict."""
    root = tmp_path_factory.mktemp("ck")
    with pytest.warns(UserWarning):
        data = rl.load_cifar10(write_cifar(root / "cifar"), download=False)
    ck = root / "checkpoint.pt"
    rl.fit(rl.build_model("lite", seed=0), data, tiny_config(epochs=1), checkpoint=ck, progress=False)
    return ck, checkpoints.load_checkpoint_dict(ck)


def variant(saved: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(saved)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v(saved) if callable(v) else v
    return out


def save_to(obj: Any) -> Callable[[Path, dict], Any]:
    return lambda path, saved: torch.save(obj(saved) if callable(obj) else obj, path)


def raw_bytes(make: Callable[[bytes], bytes]) -> Callable[[Path, dict], Any]:
    def write(path: Path, saved: dict) -> None:
        buf = io.BytesIO()
        torch.save(saved, buf)
        path.write_bytes(make(buf.getvalue()))

    return write


def tampered_state(saved: dict[str, Any]) -> dict[str, Any]:
    state = dict(saved["model_state"])
    state["fc.weight"] = torch.zeros(64, 10)  # transposed: same count, wrong shape
    return variant(saved, model_state=state, sha256=None)  # edited by hand, without checksums


def edited(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The checkpoint with one number of its weights (or optimizer state) changed, checksums kept."""

    def edit(saved: dict[str, Any]) -> dict[str, Any]:
        if key == "model_state":
            state = {k: v.clone() for k, v in saved["model_state"].items()}
            state["fc.bias"][3] += 0.5
            return variant(saved, model_state=state)
        opt = {"state": {i: dict(s) for i, s in saved["optimizer"]["state"].items()},
               "param_groups": saved["optimizer"]["param_groups"]}
        first = next(iter(opt["state"].values()))
        first["momentum_buffer"] = first["momentum_buffer"] * 2
        return variant(saved, optimizer=opt)

    return edit


def flipped_bit(path: Path, saved: dict) -> None:
    """The saved file with one bit flipped inside the bytes of fc.weight (bit rot, a bad copy):
    the zip and pickle stay valid, so only the checksum can tell."""
    buf = io.BytesIO()
    torch.save(saved, buf)
    blob = bytearray(buf.getvalue())
    at = blob.find(saved["model_state"]["fc.weight"].numpy().tobytes())
    assert at > 0
    blob[at + 101] ^= 0x10
    path.write_bytes(bytes(blob))


BAD_CHECKPOINTS = [
    ("empty file", raw_bytes(lambda b: b""),
     r"truncated or corrupt checkpoint .*expected a checkpoint.pt written by resnet_lib"),
    ("truncated to 10%", raw_bytes(lambda b: b[: len(b) // 10]), r"truncated or corrupt checkpoint"),
    ("truncated to 99%", raw_bytes(lambda b: b[: len(b) * 99 // 100]), r"truncated or corrupt checkpoint"),
    ("HTML error page", raw_bytes(lambda b: b"<html>Not Found</html>"),
     r"refused to load: it is not a plain-tensor torch file"),
    ("a bare state_dict (torch.save(model.state_dict()))", save_to(lambda s: s["model_state"]),
     r"is a bare state_dict \(\d+ tensors\), not a resnet_lib checkpoint"),
    ("a tensor", save_to(torch.zeros(3)),
     r"holds a Tensor, not a resnet_lib checkpoint \(a dict with format, epoch, config"),
    ("no stats or num_params", save_to(lambda s: variant(s, stats=None, num_params=None)),
     r"not a resnet_lib checkpoint: no 'num_params', 'stats' \(expected format, epoch"),
    ("a newer format", save_to(lambda s: variant(s, format=2)),
     r"checkpoint format 2; this resnet_lib reads format 1"),
    ("tensors of the wrong shape", save_to(tampered_state), r"its tensors do not match model 'lite'"),
    ("a folder instead of a file", lambda path, saved: path.mkdir(), r"cannot read the checkpoint \(Is a directory\)"),
    ("parameter count of another model", save_to(lambda s: variant(s, num_params=4_903_242)),
     r"holds 4903242 parameters, model 'lite' has 78042"),
    ("a bit flipped in the weights on disk", flipped_bit,
     r"checksum mismatch in 'model_state': the file changed after it was saved"),
    ("a weight edited, checksums kept", save_to(edited("model_state")), r"checksum mismatch in 'model_state'"),
    ("optimizer state edited, checksums kept", save_to(edited("optimizer")), r"checksum mismatch in 'optimizer'"),
    ("checksums not a dict", save_to(lambda s: variant(s, sha256="0" * 64)), r"'sha256' must be a dict of checksums"),
    ("a safetensors export named .pt", lambda path, saved: __import__("safetensors.torch").torch.save_file(
        {k: v.contiguous() for k, v in saved["model_state"].items()}, str(path), metadata={"format": "resnet_lib/1"}),
     r"is a safetensors export \(weights for inference\), not a training checkpoint; load it with load_pretrained"),
]


@pytest.mark.parametrize("name, write, message", BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_bad_checkpoint_gives_one_clear_error(checkpoint, tmp_path, name, write, message):
    path = tmp_path / "classmate.pt"
    write(path, checkpoint[1])
    with pytest.raises(ValueError, match=message) as e:
        inference.load_checkpoint(path, device="cpu")
    assert one_error(e).startswith(str(path))


def test_checkpoint_has_checksums_and_one_without_them_still_loads(checkpoint, tmp_path):
    ck, saved = checkpoint
    assert set(saved["sha256"]) == {"model_state", "optimizer"}
    old = tmp_path / "written-before-checksums.pt"
    torch.save(variant(saved, sha256=None), old)
    model, _ = inference.load_checkpoint(old, device="cpu")
    assert torch.equal(model.fc.weight, saved["model_state"]["fc.weight"])


def test_weights_only_checkpoint_cannot_be_resumed(checkpoint, tmp_path, no_training):
    out = tmp_path / "out"
    out.mkdir()
    torch.save(variant(checkpoint[1], optimizer=None, scheduler=None), out / "checkpoint.pt")
    with pytest.raises(
        ValueError, match=r"cannot be resumed: it has no optimizer, scheduler \(a weights-only checkpoint\)"
    ):
        job.train_and_evaluate(tiny_config(epochs=1), out_dir=out, resume=True)


def put_checkpoint(saved: dict[str, Any], out: Path, **config: Any) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(variant(saved, config=lambda s: {**s["config"], **config}), out / "checkpoint.pt")
    return out / "checkpoint.pt"


# (what is given, how, expected message)
MISMATCHES = [
    ("improved config, resume", dict(model="improved"), r"is a checkpoint of model 'lite', not 'improved'"),
    ("lr 0.2, resume", dict(lr=0.2), r"different config \(lr: checkpoint 0.05 vs now 0.2\)"),
    ("adam with a constant schedule, resume", dict(optimizer="adam", schedule="constant"),
     r"different config \(optimizer: checkpoint 'sgd' vs now 'adam', "
     r".*schedule: checkpoint 'onecycle' vs now 'constant'\)"),
    ("improved, evaluate", dict(model="improved"),
     r"is a checkpoint of model 'lite', not 'improved'; load the checkpoint of that run"),
    ("epochs 40, evaluate", dict(epochs=40), r"different config \(epochs: checkpoint 1 vs expected 40\)"),
]


@pytest.mark.parametrize("name, given, message", MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_checkpoint_of_another_model_or_config_says_which(checkpoint, tmp_path, monkeypatch, name, given, message):
    ck, saved = checkpoint
    if name.endswith("resume"):
        out = tmp_path / "out"
        put_checkpoint(saved, out)
        before = (out / "checkpoint.pt").read_bytes()
        monkeypatch.setattr(rl, "fit", must_not_run("fit"))
        monkeypatch.setattr(rl, "load_cifar10", must_not_run("load_cifar10"))
        cfg = tiny_config(**{"epochs": 1, **given})
        with pytest.raises(ValueError, match=message) as e:
            job.train_and_evaluate(cfg, out_dir=out, resume=True)
        assert (out / "checkpoint.pt").read_bytes() == before
    else:
        with pytest.raises(ValueError, match=message) as e:
            inference.load_checkpoint(ck, device="cpu", expect=tiny_config(**{"epochs": 1, **given}))
    assert one_error(e).startswith(str(ck if name.endswith("evaluate") else tmp_path / "out" / "checkpoint.pt"))


def test_evaluating_with_the_right_expectation_loads(checkpoint):
    model, saved = inference.load_checkpoint(
        checkpoint[0], device="cpu", expect=tiny_config(epochs=1, device="cuda", tta=True)
    )
    assert rl.count_params(model) == 78_042 and saved["epoch"] == 1  # speed-only fields may differ
    model, _ = inference.load_checkpoint(checkpoint[0], device="cpu", expect={"model": "lite"})


def test_an_unfinished_run_is_not_overwritten_without_resume(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "out"
    ck = put_checkpoint(checkpoint[1], out, epochs=3)  # a 3-epoch run that stopped after epoch 1
    before = ck.read_bytes()
    monkeypatch.setattr(rl, "load_cifar10", must_not_run("load_cifar10"))
    with pytest.raises(ValueError, match=r"holds an unfinished run \(epoch 1 of 3\); continue it with --resume") as e:
        job.train_and_evaluate(tiny_config(epochs=3), out_dir=out)
    assert "RESUME=True" in one_error(e) and "make run RESUME=1" in str(e.value)
    assert ck.read_bytes() == before
    # A finished run may be replaced by a new one (rerunning a notebook): it gets to training.
    put_checkpoint(checkpoint[1], out)

    class Reached(Exception):
        pass

    def reached(*a, **k):
        raise Reached

    monkeypatch.setattr(rl, "load_cifar10", reached)
    with pytest.raises(Reached):
        job.train_and_evaluate(tiny_config(epochs=1), out_dir=out)


# ---------------------------------------------------------------------------------------
# Invalid parameters: library (what a notebook's parameters cell feeds) and command line
# ---------------------------------------------------------------------------------------
WIDE = ((64, 128, 256, 640), (1, 1, 1, 1))  # 6,560,074 parameters: over the budget

# Overrides a papermill parameters cell can produce (-p EPOCHS 0, -r LR fast, ...), not
# repeating tests/test_training.py's list.
INVALID_PARAMS = [
    (dict(model="Lite"), r"model='Lite' is not valid; choose one of: lite, improved"),
    (dict(model="resnet18"), r"choose one of: lite, improved"),
    (dict(optimizer="SGD"), r"optimizer='SGD' is not valid; choose one of: sgd, adam, adamw"),
    (dict(optimizer="adagrad"), r"choose one of: sgd, adam, adamw"),
    (dict(epochs=-3), r"epochs=-3 must be a positive integer"),
    (dict(epochs=2.5), r"epochs=2.5 must be a positive integer"),
    (dict(epochs="40"), r"epochs='40' must be a positive integer"),  # papermill -r passes strings
    (dict(batch_size=0), r"batch_size=0 must be a positive integer"),
    (dict(batch_size=True), r"batch_size=True must be a positive integer"),
    (dict(lr="0.1"), r"lr='0.1' must be a finite, non-negative number"),
    (dict(lr=float("inf")), r"lr=inf must be a finite, non-negative number"),
    (dict(lr=-0.1), r"lr=-0.1 must be a finite, non-negative number"),
    (dict(lr=0), r"lr must be positive"),
    (dict(cutout=1000), r"cutout=1000 must be at most 32, the image size \(0 turns it off\)"),
    (dict(warmup_epochs=1e308), r"warmup_epochs=1e\+308 must be at most 1,000,000"),
    (dict(seed=10**23), r"seed=100000000000000000000000 must be below 2\*\*63"),
    (dict(model="wide"),
     r"model='wide' has 6,560,074 parameters, over the 5,000,000 budget; "
     r"choose one of: lite, improved, or set allow_over_budget=True"),
]


@pytest.mark.parametrize("overrides, message", INVALID_PARAMS, ids=[repr(o) for o, _ in INVALID_PARAMS])
def test_invalid_parameters_are_rejected_before_training(overrides, message, tmp_path, monkeypatch, no_training):
    monkeypatch.setitem(rl.ARCHS, "wide", WIDE)  # an architecture a user added, over the budget
    with pytest.raises(rl.ConfigError, match=message) as e:
        rl.TrainConfig.from_recipe("modern", **overrides)
    one_error(e)
    # A notebook that edits a valid config after building it is caught by train_and_evaluate
    # before the output folder, the data or training are touched.
    cfg = tiny_config()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    with pytest.raises(rl.ConfigError, match=message):
        job.train_and_evaluate(cfg, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_over_budget_is_allowed_only_when_asked(monkeypatch):
    monkeypatch.setitem(rl.ARCHS, "wide", WIDE)
    cfg = rl.TrainConfig.from_recipe("modern", model="wide", allow_over_budget=True)
    assert rl.count_params(rl.build_model(cfg.model, allow_over_budget=True)) > rl.PARAM_BUDGET
    with pytest.raises(budget.BudgetError, match=r"over the 5,000,000 budget"):
        rl.build_model("wide")


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


# CLI arguments after `train` (the base arguments point at no data, so a check that came
# after data loading would fail differently). Message: regexes that must all be in stderr.
INVALID_CLI = [
    (["--model", "vgg"], [r"invalid choice: 'vgg'", r"lite", r"improved"]),
    (["--optimizer", "rmsprop"], [r"invalid choice: 'rmsprop'", r"sgd", r"adamw"]),
    (["--recipe", "fancy"], [r"invalid choice: 'fancy'", r"report", r"modern"]),
    (["--schedule", "step"], [r"invalid choice: 'step'", r"onecycle"]),
    (["--epochs", "0"], [r"^error: epochs=0 must be a positive integer$"]),
    (["--epochs", "-5"], [r"^error: epochs=-5 must be a positive integer$"]),
    (["--epochs", "ten"], [r"argument --epochs: invalid int value: 'ten'"]),
    (["--batch-size", "0"], [r"^error: batch_size=0 must be a positive integer$"]),
    (["--lr", "fast"], [r"argument --lr: invalid float value: 'fast'"]),
    (["--lr", "nan"], [r"^error: lr=nan must be a finite, non-negative number$"]),
    (["--lr", "-1"], [r"^error: lr=-1.0 must be a finite, non-negative number$"]),
    (["--device", "tpu"], [r"^error: device='tpu' is not valid; choose one of: auto, cpu, cuda, mps"]),
    (["--cutout", "1000"], [r"^error: cutout=1000 must be at most 32, the image size"]),
    (["--warmup-epochs", "1e308"], [r"^error: warmup_epochs=1e\+308 must be at most 1,000,000$"]),
    (["--seed", "1" + "0" * 23], [r"^error: seed=100000000000000000000000 must be below 2\*\*63"]),
    (["--device", "cuda:abc"],
     [r"^error: device='cuda:abc' is not valid; choose one of: auto, cpu, cuda, mps, or cuda:N$"]),
    (["--val-size", "2.5"], [r"^error: val_size=2.5 must be 0, a fraction below 1, or a whole number"]),
    (["--model", "wide"],
     [r"^error: model='wide' has 6,560,074 parameters, over the 5,000,000 budget; choose one of: lite, improved"]),
]


@pytest.mark.parametrize("args, messages", INVALID_CLI, ids=[" ".join(a) for a, _ in INVALID_CLI])
def test_cli_rejects_invalid_parameters_before_training(args, messages, tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.setitem(rl.ARCHS, "wide", WIDE)  # --model choices come from ARCHS
    out = tmp_path / "out"
    code, err = run_main(["train", "--data-dir", str(tmp_path / "nowhere"), "--no-download", "--out", str(out),
                          "--quiet", "--device", "cpu", *args], capsys)
    assert code == 2
    for m in messages:
        assert any(re.search(m, line) for line in err.splitlines()), (m, err)
    assert "Traceback" not in err and not out.exists()


def test_cli_invalid_parameter_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "resnet_lib.py"), "train", "--epochs", "0", "--out",
                           str(tmp_path / "out"), "--data-dir", str(tmp_path / "nowhere"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr == "error: epochs=0 must be a positive integer\n"
    assert not (tmp_path / "out").exists()


def test_cli_resume_with_another_config_says_which_and_keeps_the_checkpoint(checkpoint, tmp_path, capsys, no_training):
    out = tmp_path / "out"
    cli_cfg = rl.TrainConfig.from_recipe("modern", epochs=1, device="cpu")
    ck = put_checkpoint(checkpoint[1], out, **dataclasses.asdict(cli_cfg))
    before = ck.read_bytes()
    base = ["train", "--resume", "--epochs", "1", "--device", "cpu", "--out", str(out), "--quiet", "--no-download",
            "--data-dir", str(tmp_path / "nowhere")]
    code, err = run_main(base + ["--lr", "0.2"], capsys)
    assert code == 2 and err.startswith(
        f"error: {ck} was written with a different config (lr: checkpoint 0.1 vs now 0.2)"
    )
    code, err = run_main(base + ["--model", "improved"], capsys)
    assert code == 2 and err.startswith(f"error: {ck} is a checkpoint of model 'lite', not 'improved'")
    assert ck.read_bytes() == before


# Parameters given to a notebook through papermill: the notebook must stop in its
# configuration cell (before data loading and training) with the library's message.
NOTEBOOK = ROOT / "notebooks" / "02_train_lite.ipynb"
A_FILE = "<a file>"  # replaced by the path of a regular file: a folder that cannot be created
NOTEBOOK_CASES = [
    ({"MODEL": "vgg"}, "ConfigError", r"model='vgg' is not valid; choose one of: lite, improved"),
    ({"LR": "fast"}, "ValueError", r"^LR='fast' is not a number"),  # its annotation (Optional[float]) says so
    ({"RESULTS_DIR": A_FILE}, "OSError", r"cannot write to .*: .*results is a file, not a folder"),
    ({"FIGURES_DIR": A_FILE}, "OSError", r"cannot write to .*: .*figures is a file, not a folder"),
    # resnet_tools.notebook.list_parameter: the parameter named, its forms listed; a seed twice would train twice
    ({"SEEDS": "0;touch X"}, "ValueError", r"^SEEDS='0;touch X' is not a list of integers: write 0,1,2 or"),
    ({"SEEDS": [0, 0]}, "ValueError", r"^SEEDS=\[0, 0\] repeats 0: give each once"),
]


@pytest.mark.parametrize("params, ename, message", NOTEBOOK_CASES, ids=[repr(p) for p, _, _ in NOTEBOOK_CASES])
def test_notebook_rejects_bad_parameters_in_its_configuration_cell(tmp_path, monkeypatch, params, ename, message):
    import nbformat
    import papermill

    monkeypatch.setenv("SMOKE", "1")
    monkeypatch.setenv("DATA_DIR", str(write_cifar(tmp_path / "data", per_batch=20, n_test=20)))
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    params = dict(params)
    for name, value in params.items():
        if value == A_FILE:
            params[name] = str(tmp_path / name.split("_")[0].lower())
            Path(params[name]).write_text("a file where a folder should be")
    out = tmp_path / "executed.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=params, kernel_name="python3",
                                   cwd=str(ROOT), progress_bar=False)
    assert e.value.ename == ename and re.search(message, e.value.evalue), (e.value.ename, e.value.evalue)
    cells = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    config_cell = next(i for i, c in enumerate(cells) if "TrainConfig.from_recipe" in c.source)
    first_load = next(i for i, c in enumerate(cells) if "load_cifar10" in c.source)
    failed = next(i for i, c in enumerate(cells) if any(o.output_type == "error" for o in c.outputs))
    assert config_cell < first_load and failed <= config_cell, (
        f"failed in code cell {failed}, after the configuration cell {config_cell}: {cells[failed].source[:80]!r}")
    assert not list(tmp_path.rglob("checkpoint.pt")) and not list(tmp_path.rglob("results.json"))


# ---------------------------------------------------------------------------------------
# Output folders that cannot be written
# ---------------------------------------------------------------------------------------
def out_is_a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "results").write_text("a file where the results folder should be")
    return tmp / "results", r"cannot write to .*results: .*results is a file, not a folder"


def parent_is_a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "figures").write_text("")
    return tmp / "figures" / "run1", r"cannot write to .*figures/run1: .*figures is a file, not a folder"


def permission_denied(tmp: Path, monkeypatch=None) -> tuple[Path, str]:
    # The tests may run as root, for whom chmod does not forbid writing: the refusal is
    # injected where the check writes its probe file.
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    return tmp / "readonly", r"cannot write to .*readonly \(Permission denied\); choose another output folder"


UNWRITABLE = [out_is_a_file, parent_is_a_file, permission_denied]
UNWRITABLE_USES = ["train_and_evaluate out_dir", "CLI --out", "figures folder check"]


@pytest.mark.parametrize("use", UNWRITABLE_USES)
@pytest.mark.parametrize("make", UNWRITABLE)
def test_unwritable_folder_fails_before_training(tmp_path, capsys, monkeypatch, no_training, make, use):
    folder, message = make(tmp_path, monkeypatch) if make is permission_denied else make(tmp_path)
    if use == "train_and_evaluate out_dir":
        with pytest.raises(OSError, match=message) as e:
            job.train_and_evaluate(tiny_config(), out_dir=folder)
        one_error(e)
    elif use == "CLI --out":
        code, err = run_main(["train", "--out", str(folder), "--quiet", "--no-download", "--data-dir",
                              str(tmp_path / "nowhere")], capsys)
        assert code == 2 and re.match("error: " + message, err), err
    else:  # what a notebook's parameters cell calls for FIGURES_DIR
        with pytest.raises(OSError, match=message):
            rl.check_writable(folder)


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
# Resuming on other data; a second run in the same folder; devices this machine lacks
# ---------------------------------------------------------------------------------------
# (what the resuming run is given, expected message; None: the same data, moved: it resumes)
OTHER_DATA = [
    ("other images, same counts", dict(seed=1),
     r"was trained on other data: .*\(200 training, 100 test images\); this run has .*other\S* "
     r"\(200 training, 100 test images\) \(the same number of images, but different images or labels\)"),
    ("fewer training images", dict(per_batch=30),
     r"was trained on other data: .*; this run has .*\(150 training, 100 test images\) "
     r"\(a different number of images\)"),
    ("the same data in another folder", dict(), None),
]


@pytest.mark.parametrize("name, given, message", OTHER_DATA, ids=[c[0] for c in OTHER_DATA])
def test_resume_on_other_data_is_refused_naming_both(checkpoint, tmp_path, name, given, message):
    out = tmp_path / "out"
    ck = put_checkpoint(checkpoint[1], out, epochs=2)  # an unfinished 2-epoch run on the fixture's data
    before = ck.read_bytes()
    with pytest.warns(UserWarning, match="not the official"):
        other = rl.load_cifar10(write_cifar(tmp_path / "other", **given), download=False)
    if message is None:
        _, res = job.train_and_evaluate(tiny_config(epochs=2), data=other, out_dir=out, resume=True, progress=False)
        assert res["history"]["epoch"] == [1, 2] and checkpoints.load_checkpoint_dict(ck)["data"]["root"] == other.root
        return
    with pytest.raises(ValueError, match=message) as e:
        job.train_and_evaluate(tiny_config(epochs=2), data=other, out_dir=out, resume=True, progress=False)
    assert one_error(e).startswith(f"{ck} was trained on other data") and "use another output folder" in str(e.value)
    assert ck.read_bytes() == before


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


# Devices the machine lacks or that are malformed: one line from the CLI, before any loading.
ABSENT_DEVICES = ["cuda:99", "cuda:x", "mps", "cuda"]


@pytest.mark.parametrize("command", ["train", "predict"])
@pytest.mark.parametrize("device", ABSENT_DEVICES)
def test_cli_refuses_a_device_this_machine_lacks_before_loading(tmp_path, capsys, monkeypatch, no_training, command,
                                                               device):
    if device == "cuda" and torch.cuda.is_available() or device == "mps" and devices.mps_available():
        pytest.skip(f"this machine has {device}")
    import resnet_tools.cli as cli

    for name in ("load_for_inference_with_config", "read_unlabeled"):
        monkeypatch.setattr(cli, name, must_not_run(name))
    if command == "train":
        argv = ["train", "--out", str(tmp_path / "out"), "--quiet", "--no-download", "--data-dir",
                str(tmp_path / "nowhere"), "--device", device]
    else:
        argv = ["predict", "--checkpoint", str(tmp_path / "ck.pt"), "--input", str(tmp_path / "x.npy"), "--out",
                str(tmp_path / "s.csv"), "--device", device]
    code, err = run_main(argv, capsys)
    assert code == 2 and err.startswith(f"error: device={device!r}") and err.count("\n") == 1, err
    assert "choose" in err or "CUDA GPU(s)" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.csv").exists()


# ---------------------------------------------------------------------------------------
# Outputs that are inputs; submission ids that break a CSV
# ---------------------------------------------------------------------------------------
def _hardlink(target: Path, link: Path) -> Path:
    os.link(target, link)
    return link


def _symlink(target: Path, link: Path) -> Path:
    link.symlink_to(target)
    return link


# (command, which input the output names, how)
SAME_FILE = [
    ("predict", "checkpoint", "same path"),
    ("predict", "checkpoint", "symlink"),
    ("predict", "input", "same path"),
    ("predict", "input", "path with ./ and ..", ),
    ("export", "checkpoint", "same path"),
    ("export", "checkpoint", "hard link"),
    ("export (library)", "checkpoint", "same path"),
]


@pytest.mark.parametrize("command, which, how", SAME_FILE, ids=[" / ".join(c) for c in SAME_FILE])
def test_output_that_is_an_input_is_refused(checkpoint, tmp_path, capsys, command, which, how):
    ck = tmp_path / "ck.pt"
    ck.write_bytes(checkpoint[0].read_bytes())
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 32, 32, 3), np.uint8))
    target = ck if which == "checkpoint" else x
    out = {"same path": lambda: target, "symlink": lambda: _symlink(target, tmp_path / "link.csv"),
           "hard link": lambda: _hardlink(target, tmp_path / "m.safetensors"),
           "path with ./ and ..": lambda: tmp_path / "sub" / ".." / "." / target.name}[how]()
    (tmp_path / "sub").mkdir()
    before = {p: p.read_bytes() for p in (ck, x)}
    message = rf"the output {re.escape(str(out))} is the same file as the {which} {re.escape(str(target))}"
    if command == "export (library)":
        with pytest.raises(ValueError, match=message):
            inference.export_safetensors(ck, out)
    else:
        extra = ["--input", str(x)] if command == "predict" else []
        code, err = run_main([command, "--checkpoint", str(ck), *extra, "--out", str(out)], capsys)
        assert code == 2 and re.match("error: " + message, err) and err.count("\n") == 1, err
    assert {p: p.read_bytes() for p in (ck, x)} == before


# ids given to write_submission: (ids, None: written, read back by csv as given / regex of the refusal)
CSV_IDS = [
    (["a,b", 'say "hi"', "plain"], None),
    ([-3, "+1.5", "-2e3", 7], None),
    (["ok", "two\nlines"], r"id 'two\\nlines' \(row 2\) contains a line break"),
    (["ok", "car\rriage"], r"id 'car\\rriage' \(row 2\) contains a line break"),
    (["=HYPERLINK(\"http://x\",\"y\")"], r"id '=HYPERLINK.*' \(row 1\) starts with '=': a spreadsheet would run it"),
    (["1", "+cmd|' /C calc'!A0"], r"\(row 2\) starts with '\+'"),
    (["-2+3+cmd|' /C calc'!A0"], r"starts with '-'"),
    (["@SUM(A1:A9)"], r"starts with '@'"),
    (["\t=1+1"], r"starts with '\\t'"),
]


@pytest.mark.parametrize("ids, refusal", CSV_IDS, ids=[repr(i) for i, _ in CSV_IDS])
def test_submission_ids_that_would_break_the_csv(tmp_path, ids, refusal):
    import csv

    path = tmp_path / "sub.csv"
    path.write_text("ID,Labels\nprevious,1\n")
    labels = torch.arange(len(ids)) % 10
    if refusal is None:
        inference.write_submission(path, ids, labels)
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        assert rows == [["ID", "Labels"]] + [[str(i), str(c)] for i, c in zip(ids, labels.tolist())]
        assert "\r" not in path.read_text()
    else:
        with pytest.raises(ValueError, match=refusal):
            inference.write_submission(path, ids, labels)
        assert path.read_text() == "ID,Labels\nprevious,1\n"


def test_submission_warns_on_duplicate_and_missing_ids(tmp_path):
    path = tmp_path / "sub.csv"
    with pytest.warns(UserWarning) as caught:
        inference.write_submission(path, [1, 2, 2, None, float("nan"), 3, 1], torch.zeros(7, dtype=torch.long))
    messages = [str(w.message) for w in caught]
    assert any("2 empty id(s), first at row 4" in m for m in messages), messages
    assert any("2 duplicate id(s) ('1', '2')" in m for m in messages), messages
    assert path.read_text().splitlines()[4:6] == [",0", ",0"]
    with pytest.raises(ValueError, match=r"3 ids for 2 labels"):
        inference.write_submission(path, [1, 2, 3], torch.zeros(2))


def test_cli_predict_refuses_a_formula_id_and_writes_nothing(checkpoint, tmp_path, capsys):
    with open(tmp_path / "x.pkl", "wb") as f:
        pickle.dump({"data": np.zeros((2, 32, 32, 3), np.uint8), "ids": ["img1", "=1+1"]}, f)
    code, err = run_main(["predict", "--checkpoint", str(checkpoint[0]), "--input", str(tmp_path / "x.pkl"), "--out",
                          str(tmp_path / "s.csv"), "--device", "cpu"], capsys)
    assert code == 2 and "id '=1+1' (row 2) starts with '='" in err and not (tmp_path / "s.csv").exists()


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
# Non-finite or malformed weights and statistics; damaged exports; bad prediction inputs
# ---------------------------------------------------------------------------------------
def _stats(mean: list, std: list) -> Callable[[dict, dict], None]:
    def change(state: dict, meta: dict) -> None:
        meta["stats"] = json.dumps({"mean": mean, "std": std})

    return change


def _weight(value: float) -> Callable[[dict, dict], None]:
    def change(state: dict, meta: dict) -> None:
        state["fc.weight"] = state["fc.weight"].clone()
        state["fc.weight"][0, 0] = value

    return change


def _meta(**fields: Any) -> Callable[[dict, dict], None]:
    def change(state: dict, meta: dict) -> None:
        for k, v in fields.items():
            meta.pop(k) if v is None else meta.__setitem__(k, v)

    return change


NAN = float("nan")
BAD_EXPORTS = [
    ("NaN mean", _stats([NAN, 0.5, 0.5], [0.2, 0.2, 0.2]), r"invalid normalization statistics .*'mean': \[nan"),
    ("zero std", _stats([0.5] * 3, [0.0, 0.2, 0.2]), r"invalid normalization statistics .*positive, finite std"),
    ("infinite std", _stats([0.5] * 3, [float("inf")] * 3), r"invalid normalization statistics"),
    ("1-channel stats", _stats([0.5], [0.2]), r"invalid normalization statistics .*each of the 3 channels"),
    ("stats as strings", _stats(["0.5"] * 3, [0.2] * 3), r"invalid normalization statistics"),
    ("a NaN weight", _weight(NAN), r"weight 'fc.weight' holds 1 NaN or infinite value\(s\); refusing to load it"),
    ("an infinite weight", _weight(float("-inf")), r"weight 'fc.weight' holds 1 NaN or infinite"),
    ("no stats in the metadata", _meta(stats=None), r"metadata has no 'stats' \(found \['config', 'format'"),
    ("no config in the metadata", _meta(config=None), r"metadata has no 'config'"),
    ("config not JSON", _meta(config="{model: lite"), r"metadata 'config' is not valid JSON: '\{model: lite'"),
    ("config a JSON list", _meta(config="[1, 2]"), r"metadata 'config' must be a JSON object, got list"),
    ("no num_params", _meta(num_params=None), r"metadata says None\), but model 'lite' has 78,042"),
]


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> tuple[dict, dict]:
    """(tensors, metadata) of the checkpoint fixture's safetensors export."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = inference.export_safetensors(checkpoint[0], tmp_path_factory.mktemp("export") / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        return load_file(str(path)), dict(f.metadata())


@pytest.mark.parametrize("name, change, message", BAD_EXPORTS, ids=[c[0] for c in BAD_EXPORTS])
def test_bad_export_is_refused_naming_what(exported, tmp_path, capsys, name, change, message):
    from safetensors.torch import save_file

    state, meta = dict(exported[0]), dict(exported[1])
    change(state, meta)
    path = tmp_path / "m.safetensors"
    save_file(state, str(path), metadata=meta)
    with pytest.raises(ValueError, match=message) as e:
        inference.load_pretrained(path, device="cpu")
    assert one_error(e).startswith(f"{path}: ")
    np.save(tmp_path / "x.npy", np.zeros((3, 32, 32, 3), np.uint8))
    code, err = run_main(["predict", "--checkpoint", str(path), "--input", str(tmp_path / "x.npy"), "--out",
                          str(tmp_path / "s.csv"), "--device", "cpu"], capsys)
    assert code == 2 and err.count("\n") == 1 and re.search(message, err) and not (tmp_path / "s.csv").exists()


# (name, change to the checkpoint dict, message): written without checksums, as by hand
BAD_CHECKPOINT_VALUES = [
    ("a NaN weight", lambda s: {**s["model_state"], "fc.bias": torch.full((10,), NAN)}, None,
     r"weight 'fc.bias' holds 10 NaN or infinite"),
    ("zero std", None, {"mean": [0.5] * 3, "std": [0.0] * 3}, r"invalid normalization statistics"),
    ("1-channel stats", None, {"mean": [0.5], "std": [0.2]}, r"invalid normalization statistics"),
]


@pytest.mark.parametrize("name, state, stats, message", BAD_CHECKPOINT_VALUES,
                         ids=[c[0] for c in BAD_CHECKPOINT_VALUES])
def test_checkpoint_with_non_finite_weights_or_bad_stats_is_refused(checkpoint, tmp_path, name, state, stats, message):
    saved = variant(checkpoint[1], sha256=None, **({"model_state": state} if state else {}),
                    **({"stats": stats} if stats else {}))
    torch.save(saved, tmp_path / "ck.pt")
    with pytest.raises(ValueError, match=message) as e:
        inference.load_checkpoint(tmp_path / "ck.pt", device="cpu")
    assert one_error(e).startswith(str(tmp_path / "ck.pt"))


def test_predict_refuses_non_finite_outputs():
    model = rl.build_model("lite", seed=0)
    with torch.no_grad():
        model.fc.bias[2] = float("inf")
        model.fc.bias[3] = float("-inf")  # inf - inf: NaN logits
    with pytest.raises(ValueError, match=r"NaN or infinite outputs for 4 of 4 images \(first: image 0\)"):
        inference.predict(model, torch.zeros(4, 3, 32, 32, dtype=torch.uint8))


def test_exports_and_checkpoints_are_recognised_by_content_not_name(checkpoint, tmp_path, capsys):
    wrong = tmp_path / "model.pt"  # an export under a checkpoint's name
    inference.export_safetensors(checkpoint[0], tmp_path / "m.safetensors").rename(wrong)
    ck_as_st = tmp_path / "ck.safetensors"  # a checkpoint under an export's name
    ck_as_st.write_bytes(checkpoint[0].read_bytes())
    np.save(tmp_path / "x.npy", np.zeros((3, 32, 32, 3), np.uint8))
    outs = []
    for i, model in enumerate([wrong, ck_as_st]):
        code, err = run_main(["predict", "--checkpoint", str(model), "--input", str(tmp_path / "x.npy"), "--out",
                              str(tmp_path / f"s{i}.csv"), "--device", "cpu"], capsys)
        assert code == 0, err
        outs.append((tmp_path / f"s{i}.csv").read_text())
    assert outs[0] == outs[1]
    blob = wrong.read_bytes()
    damaged = tmp_path / "damaged.pt"  # a damaged export, under a checkpoint's name: not "may be malicious"
    for content in (blob[: len(blob) // 2], (10**12).to_bytes(8, "little") + blob[8:200]):
        damaged.write_bytes(content)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(damaged))}: not a readable safetensors file \("):
            inference.load_for_inference(damaged, device="cpu")


def _npy_claiming(shape: tuple, payload: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            f.write(payload)

    return write


def _pickled(obj: Any) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(pickle.dumps(obj, protocol=4))


# (name, file name, writer, message): prediction inputs that used to escape as tracebacks
BAD_PREDICT_INPUTS = [
    ("npy header claiming 10^10 images", "x.npy", _npy_claiming((10**10, 32, 32, 3), b"\0" * 100),
     r"header says shape \(10000000000, 32, 32, 3\) of uint8 \(30,720,000,000,000 bytes\), but the file holds 100"),
    ("npy truncated", "x.npy", _npy_claiming((4, 32, 32, 3), b"\0" * 5000),
     r"file holds 5,000 bytes of data; truncated"),
    ("npy of Python objects", "x.npy", lambda p: np.save(p, np.array([1, "a"], dtype=object), allow_pickle=True),
     r"holds Python objects, not uint8 images"),
    ("npy that is text", "x.npy", lambda p: p.write_text("id,image\n"), r"not a readable .npy file"),
    ("pickle frame length overflow", "x.pkl", lambda p: p.write_bytes(HUGE_FRAME),
     r"unreadable pickle \(OverflowError"),
    ("object-dtype data", "x.pkl", _pickled({"data": np.array([1, "a", None], dtype=object)}),
     r"'data' must be a uint8 array of images, got an array of object"),
    ("ragged lists as data", "x.pkl", _pickled({"data": [[1, 2], [3]]}),
     r"'data' must be a uint8 array of images, got list"),
    ("data a string", "x.pkl", _pickled({"data": "images.png"}), r"'data' must be a uint8 array of images, got str"),
    ("a scalar id", "x.pkl", _pickled({"data": np.zeros((2, 3072), np.uint8), "ids": 5}),
     r"'ids' must be a list of 2 ids, one per image, got int 5"),
    ("ids a string", "x.pkl", _pickled({"data": np.zeros((2, 3072), np.uint8), "ids": "ab"}),
     r"'ids' must be a list of 2 ids, one per image, got str"),
]


@pytest.mark.parametrize("name, filename, write, message", BAD_PREDICT_INPUTS, ids=[c[0] for c in BAD_PREDICT_INPUTS])
def test_bad_prediction_input_gives_one_clear_error(tmp_path, name, filename, write, message):
    path = tmp_path / filename
    write(path)
    with pytest.raises(errors.DataError, match=message) as e:
        inference.read_unlabeled(path)
    assert one_error(e).startswith(f"{path}: ")


# ---------------------------------------------------------------------------------------
# Symlink loops (a link that leads back to itself), where data is read or results written
# ---------------------------------------------------------------------------------------
def _loop(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.name)  # relative: resolves to itself
    return path


SYMLINK_LOOPS = ["data folder", "a batch file", "output folder", "parent of the output folder (CLI)"]


@pytest.mark.parametrize("where", SYMLINK_LOOPS)
def test_symlink_loop_is_named_as_a_loop(tmp_path, capsys, monkeypatch, where):
    import torchvision.datasets.utils as tvu

    monkeypatch.setattr(tvu, "download_and_extract_archive", must_not_run("the download"))
    if where == "data folder":
        loop = _loop(tmp_path / "data")
        message = rf"^{re.escape(str(loop))} is a symlink loop .*not CIFAR-10 data"
        with pytest.raises(errors.DataError, match=message) as e:
            rl.load_cifar10(loop, download=True)
        one_error(e)
    elif where == "a batch file":
        root = write_cifar(tmp_path / "cifar")
        batch_path(root, "data_batch_3").unlink()
        loop = _loop(batch_path(root, "data_batch_3"))
        with pytest.raises(errors.DataError, match=rf"^{re.escape(str(loop))} is a symlink loop"):
            rl.load_cifar10(root, download=True)
    elif where == "output folder":
        loop = _loop(tmp_path / "results")
        monkeypatch.setattr(rl, "load_cifar10", must_not_run("load_cifar10"))
        with pytest.raises(OSError, match=rf"cannot write to .*: {re.escape(str(loop))} is a symlink loop") as e:
            job.train_and_evaluate(tiny_config(), out_dir=loop)
        one_error(e)
    else:
        loop = _loop(tmp_path / "results")
        monkeypatch.setattr(rl, "load_cifar10", must_not_run("load_cifar10"))
        code, err = run_main(["train", "--out", str(loop / "run"), "--quiet", "--device", "cpu", "--no-download"],
                             capsys)
        assert code == 2 and err == (f"error: cannot write to --out {loop / 'run'}: {loop} is a symlink loop (a link "
                                     "that leads back to itself); remove or fix the link, or choose another "
                                     "output folder\n")


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
# What the suite injects and tries, for tests/fault_counts.py and the README
# ---------------------------------------------------------------------------------------
FAULT_CASES: dict[str, list] = {
    "SIGKILL of a training process mid-epoch, then resume": KILL_MID_EPOCH,
    "SIGKILL inside a checkpoint save (mid-write, before the rename)": KILL_IN_SAVE,
    "SIGKILL at a random moment while saving": RANDOM_KILL_SEEDS,
    "disk full during a save (injected)": [test_disk_full_during_a_save_keeps_the_last_checkpoint],
    "a real full disk (1 MiB tmpfs): checkpoint, export and submission saves": [
        test_real_disk_full_keeps_every_previous_file_whole],
    "bits flipped or numbers edited in a saved checkpoint": [c for c in BAD_CHECKPOINTS
                                                             if "checksum mismatch" in c[2]],
    "a second training process in the same output folder (live or dead lock owner)": LOCKS,
    "Ctrl-C during command-line training (after a checkpoint, before the first)": CTRL_C,
    "SIGTERM during command-line training": [test_sigterm_during_cli_training_stops_as_cleanly_as_ctrl_c],
    "loss divergence (NaN mid-run, huge learning rate)": [test_divergence_after_a_good_epoch_keeps_that_checkpoint,
                                                          test_huge_learning_rate_stops_the_cli_with_a_clear_message],
}
BAD_INPUT_CASES: dict[str, list] = {
    "wrong data folders and batch files": BAD_DATA + BAD_DATA_DIRS,
    "damaged batch files (seeded truncations, bytes, bit flips; pickle protocols 2 and 5)": CORRUPTIONS * 2,
    "malicious pickles (batch files and checkpoints)": MALICIOUS
    + [test_cli_refuses_a_malicious_checkpoint_and_runs_nothing],
    "damaged or foreign checkpoints": [c for c in BAD_CHECKPOINTS if "checksum mismatch" not in c[2]]
    + [test_weights_only_checkpoint_cannot_be_resumed],
    "a run resumed on other data": [c for c in OTHER_DATA if c[2] is not None],
    "checkpoints of the other model or another config": MISMATCHES
    + [test_an_unfinished_run_is_not_overwritten_without_resume]
    + ["CLI --resume --lr", "CLI --resume --model"],
    "invalid parameters (library / notebook parameters)": INVALID_PARAMS,
    "invalid command-line parameters": INVALID_CLI + [test_cli_invalid_parameter_in_a_real_process],
    "invalid notebook parameters (papermill) and notebook folders": NOTEBOOK_CASES,
    "unwritable output or figures folders": [(m, u) for m in UNWRITABLE for u in UNWRITABLE_USES],
    "devices this machine lacks or malformed (CLI train and predict)": [(d, c) for d in ABSENT_DEVICES
                                                                        for c in ("train", "predict")],
    "an output path that is an input (same path, symlink, hard link)": SAME_FILE,
    "non-finite or malformed weights and statistics (exports, checkpoints, model outputs)": BAD_EXPORTS
    + BAD_CHECKPOINT_VALUES + [test_predict_refuses_non_finite_outputs],
    "exports and checkpoints under each other's file names": [
        test_exports_and_checkpoints_are_recognised_by_content_not_name],
    "bad prediction inputs (.npy headers, pickle frames, object data, scalar ids)": BAD_PREDICT_INPUTS,
    "symlink loops as data or output folders": SYMLINK_LOOPS,
    "submission ids that break a CSV (line breaks, formulas; commas, quotes)": CSV_IDS
    + [test_submission_warns_on_duplicate_and_missing_ids, test_cli_predict_refuses_a_formula_id_and_writes_nothing],
}
