"""The notebooks' shared setup cell (Colab, the installed project, parameters from the environment), where
smoke runs write (never into tracked files), and resuming a killed notebook run. Synthetic data only."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
import types
from pathlib import Path
from unittest import mock

import nbformat
import papermill
import pytest
import torch

from conftest import ROOT, write_cifar
from resnet_tools import notebook
from resnet_tools.notebook import from_env

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RUNNER = ROOT / "scripts" / "run_notebooks.py"
SMOKE_DIR = ROOT / "runs" / "smoke"
PLACEHOLDER = "https://github.com/OWNER/compact-resnets-cifar10"
FOLDER_VARS = ("DATA_DIR", "RESULTS_DIR", "FIGURES_DIR")


def setup_source(path: Path = NOTEBOOKS[0]) -> str:
    return next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code").source


def git_status() -> str:
    """Tracked changes and untracked, not ignored, files: what a run must not add to."""
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True)
    return status.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the notebooks' folder variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in FOLDER_VARS}
    return {**env, "PYTHONWARNINGS": "ignore", **extra}


@pytest.fixture
def setup_sandbox(tmp_path, monkeypatch):
    """Run the setup cell in this process without leaking its cwd, sys.path or environment changes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with mock.patch.dict(os.environ):
        for name in FOLDER_VARS:
            os.environ.pop(name, None)
        yield tmp_path


def run_setup(source: str, **namespace) -> dict:
    ns = {"__name__": "__main__", **namespace}
    exec(compile(source, "<setup cell>", "exec"), ns)  # noqa: S102 - the notebooks' own first cell
    return ns


# ------------------------------------------------------------------ the setup cell
def test_setup_cell_is_short_identical_and_followed_by_the_parameters():
    first = setup_source()
    assert len(first.splitlines()) <= 15 and all(len(line) < 120 for line in first.splitlines())
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        code = [i for i, c in enumerate(cells) if c.cell_type == "code"]
        assert cells[code[0]].source == first, f"{path.name}: its first code cell differs from {NOTEBOOKS[0].name}'s"
        assert code[1] == code[0] + 1 and "parameters" in cells[code[1]].metadata.get("tags", []), path.name


def test_setup_cell_imports_the_installed_project_from_any_folder(tmp_path):
    """The project is installed (make setup: pip install -e .): the cell runs in a folder outside the
    repository, with no PYTHONPATH, and finds the repository's resnet_lib and folders."""
    probe = setup_source() + "\nprint(ROOT, rl.__file__, from_env('X_PARAM', 1))\n"
    env = {k: v for k, v in clean_env(X_PARAM="[2]").items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"is the project installed (make setup)? {proc.stderr[-2000:]}"
    assert proc.stdout.split() == [str(ROOT), str(ROOT / "resnet_lib.py"), "[2]"]


def test_from_env_reads_literals_strings_and_flags(monkeypatch):
    for text, default, expected in [(None, 40, 40), ("", None, None), ("2", None, 2), ("0.05", None, 0.05),
                                    ("['report']", ["report", "modern"], ["report"]), ("cpu", None, "cpu"),
                                    ("None", "lite", None), ("1", False, True), ("no", True, False),
                                    ("TRUE", False, True), (str(ROOT), None, str(ROOT))]:
        if text is None:
            monkeypatch.delenv("X_PARAM", raising=False)
        else:
            monkeypatch.setenv("X_PARAM", text)
        assert from_env("X_PARAM", default) == expected, (text, default)
    monkeypatch.setenv("X_PARAM", "maybe")
    with pytest.raises(ValueError, match="X_PARAM='maybe' is not a flag: use 1 or 0"):
        from_env("X_PARAM", False)


def fake_colab(mounted: list[str]) -> dict[str, types.ModuleType]:
    """Stand-ins for google and google.colab (with drive.mount recording its folder)."""
    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    google.colab = colab
    return {"google": google, "google.colab": colab}


def test_colab_branch_refuses_the_placeholder_clones_without_prompt_installs_and_shares_drive(setup_sandbox,
                                                                                            monkeypatch):
    content = setup_sandbox / "content"  # stands for Colab's /content
    source = setup_source().replace('"/content/', f'"{content}/')
    monkeypatch.setattr(notebook, "DRIVE_FOLDER", content / "drive" / "MyDrive" / "compact-resnets")
    commands, mounted = [], []

    def fake_run(cmd, **kwargs):
        commands.append((cmd, kwargs))
        if cmd[:2] == ["git", "clone"]:
            if "missing-repo" in cmd[-2]:  # git's exit status with prompts disabled
                return subprocess.CompletedProcess(cmd, 128)
            Path(cmd[-1]).mkdir(parents=True)
            return subprocess.CompletedProcess(cmd, 0)
        assert cmd[1:5] == ["-m", "pip", "install", "-q"], f"unexpected command {cmd}"  # nothing else is missing
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    with mock.patch.dict(sys.modules, fake_colab(mounted)):
        with pytest.raises(RuntimeError, match="set REPO_URL in this cell's form field"):
            run_setup(source)
        assert not commands and not mounted  # the placeholder is refused before anything runs

        with pytest.raises(RuntimeError, match=r"cannot clone https://github.com/x/missing-repo: set REPO_URL"):
            run_setup(source.replace(PLACEHOLDER, "https://github.com/x/missing-repo"))
        assert [cmd[:2] for cmd, _ in commands] == [["git", "clone"]]

        os.environ["RESULTS_DIR"] = "/already/chosen"  # a folder set by the user wins over Drive's
        url = "https://github.com/someone/compact-resnets-cifar10.git"
        ns = run_setup(source.replace(PLACEHOLDER, url).replace("USE_DRIVE = False  #", "USE_DRIVE = True  #"))
    clone = content / "compact-resnets-cifar10"
    (git, git_kwargs), = [(cmd, kw) for cmd, kw in commands[1:] if cmd[0] == "git"]
    pip = next(cmd for cmd, _ in commands if "-e" in cmd)
    assert git == ["git", "clone", "--depth", "1", url, str(clone)] and git_kwargs["env"]["GIT_TERMINAL_PROMPT"] == "0"
    assert pip == [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(clone)]
    assert sys.path[0] == str(clone)  # this kernel imports the clone without a restart
    assert mounted == [str(content / "drive")]
    shared = content / "drive" / "MyDrive" / "compact-resnets"
    assert os.environ["DATA_DIR"] == str(shared / "data") and os.environ["FIGURES_DIR"] == str(shared / "figures")
    assert os.environ["RESULTS_DIR"] == "/already/chosen"
    assert ns["ROOT"] == ROOT and Path.cwd() == ROOT  # (here the clone stands in; the package is this checkout)


# ------------------------------------------------------------------ papermill from anywhere, smoke outputs
def test_papermill_from_another_folder_with_epochs_from_the_environment(tmp_path):
    """The issue's command from outside the repository: no --cwd, EPOCHS set by environment variable; a smoke
    run without folders writes under runs/smoke/ (git-ignored) and changes no tracked file."""
    data = write_cifar(tmp_path / "data", per_batch=40, n_test=50)
    notebook = os.path.relpath(ROOT / "notebooks" / "02_train_lite.ipynb", tmp_path)
    env = clean_env(SMOKE="1", DATA_DIR=str(data), EPOCHS="2", RECIPES="modern")  # a name, not a list
    before, t0 = git_status(), time.time()
    proc = subprocess.run([sys.executable, "-m", "papermill", notebook, "out.ipynb", "--no-progress-bar"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = SMOKE_DIR / "results" / "lite-modern" / "results.json"
    res = json.loads(results.read_text())
    assert results.stat().st_mtime >= t0 and res["config"]["epochs"] == 2 and res["history"]["epoch"] == [1, 2]
    assert (SMOKE_DIR / "figures" / "lite_training_curves.png").stat().st_mtime >= t0
    assert git_status() == before


def test_runner_smoke_writes_under_runs_smoke_and_changes_no_tracked_file(tmp_path):
    data = write_cifar(tmp_path / "data", per_batch=40, n_test=50)
    before, t0 = git_status(), time.time()
    proc = subprocess.run([sys.executable, str(RUNNER), "--smoke", "--only", "01", "--quiet", "--data-dir", str(data)],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"figures: {SMOKE_DIR / 'figures'}" in proc.stdout and f"executed notebooks: {SMOKE_DIR}" in proc.stdout
    assert (SMOKE_DIR / "figures" / "class_balance.pdf").stat().st_mtime >= t0
    assert (SMOKE_DIR / "01_data_exploration.ipynb").stat().st_mtime >= t0
    assert git_status() == before


def test_notebooks_choose_their_folders_through_the_record_rule():
    # resnet_tools.record.output_dirs (tests/test_record.py): the record only for full data, runs/<tag>/ else.
    for path in NOTEBOOKS:
        source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "= output_dirs(ROOT, data, " in source and "smoke=SMOKE)" in source, path.name
        assert 'ROOT / "figures"' not in source and 'ROOT / "results"' not in source, path.name
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/smoke/figures/x.pdf"], cwd=ROOT)
    assert ignored.returncode == 0


def test_help_notebook_shows_parameter_types():
    proc = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", "notebooks/02_train_lite.ipynb"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for line in ("EPOCHS: Optional[int]", "SMOKE: bool", "RECIPES: list[str]", "DATA_DIR: Optional[str]",
                 "RESUME: bool"):
        assert line in proc.stdout, proc.stdout
    assert "Unknown type" not in proc.stdout


# ------------------------------------------------------------------ resume
def load_runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_notebooks_pass_resume_and_the_makefile_passes_it_on():
    for stem in ("02_train_lite", "03_train_improved", "04_optimizer_comparison"):
        nb = ROOT / "notebooks" / f"{stem}.ipynb"
        assert papermill.inspect_notebook(str(nb))["RESUME"]["inferred_type_name"] == "bool"
        assert "resume=RESUME)" in nb.read_text(), stem
    dry = subprocess.run(["make", "-n", "run", "RESUME=1", "SMOKE=1"], cwd=ROOT, capture_output=True, text=True)
    assert "scripts/run_notebooks.py --make" in dry.stdout and "--resume" in dry.stdout, dry.stdout


def test_runner_sends_runs_of_other_epochs_to_one_folder_named_for_them():
    runner = load_runner()
    assert runner.off_record_dir(True, 2) == SMOKE_DIR
    assert runner.off_record_dir(False, 2) == ROOT / "runs" / "epochs2"
    assert runner.off_record_dir(False, 40) is None and runner.off_record_dir(False, None) is None


def test_resume_hint_is_the_command_that_was_run_plus_resume():
    runner = load_runner()
    args = argparse.Namespace(make=True, data_dir="../shared/data/cifar10-mini", epochs=2, device=None,
                              results_dir="my results", figures_dir=None, smoke=True)
    assert runner.resume_command(args, []) == \
        "make run DATA_DIR=../shared/data/cifar10-mini EPOCHS=2 RESULTS_DIR='my results' SMOKE=1 RESUME=1"
    args.make = False
    assert runner.resume_command(args, ["--only", "02", "--epochs", "2"]).endswith(
        "run_notebooks.py --only 02 --epochs 2 --resume")


def test_runner_resume_continues_a_killed_run(tmp_path):
    data = write_cifar(tmp_path / "data", per_batch=40, n_test=50)
    results = tmp_path / "results"
    base = ["--only", "02", "--smoke", "--quiet", "-p", "RECIPES", "['modern']", "--data-dir", str(data),
            "--results-dir", str(results), "--figures-dir", str(tmp_path / "figures"), "--out", str(tmp_path / "runs")]
    env = clean_env()
    proc = subprocess.run([sys.executable, str(RUNNER), *base, "--epochs", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # A 2-epoch run killed after its first epoch: the checkpoint of epoch 1 of 2.
    ck = results / "lite-modern" / "checkpoint.pt"
    saved = torch.load(ck, map_location="cpu", weights_only=False)
    saved["config"]["epochs"] = 2
    torch.save(saved, ck)

    proc = subprocess.run([sys.executable, str(RUNNER), *base, "--epochs", "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "holds an unfinished run (epoch 1 of 2)" in proc.stderr, proc.stderr[-3000:]
    hint = proc.stderr.split("To continue the unfinished run from its checkpoint: ")[1].splitlines()[0]
    cmd = shlex.split(hint)
    assert cmd[0] == "python" and cmd[1] == "scripts/run_notebooks.py" and cmd[-1] == "--resume", hint

    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((results / "lite-modern" / "results.json").read_text())
    assert res["config"]["epochs"] == 2 and res["history"]["epoch"] == [1, 2]
