"""Fault injection, continued (issue 29's weak cases): output paths that cannot be written (dangling
symlinks, folders where a file is wanted, names that are not UTF-8), a results folder made read-only
mid-run, and notebook parameters of the wrong form. Each is one line naming the setting to change, no
traceback, before any work. FAULT_CASES and BAD_INPUT_CASES below join those of the other
test_faults_*.py modules in tests/fault_counts.py's counts.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import nbformat
import pytest
import torch

import resnet_lib as rl
import resnet_tools.cli as cli
from conftest import ROOT, tiny_config, write_cifar
from resnet_tools import job, safeio
from resnet_tools.checkpoints import load_checkpoint_dict
from resnet_tools.notebook import from_env, list_parameter, notebook_parameter, notebook_parameters
from faults_common import must_not_run, one_error, run_main


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread, as in faults_common.py: two spinning threads slow a 2-core CPU down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A one-epoch Lite checkpoint trained on a tiny synthetic set."""
    out = tmp_path_factory.mktemp("trained")
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        data = rl.load_cifar10(write_cifar(out / "cifar", per_batch=20, n_test=20), download=False)
    job.train_and_evaluate(tiny_config(epochs=1, tta=False), data=data, out_dir=out / "run", progress=False)
    return out / "run" / "checkpoint.pt"


def non_utf8(parent: Path, name: bytes) -> Path:
    """A path whose last part holds bytes that are not UTF-8, as a shell passes them (surrogates)."""
    return Path(os.fsdecode(os.fsencode(str(parent)) + b"/" + name))


# ---------------------------------------------------------------------------------------
# Output folders (train --out, train_and_evaluate's out_dir, the notebooks' RESULTS_DIR)
# ---------------------------------------------------------------------------------------
def dangling_link(tmp: Path) -> tuple[Path, str]:
    (tmp / "results").symlink_to(tmp / "gone")
    return tmp / "results", r": .*results is a symlink to .*gone, which does not exist; create that folder"


def dangling_parent(tmp: Path) -> tuple[Path, str]:
    (tmp / "drive").symlink_to(tmp / "unmounted")
    return tmp / "drive" / "run", r": .*drive is a symlink to .*unmounted, which does not exist"


def not_utf8_name(tmp: Path) -> tuple[Path, str]:
    return non_utf8(tmp, b"out\xff"), r": its name is not valid UTF-8 \(TensorBoard cannot write there\)"


BAD_OUT_DIRS = [dangling_link, dangling_parent, not_utf8_name]
OUT_DIR_USES = ["CLI train --out", "train_and_evaluate out_dir", "check_writable (RESULTS_DIR, FIGURES_DIR)"]


@pytest.mark.parametrize("use", OUT_DIR_USES)
@pytest.mark.parametrize("make", BAD_OUT_DIRS)
def test_output_folder_that_cannot_be_one_is_named_before_training(tmp_path, capsys, monkeypatch, make, use):
    folder, message = make(tmp_path)
    shown = re.escape(safeio.shown_path(folder))
    monkeypatch.setattr(rl, "load_cifar10", must_not_run("load_cifar10"))
    monkeypatch.setattr(rl, "fit", must_not_run("fit"))
    if use == "CLI train --out":
        code, err = run_main(["train", "--out", str(folder), "--quiet", "--device", "cpu", "--no-download"], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and re.match(f"error: cannot write to --out {shown}{message}",
                                                                     err), err
    else:
        with pytest.raises(OSError, match=f"^cannot write to {shown}{message}") as e:
            if use == "train_and_evaluate out_dir":
                job.train_and_evaluate(tiny_config(), out_dir=folder)
            else:
                rl.check_writable(folder)
        assert "\n" not in one_error(e)


# ---------------------------------------------------------------------------------------
# Output files (predict, evaluate and export --out): refused before the model is loaded
# ---------------------------------------------------------------------------------------
def out_is_a_folder(tmp: Path) -> tuple[Path, str]:
    (tmp / "sub.csv").mkdir()
    return tmp / "sub.csv", r": it is a folder; give the file's name"


def file_parent_is_a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "outputs").write_text("")
    return tmp / "outputs" / "sub.csv", r": .*outputs is a file, not a folder"


def file_parent_dangling(tmp: Path) -> tuple[Path, str]:
    (tmp / "outputs").symlink_to(tmp / "gone")
    return tmp / "outputs" / "sub.csv", r": .*outputs is a symlink to .*gone, which does not exist"


def file_folder_unwritable(tmp: Path, monkeypatch) -> tuple[Path, str]:
    # The tests may run as root, for whom chmod forbids nothing: the refusal is injected at the probe.
    def denied(*a: Any, **k: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    (tmp / "readonly").mkdir()
    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    return tmp / "readonly" / "sub.csv", r": its folder is not writable \(Permission denied\)"


BAD_OUT_FILES = [out_is_a_folder, file_parent_is_a_file, file_parent_dangling, file_folder_unwritable]
FILE_COMMANDS = ["predict", "evaluate", "export"]


@pytest.mark.parametrize("command", FILE_COMMANDS)
@pytest.mark.parametrize("make", BAD_OUT_FILES)
def test_output_file_that_cannot_be_written_is_named_before_any_work(tmp_path, capsys, monkeypatch, make, command):
    for name in ("load_for_inference_with_config", "read_unlabeled", "export_safetensors"):
        monkeypatch.setattr(cli, name, must_not_run(name))
    out, message = make(tmp_path, monkeypatch) if make is file_folder_unwritable else make(tmp_path)
    argv = {"predict": ["--input", str(tmp_path / "x.npy"), "--device", "cpu"],
            "evaluate": ["--data-dir", str(tmp_path / "data"), "--device", "cpu"], "export": []}[command]
    code, err = run_main([command, "--checkpoint", str(tmp_path / "ck.pt"), "--out", str(out), *argv], capsys)
    shown = re.escape(str(out))
    assert code == 2 and len(err.splitlines()) == 1 and re.match(f"error: cannot write to --out {shown}{message}",
                                                                 err), err


def test_predict_to_a_dangling_symlink_replaces_the_link(checkpoint, tmp_path, capsys):
    """A link whose target is gone is replaced by the file, as a file there would be; nothing else."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((3, 32, 32, 3), np.uint8))
    (tmp_path / "sub.csv").symlink_to(tmp_path / "gone.csv")
    code, err = run_main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "x.npy"), "--out",
                          str(tmp_path / "sub.csv"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert not (tmp_path / "sub.csv").is_symlink() and (tmp_path / "sub.csv").read_text().startswith("ID,Labels")


def test_export_and_predict_with_paths_that_are_not_utf8(checkpoint, tmp_path, capsys):
    """safetensors refuses to open a path that is not UTF-8; the export is read as bytes, so both work."""
    import numpy as np

    model = non_utf8(tmp_path, b"model\xe9.safetensors")
    code, err = run_main(["export", "--checkpoint", str(checkpoint), "--out", str(model)], capsys)
    assert code == 0, err
    np.save(tmp_path / "x.npy", np.zeros((3, 32, 32, 3), np.uint8))
    code, err = run_main(["predict", "--checkpoint", str(model), "--input", str(tmp_path / "x.npy"), "--out",
                          str(tmp_path / "sub.csv"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert len((tmp_path / "sub.csv").read_text().splitlines()) == 4


# ---------------------------------------------------------------------------------------
# A results folder made read-only mid-run: the failed checkpoint save is the error, not the lock
# ---------------------------------------------------------------------------------------
def test_folder_made_read_only_mid_run_reports_the_failed_save(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real_mkstemp, real_unlink = tempfile.mkstemp, os.unlink
    state = {"saves": 0}

    def inside(path: Any) -> bool:
        return Path(os.fspath(path)).parent == out

    def mkstemp(*args: Any, dir: Any = None, prefix: str = "", **kwargs: Any) -> Any:  # noqa: A002
        if dir is not None and Path(dir) == out:
            state["saves"] += prefix.startswith("checkpoint.pt.")
            if state["saves"] > 1:  # read-only from epoch 2's checkpoint save on
                raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / f"{prefix}abc.tmp"))
        return real_mkstemp(*args, dir=dir, prefix=prefix, **kwargs)

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if state["saves"] > 1 and inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        code, err = run_main(["train", "--epochs", "3", "--batch-size", "32", "--device", "cpu", "--no-bf16",
                              "--data-dir", str(write_cifar(tmp_path / "cifar", per_batch=20, n_test=20)),
                              "--no-download", "--out", str(out), "--quiet"], capsys)
    assert code == 2 and err == f"error: [Errno 13] Permission denied: '{out / 'checkpoint.pt'}'\n", err
    assert load_checkpoint_dict(out / "checkpoint.pt")["epoch"] == 1  # epoch 1's, whole


def test_lock_that_cannot_be_removed_after_a_good_run_is_one_note(cifar, tmp_path, capsys, monkeypatch):
    real_unlink = os.unlink

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(os.fspath(path)).name == safeio.LOCK_NAME:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    job.train_and_evaluate(tiny_config(epochs=1), data=cifar, out_dir=tmp_path / "out", progress=False)
    notes = [line for line in capsys.readouterr().err.splitlines() if ".lock" in line]
    assert notes == [f"note: could not remove the lock file {tmp_path / 'out' / '.lock'} (Permission denied); the "
                     "next run into this folder takes it over"]


# ---------------------------------------------------------------------------------------
# Notebook parameters: checked by their declared types, one line naming the parameter
# ---------------------------------------------------------------------------------------
SEED_FORMS = r"write 0,1,2 or \[0, 1, 2\] or one integer such as 0"
NOTEBOOK_PARAMETERS = [
    ("SEEDS", "0;touch X", list[int], rf"^SEEDS='0;touch X' is not a list of integers: {SEED_FORMS}$"),
    ("SEEDS", "[0, 0]", list[int], r"^SEEDS='\[0, 0\]' repeats 0: give each once"),
    ("SEEDS", [0, 1, 0], list[int], r"^SEEDS=\[0, 1, 0\] repeats 0: give each once"),
    ("SEEDS", [0.5], list[int], r"^SEEDS=\[0.5\] is not a list of integers"),
    ("SEEDS", "", list[int], r"^SEEDS='' is empty: give at least one"),
    ("SEEDS", "[0, 1", list[int], rf"^SEEDS='\[0, 1' cannot be read as a list of integers: {SEED_FORMS}$"),
    ("RECIPES", "modern,modern", list[str], r"^RECIPES='modern,modern' repeats 'modern'"),
    ("RUNS", "[1, 1]", Optional[list[str]], r"^RUNS='\[1, 1\]' repeats '1'"),
    ("SMOKE", "maybe", bool, r"^SMOKE='maybe' is not a flag: use True or False"),
    ("RESUME", 2, bool, r"^RESUME=2 is not a flag"),
    ("EPOCHS", "two", Optional[int], r"^EPOCHS='two' is not a whole number"),
    ("EPOCHS", 2.5, Optional[int], r"^EPOCHS=2.5 is not a whole number"),
    ("GRAD_CAM_IMAGES", None, int, r"^GRAD_CAM_IMAGES=None is not a whole number"),
    ("LR", "fast", Optional[float], r"^LR='fast' is not a number"),
    ("DATA_DIR", ["data"], Optional[str], r"^DATA_DIR=\['data'\] is not text"),
    ("MODEL", None, str, r"^MODEL=None is not text"),
]


@pytest.mark.parametrize("name, value, declared, message", NOTEBOOK_PARAMETERS,
                         ids=[f"{n}={v!r}" for n, v, _, _ in NOTEBOOK_PARAMETERS])
def test_bad_notebook_parameter_is_one_line_naming_it(name, value, declared, message):
    with pytest.raises(ValueError, match=message) as e:
        notebook_parameter(name, value, declared)
    assert "\n" not in one_error(e)


def test_notebook_parameters_take_what_papermill_and_the_environment_hand_over():
    """papermill -p turns `2024` into an int and `false` stays text; both mean what was typed."""
    given = {"DATA_DIR": (2024, Optional[str], "2024"), "SMOKE": ("false", bool, False), "RESUME": (1, bool, True),
             "EPOCHS": ("3", Optional[int], 3), "LR": ("0.1", Optional[float], 0.1), "VAL_SIZE": (5000, Optional[float],
             5000), "SEEDS": ("0,1,2", list[int], [0, 1, 2]), "RUNS": ("None", Optional[list[str]], None)}
    for name, (value, declared, expected) in given.items():
        got = notebook_parameter(name, value, declared)
        assert got == expected and type(got) is type(expected), (name, got)


def test_list_parameter_names_the_notebook_parameter_it_was_given():
    """The notebooks call list_parameter(SEEDS, int, name="SEEDS"): the error names SEEDS."""
    namespace = {"list_parameter": list_parameter, "SEEDS": "0;touch X"}
    with pytest.raises(ValueError, match=r"^SEEDS='0;touch X' is not a list of integers") as e:
        exec('SEEDS = list_parameter(SEEDS, int, name="SEEDS")', namespace)  # noqa: S102 - the notebooks' own line
    one_error(e)


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_parameter_default_passes_its_declared_type(path):
    """notebook_parameters reads the types the parameters cell declares and keeps their defaults as they are."""
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict[str, Any] = {"from_env": lambda name, default: default, "Optional": Optional}
    exec(cell.source, namespace)  # noqa: S102 - the notebook's own parameters cell
    checked = notebook_parameters(namespace)
    assert checked and set(checked) == {n for n in namespace["__annotations__"] if n.isupper()}
    assert all(json.dumps(checked[n]) == json.dumps(namespace[n]) for n in checked), checked


def run_configuration_start(path: Path, injected: str = "") -> dict[str, Any]:
    """Run a notebook's parameters cell, papermill's injected assignments (`injected`) and its
    configuration cell up to `DATA_DIR = Path(...)`, the first line that uses a parameter's value."""
    code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    lines = code[2].splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("DATA_DIR = "))
    namespace: dict[str, Any] = {"from_env": from_env, "Optional": Optional, "rl": rl}
    for source in (code[1], injected, "\n".join(lines[: end + 1])):
        # dont_inherit: as in the kernel, annotations are types, not this module's postponed text
        exec(compile(source, path.name, "exec", dont_inherit=True), namespace)  # noqa: S102 - the notebook's own
    return namespace


@pytest.mark.parametrize("how", ["environment", "papermill"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_data_dir_2024_is_the_folder_2024_in_every_notebook(path, how, tmp_path, monkeypatch):
    """DATA_DIR=2024 reaches the notebook as the int 2024 (from_env reads a literal; papermill -p
    infers a number): the configuration cell makes it the folder 2024 before Path() sees it."""
    monkeypatch.chdir(tmp_path)
    for name in ("SMOKE", "DATA_DIR", "RESULTS_DIR", "FIGURES_DIR"):
        monkeypatch.delenv(name, raising=False)
    if how == "environment":
        monkeypatch.setenv("DATA_DIR", "2024")
    namespace = run_configuration_start(path, "DATA_DIR = 2024" if how == "papermill" else "")
    assert namespace["DATA_DIR"] == tmp_path.resolve() / "2024"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_parameter_of_the_wrong_type_stops_the_configuration_cell_in_one_line(path, monkeypatch):
    """papermill -p SMOKE maybe: one line naming SMOKE from the configuration cell's first statement."""
    monkeypatch.delenv("SMOKE", raising=False)
    with pytest.raises(ValueError, match=r"^SMOKE='maybe' is not a flag: use True or False") as e:
        run_configuration_start(path, 'SMOKE = "maybe"')
    assert "\n" not in one_error(e)


# ---------------------------------------------------------------------------------------
# For tests/fault_counts.py: joined to the other test_faults_*.py modules' groups
# ---------------------------------------------------------------------------------------
FAULT_CASES: dict[str, list] = {
    "a results folder made read-only mid-run; a lock that cannot be removed": [
        test_folder_made_read_only_mid_run_reports_the_failed_save,
        test_lock_that_cannot_be_removed_after_a_good_run_is_one_note],
}
BAD_INPUT_CASES: dict[str, list] = {
    "output folders that cannot be one (dangling symlinks, names not UTF-8)": [
        (m, u) for m in BAD_OUT_DIRS for u in OUT_DIR_USES],
    "output files that cannot be written (predict, evaluate, export --out)": [
        (m, c) for m in BAD_OUT_FILES for c in FILE_COMMANDS]
    + [test_predict_to_a_dangling_symlink_replaces_the_link, test_export_and_predict_with_paths_that_are_not_utf8],
    "notebook parameters of the wrong form or type (one line naming the parameter)": NOTEBOOK_PARAMETERS
    + [test_list_parameter_names_the_notebook_parameter_it_was_given]
    + [(test_a_parameter_of_the_wrong_type_stops_the_configuration_cell_in_one_line, p) for p in NOTEBOOKS],
}
