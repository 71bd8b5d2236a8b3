"""Fault injection, files: data folders that are wrong in the ways users manage, damaged batch files,
malicious pickles (as a batch file and as a checkpoint), checkpoints that are damaged (flipped bits,
edited numbers), foreign, of the other model or of another config, and a run resumed on other data.

Every group of cases is a module-level list that its test is parametrized over; FAULT_CASES and
BAD_INPUT_CASES below collect this module's groups, and tests/fault_counts.py prints their sizes with
those of test_faults_processes.py, test_faults_inputs.py and test_faults_weak.py (the counts quoted in
docs/development.md, "Reliability"). Helpers and fixtures shared with those: tests/faults_common.py.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import os
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest
import torch

import resnet_lib as rl
from resnet_tools.dataset import CLASSES
from resnet_tools import checkpoints, cifarfiles, errors, inference, job
from conftest import ROOT, synthetic_images, tiny_config, write_cifar
from faults_common import FOLDER, HUGE_FRAME, batch_path, must_not_run, one_error, run_main, variant
from faults_common import checkpoint, no_training, one_torch_thread  # noqa: F401 - fixtures


# ---------------------------------------------------------------------------------------
# Data folders that are wrong in the ways users manage
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# Resuming on other data
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


# ---------------------------------------------------------------------------------------
# What this module injects and tries, for tests/fault_counts.py and the README
# ---------------------------------------------------------------------------------------
FAULT_CASES: dict[str, list] = {
    "bits flipped or numbers edited in a saved checkpoint": [c for c in BAD_CHECKPOINTS
                                                             if "checksum mismatch" in c[2]],
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
}
