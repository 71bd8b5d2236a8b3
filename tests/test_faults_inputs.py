"""Fault injection, inputs and outputs: invalid parameters (library, command line, notebooks through
papermill), output folders that cannot be written, devices this machine lacks or malformed, outputs
that are inputs, CSV-breaking submission ids, non-finite or malformed weights and statistics, damaged
exports, bad prediction inputs and symlink loops. Skipped only where the machine cannot run a case,
with the reason: a device-refusal case is skipped on a machine that has that device.

Every group of cases is a module-level list that its test is parametrized over; BAD_INPUT_CASES below
collects this module's groups, and tests/fault_counts.py prints their sizes with those of
test_faults_processes.py, test_faults_files.py and test_faults_weak.py (the counts quoted in
docs/development.md, "Reliability"). Helpers and fixtures shared with those: tests/faults_common.py.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import resnet_lib as rl
from resnet_tools import budget, errors, inference, job
from conftest import ROOT, tiny_config, write_cifar
from resnet_tools import devices
from faults_common import HUGE_FRAME, batch_path, must_not_run, one_error, run_main, variant
from faults_common import checkpoint, no_training, one_torch_thread  # noqa: F401 - fixtures


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
# Devices this machine lacks
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# What this module injects and tries, for tests/fault_counts.py and the README
# ---------------------------------------------------------------------------------------
FAULT_CASES: dict[str, list] = {}
BAD_INPUT_CASES: dict[str, list] = {
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
