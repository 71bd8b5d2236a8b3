"""Notebooks: committed form, nbval in smoke mode, the papermill runner end to end, and the
figure / table helpers they call. Everything runs on synthetic data written here."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
import torch

import resnet_lib as rl
from resnet_tools.figures import plot_class_balance, save_figure
from resnet_tools.results import confused_pairs, confusion_matrix, per_class_accuracy, results_table, run_name
from resnet_tools.report.tables import write_table
from conftest import ROOT, write_cifar
from resnet_tools.notebook import list_parameter
from resnet_tools.evaluation import EvalResult

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RUNNER = ROOT / "scripts" / "run_notebooks.py"
CHECKED = "nbval-check-output"
RUNS = ["lite-report-sgd", "lite-modern", "improved-modern", "improved-report-sgd", "improved-report-adam"]
FIGURES = ["class_balance", "samples_per_class", "augmentation_preview", "lite_training_curves",
           "improved_training_curves", "optimizer_comparison", "per_class_accuracy", "reliability_diagram",
           *[f"confusion_matrix_{r}" for r in RUNS], *[f"misclassified_{r}" for r in RUNS], "distillation"]
# Parameters that are not TrainConfig fields: folders, smoke mode, and per-notebook choices.
EXTRA_PARAMS = {"SMOKE", "RESUME", "DATA_DIR", "RESULTS_DIR", "FIGURES_DIR", "RECIPES", "RUNS", "MISCLASSIFIED",
                "PREDICT_IMAGES", "GRAD_CAM_IMAGES", "SEEDS", "TEACHER"}


def smoke_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a smoke run on a synthetic CIFAR-10 folder (200 train, 50 test images)."""
    data = write_cifar(tmp_path / "data", per_batch=40, n_test=50)
    return {**os.environ, "SMOKE": "1", "DATA_DIR": str(data), "RESULTS_DIR": str(tmp_path / "results"),
            "FIGURES_DIR": str(tmp_path / "figures")}


def test_the_six_numbered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_data_exploration", "02_train_lite", "03_train_improved", "04_optimizer_comparison", "05_evaluation",
        "06_distillation"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_thin_and_parameterized(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # First code cell: the Colab/any-folder setup, its repository URL and Drive switch as Colab form fields.
    assert "google.colab" in code[0].source
    assert 'REPO_URL = "https://github.com/OWNER/compact-resnets-cifar10"  # @param {type:"string"}' in code[0].source
    assert 'USE_DRIVE = False  # @param {type:"boolean"}' in code[0].source
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = papermill.inspect_notebook(str(path))
    assert {"SMOKE", "DATA_DIR", "FIGURES_DIR"} <= set(params)
    fields = {f.name for f in dataclasses.fields(rl.TrainConfig)}
    for name, info in params.items():
        assert name.isupper() and (name.lower() in fields or name in EXTRA_PARAMS), name
        # Annotated (papermill --help-notebook shows the type) and settable by environment variable.
        assert info["inferred_type_name"] != "None" and info["default"].startswith(f'from_env("{name}", '), info
    # No bulky outputs: only the nbval-checked cells keep theirs, and no cell keeps a count.
    for cell in code:
        if CHECKED not in cell.metadata.get("tags", []):
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert path.stat().st_size < 30_000


@pytest.mark.parametrize("stem, count", [("02_train_lite", "78,042"), ("03_train_improved", "4,903,242"),
                                         ("04_optimizer_comparison", "4,903,242")])
def test_parameter_count_cells_are_checked_with_committed_output(stem, count):
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    checked = [c for c in nb.cells if CHECKED in c.metadata.get("tags", [])]
    assert len(checked) == 1 and checked[0].execution_count is not None  # else nbval ignores the outputs
    text = "".join(o.get("text", "") for o in checked[0].outputs)
    assert count in text


def test_nbval_runs_every_notebook_in_smoke_mode(tmp_path):
    env = smoke_env(tmp_path)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
           *map(str, NOTEBOOKS)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    n_cells = sum(c.cell_type == "code" for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells)
    assert re.search(rf"\b{n_cells} passed\b", proc.stdout), proc.stdout[-2000:]


def test_runner_smoke_end_to_end_writes_every_figure_and_result(tmp_path):
    env = smoke_env(tmp_path)
    out = tmp_path / "runs"
    cmd = [sys.executable, str(RUNNER), "--smoke", "--data-dir", env["DATA_DIR"], "--results-dir", env["RESULTS_DIR"],
           "--figures-dir", env["FIGURES_DIR"], "--out", str(out)]
    clean = {k: v for k, v in env.items() if k not in ("SMOKE", "DATA_DIR", "RESULTS_DIR", "FIGURES_DIR")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "improved-modern: reusing" in proc.stdout  # 04 reuses 03's run of the same config
    assert sorted(p.name for p in out.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    # Every exported figure is also shown in its executed notebook.
    shown = sum("image/png" in o.get("data", {}) for p in out.glob("*.ipynb")
                for c in nbformat.read(p, as_version=4).cells for o in c.get("outputs", []))
    assert shown == len(FIGURES) + 2  # + the best run's predictions (inference section) and Grad-CAM maps

    figures = Path(env["FIGURES_DIR"])
    # notebook 05 picks the run with the best validation accuracy for its inference section
    val_acc = {run: json.loads((Path(env["RESULTS_DIR"]) / run / "results.json").read_text())["final"]["val_acc"]
               for run in RUNS}
    predicted = [p.stem[len("predictions_"):] for p in figures.glob("predictions_*.png")]
    assert len(predicted) == 1 and val_acc[predicted[0]] == max(val_acc.values()), (predicted, val_acc)
    best = predicted[0]
    for name in [*FIGURES, f"predictions_{best}", f"grad_cam_{best}"]:
        pdf, png = figures / f"{name}.pdf", figures / f"{name}.png"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000, pdf
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000, png

    results = Path(env["RESULTS_DIR"])
    for run in RUNS:
        res = json.loads((results / run / "results.json").read_text())
        assert run_name(res["config"]) == run and res["config"]["epochs"] == 1
        assert (results / run / "checkpoint.pt").stat().st_size > 0
    for ext in ("csv", "md", "tex"):
        assert (results / f"results_table.{ext}").stat().st_size > 0
        assert (results / f"calibration.{ext}").stat().st_size > 0
    for run in RUNS:  # per-epoch logs beside every run's results.json
        assert (results / run / "history.csv").read_text().startswith("epoch,lr,")
    submission = (results / "submission_sample.csv").read_text().splitlines()
    assert submission[0] == "ID,Labels" and len(submission) == 1 + 50  # the smoke set's 50 test images
    assert (results / best / "model.safetensors").stat().st_size > 0
    with open(results / "results_table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [
        "lite-report-sgd",
        "lite-modern",
        "improved-report-sgd",
        "improved-report-adam",
        "improved-modern",
    ]
    assert [r["test acc reported by the seed (%)"] for r in rows] == ["79.87", "", "89.68", "91.52", ""]
    assert {r["parameters"] for r in rows} == {"78042", "4903242"}
    # 06 (after 05) distils the best improved-modern run into the Lite model and names its teacher.
    distilled = json.loads((results / "lite-distill" / "results.json").read_text())
    assert distilled["teacher"]["path"] == str(results / "improved-modern" / "checkpoint.pt")
    assert distilled["num_params"] == 78_042 and 0 <= distilled["teacher"]["test_agreement"] <= 1


@pytest.mark.parametrize("seeds", ["[0, 1]", "0,1"])
def test_papermill_list_parameters_as_the_readme_types_them(tmp_path, seeds):
    """`papermill ... -p SEEDS "[0, 1, 2]"` (docs/usage.md's form; -p passes text) and `-p SEEDS 0,1`."""
    env = smoke_env(tmp_path)
    notebook = ROOT / "notebooks" / "02_train_lite.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(tmp_path / "out.ipynb"),
           "-p", "SEEDS", seeds, "-p", "RECIPES", "modern", "--log-level", "WARNING"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in Path(env["RESULTS_DIR"]).glob("*/results.json")]
    assert sorted(r["config"]["seed"] for r in records) == [0, 1]
    assert {r["config"]["recipe"] for r in records} == {"modern"}
    # Headless, the training cell shows finished text bars, not a widget frozen at its first frame.
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    outputs = [o for c in executed.cells if "train_and_evaluate" in c.source for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    frames = [f for f in text.replace("\n", "\r").split("\r") if f.startswith("lite/modern:")]
    assert frames and frames[-1].startswith("lite/modern: 100%|") and len(frames) <= 12, text[-2000:]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def test_list_parameter_reads_every_form():
    forms = ("[0, 1, 2]", "0,1,2", (0, 1, 2), [0, 1, 2])
    assert all(list_parameter(form, int) == [0, 1, 2] for form in forms)
    assert list_parameter(3, int) == [3] and list_parameter("modern") == ["modern"]
    assert list_parameter("['report', 'modern']") == list_parameter("report, modern") == ["report", "modern"]
    with pytest.raises(ValueError, match="as a list"):
        list_parameter("[0, 1", int)
    with pytest.raises(ValueError, match="list of int"):
        list_parameter("a,b", int)


def test_runner_failure_names_the_notebook_and_cell_and_exits_nonzero(tmp_path):
    env = smoke_env(tmp_path)
    cmd = [sys.executable, str(RUNNER), "--only", "02", "--epochs", "0", "--quiet", "--out", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert re.search(
        r"FAILED: notebooks/02_train_lite\.ipynb, cell \d+ \(In \[\d+\], line \d+: configs = ", proc.stderr
    ), proc.stderr
    assert "ConfigError: epochs=0 must be a positive integer" in proc.stderr
    assert (tmp_path / "runs" / "02_train_lite.ipynb").is_file()
    assert not (tmp_path / "results").exists()  # it failed before training


def test_runner_rejects_a_parameter_no_notebook_has(tmp_path):
    proc = subprocess.run([sys.executable, str(RUNNER), "-p", "EPOCH", "3", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "EPOCH" in proc.stderr


# ------------------------------------------------------------------ figure and table helpers
def test_save_figure_writes_vector_pdf_with_embedded_truetype_fonts_and_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_class_balance(rl.CIFAR10(torch.zeros(20, 3, 32, 32, dtype=torch.uint8), torch.arange(20) % 10,
                                           torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10)))
    pdf, png = save_figure(fig, "balance", tmp_path / "figs")
    raw = pdf.read_bytes()
    assert b"/FontFile2" in raw and b"/Type3" not in raw  # TrueType (fonttype 42) embedded
    from PIL import Image

    with Image.open(png) as im:
        dpi = im.info["dpi"]
    assert round(dpi[0]) == 200
    with pytest.raises(ValueError, match="bare file name"):
        save_figure(fig, "balance.pdf", tmp_path)


def test_confusion_matrix_per_class_accuracy_and_confused_pairs():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    preds = torch.tensor([0, 0, 1, 1, 1, 0, 2, 3, 3, 2])
    cm = confusion_matrix(labels, preds, num_classes=4)
    assert cm.tolist() == [[2, 2, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    ev = EvalResult(0.0, 0.5, torch.zeros(10, 4), preds, labels)
    classes = ("a", "b", "c", "d")
    assert per_class_accuracy({"run": ev}, classes)["run"].tolist() == [50.0, 50.0, 50.0, 50.0]
    pairs = confused_pairs({"run": ev}, k=2, classes=classes)
    assert pairs[["class A", "class B", "A predicted as B", "B predicted as A", "confusions"]].values.tolist() == [
        ["a", "b", 2, 1, 3], ["c", "d", 1, 1, 2]]


def test_results_table_and_write_table_formats(tmp_path):
    cfg = rl.TrainConfig.from_recipe("report", model="improved", optimizer="adam")
    res = {"config": dataclasses.asdict(cfg), "num_params": 4_903_242, "history": {"epoch": [1, 2]},
           "final": {"train_acc": 0.5, "val_acc": None, "test_acc": 0.25, "tta": False},
           "data": {"official": False, "n_train": 100, "n_test": 50}, "device": "cpu", "wall_seconds": 90.0}
    table = results_table([res])
    row = table.iloc[0]
    assert (row["run"], row["optimizer"], row["test acc (%)"], row["epochs"]) == (
        "improved-report-adam",
        "Adam",
        25.0,
        2,
    )
    assert row["test acc reported by the seed (%)"] == 91.52 and "val acc (%)" not in table  # no validation split
    csv_path, md_path, tex_path = write_table(table, tmp_path / "t")
    md = md_path.read_text().splitlines()
    assert (
        md[0].startswith("| run | model |")
        and "| 4,903,242 |" in md[2]
        and "non-official CIFAR-10 files: unknown, 100 train / 50 test" in md[2]
    )
    tex = tex_path.read_text()
    assert "\\toprule" in tex and "test acc (\\%)" in tex and "improved-report-adam" in tex and "4,903,242" in tex
    row = csv_path.read_text().splitlines()[1]
    assert row.startswith("improved-report-adam,Improved,report,Adam,4903242,50.0,25.0")
