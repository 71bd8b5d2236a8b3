"""The report generators (resnet_tools.report: the paper's fragments and the README's section) on
synthetic results files that the tests write: what the paper and the README say for no runs,
partial runs on a subset, and full CIFAR-10 runs. No LaTeX here: `make report` compiles."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_config

import resnet_lib as rl
from resnet_tools import job, results
from resnet_tools.report import facts, latex, paper, words
from resnet_tools.report import readme as readme_section
from resnet_tools.report.tables import write_table
from resnet_tools.results import confused_pairs, per_class_accuracy, run_name
from resnet_tools.evaluation import EvalResult
from resnet_tools.layers import layer_table

RUNS = ("lite-report-sgd", "lite-modern", "improved-report-sgd", "improved-report-adam", "improved-modern",
        "lite-distill")
MINI = {"root": "/somewhere/cifar10-mini", "official": False, "n_train": 3663, "n_val": 407, "n_test": 1015}
FULL = {"root": "/data", "official": True, "n_train": 45_000, "n_val": 5_000, "n_test": 10_000}


def fake_result(
    name: str,
    test_acc: float,
    val_acc: float,
    data: dict,
    epochs: int = 2,
    device: str = "cpu (x86_64, 2 threads)",
    wall: float = 30.0,
    train_subset: int = 0,
) -> dict:
    """A results.json as resnet_tools.job.train_and_evaluate writes it, with chosen numbers."""
    model, recipe, *opt = name.split("-")
    cfg = rl.TrainConfig.from_recipe(
        recipe, model=model, epochs=epochs, train_subset=train_subset, **({"optimizer": opt[0]} if opt else {}),
        teacher="improved-modern/checkpoint.pt" if recipe == "distill" else None,
    )
    hist = {k: [] for k in rl.HISTORY_KEYS}
    for e in range(1, epochs + 1):
        f = e / epochs
        for k, v in dict(
            epoch=e,
            lr=cfg.lr,
            train_loss=2.0 - f,
            train_acc=0.9 * f * val_acc + 0.05,
            val_loss=2.1 - f,
            val_acc=f * val_acc,
            test_loss=2.1 - f,
            test_acc=f * test_acc,
            seconds=wall / epochs,
            images_per_sec=1000.0 * e,
        ).items():
            hist[k].append(v)
    return {
        "config": dataclasses.asdict(cfg),
        "num_params": rl.count_params(rl.build_model(model)),
        "history": hist,
        "final": {
            "train_acc": hist["train_acc"][-1],
            "val_loss": 1.0,
            "val_acc": val_acc,
            "test_loss": 1.0,
            "test_acc": test_acc,
            "tta": cfg.tta,
            "best_val_epoch": epochs,
        },
        "data": data,
        "device": device,
        "wall_seconds": wall,
        "train_seconds": wall * 0.9,
        "torch": torch.__version__,
        "finished": "2026-01-02T03:04:05+0000",
    }


@pytest.fixture(autouse=True)
def no_committed_experiments(tmp_path_factory, monkeypatch):
    """The generators also read report/experiments/ (the readings of the seed report's recipe); these tests give
    them an empty one unless they write their own, so only their own runs show up."""
    monkeypatch.setattr(facts, "EXPERIMENTS", tmp_path_factory.mktemp("no-experiments"))


def write_runs(results: Path, runs: dict[str, dict]) -> Path:
    for name, res in runs.items():
        (results / name).mkdir(parents=True, exist_ok=True)
        (results / name / "results.json").write_text(json.dumps(res))
    return results


def generate(tmp_path: Path, runs: dict[str, dict] | None = None, figures: list[str] = ()) -> tuple[dict, Path]:
    results = write_runs(tmp_path / "results", runs or {})
    results.mkdir(exist_ok=True)
    fig_dir = tmp_path / "figures"
    fig_dir.mkdir(exist_ok=True)
    for name in figures:
        (fig_dir / name).write_bytes(b"\x89PNG placeholder for a path test")
    out = tmp_path / "report" / "generated"
    return paper.write_inputs(results, fig_dir, out), out


def read(out: Path, name: str) -> str:
    return (out / name).read_text()


def test_expected_runs_are_the_notebooks_six():
    assert list(facts.expected_runs()) == list(RUNS)


def test_no_results_builds_every_fragment_and_says_so(tmp_path):
    manifest, out = generate(tmp_path)
    assert manifest["runs"] == [] and manifest["missing_runs"] == list(RUNS)
    assert sorted(p.name for p in out.glob("*.tex")) == manifest["files"]
    assert read(out, "results_table.tex").count("not measured") == len(RUNS)
    assert "no training runs" in read(out, "abstract.tex")
    assert "No training run has produced results" in read(out, "provenance.tex")
    assert "not available" in read(out, "per_class.tex")
    assert "\\includegraphics" not in "".join(read(out, f) for f in manifest["files"])


def test_subset_runs_are_labelled_and_not_compared_with_the_seed(tmp_path):
    runs = {
        "lite-modern": fake_result("lite-modern", 0.4567, 0.44, MINI, wall=95.0),
        "improved-report-sgd": fake_result("improved-report-sgd", 0.3012, 0.31, MINI, wall=30.0),
    }
    manifest, out = generate(tmp_path, runs)
    table = read(out, "results_table.tex")
    assert manifest["runs"] == ["lite-modern", "improved-report-sgd"] and manifest["full_cifar10_runs"] == []
    assert "45.67$^\\dagger$" in table  # modern recipe: flip TTA is marked
    assert "30.12 &" in table and table.count("not measured") == len(RUNS) - 2
    # What produced it: data, sizes, caveat, epochs, device, wall time.
    assert "cifar10-mini, 3,663/407/1,015 train/val/test images, test = held-out training images" in table
    assert "2 epochs" in table and "cpu (x86\\_64, 2 threads)" in table and "wall time 2.1 min in all" in table
    assert "No run used the full CIFAR-10" in table
    seed = read(out, "seed_comparison.tex")
    assert seed.count("n/c") >= 2 and not re.search(r"& (\+|\$-\$)\d", seed)  # no difference against the seed's claims
    assert "measures no CIFAR-10 accuracy" in read(out, "abstract.tex")
    assert "neither confirmed nor refuted" in read(out, "seed_discussion.tex")
    assert "recipe moves" not in read(out, "seed_discussion.tex")  # no Lite seed run, no Improved modern run
    lim = read(out, "limitations.tex")
    assert "far shorter" in lim and "Not measured in this build: " + latex.tt_list(["lite-report-sgd"]) in lim


def test_full_runs_are_compared_with_the_seed_and_selected_by_validation(tmp_path):
    runs = {
        "lite-report-sgd": fake_result("lite-report-sgd", 0.8000, 0.79, FULL, epochs=40, device="NVIDIA H100"),
        "improved-report-sgd": fake_result("improved-report-sgd", 0.9012, 0.90, FULL, epochs=40, device="NVIDIA H100"),
        # The highest test accuracy but not the highest validation accuracy: never "best".
        "improved-report-adam": fake_result(
            "improved-report-adam", 0.9300, 0.88, FULL, epochs=40, device="NVIDIA H100"
        ),
    }
    manifest, out = generate(tmp_path, runs)
    assert manifest["full_cifar10_runs"] == list(runs)
    seed = read(out, "seed_comparison.tex")
    claims = facts.seed_claims()
    assert f"& {latex.signed(80.00 - claims['lite-report-sgd'][1])} &" in seed  # ours minus the seed's claim
    assert f"& {latex.signed(90.12 - claims['improved-report-sgd'][1])} &" in seed
    assert latex.signed(-2.5) == "$-$2.50" and latex.signed(0.125) == "+0.12"
    assert "improved-report-sgd" in read(out, "abstract.tex") and "90.12" in read(out, "abstract.tex")
    assert "full CIFAR-10, 45,000/5,000/10,000 train/val/test images, official test set" in read(
        out, "results_table.tex"
    )
    assert "against the seed's" in read(out, "seed_discussion.tex")
    assert "recipe moves" not in read(out, "seed_discussion.tex")  # no modern run to compare with
    opt = read(out, "optimizer.tex")
    assert "Adam is 2.88 points above" in opt  # 93.00 - 90.12
    # Binomial 95% half-width on 10,000 images at the wider of the two accuracies.
    assert f"{100 * 1.96 * np.sqrt(0.9012 * 0.0988 / 10_000):.2f} points" in opt
    assert "No run used the full" not in read(out, "results_table.tex")


def test_modern_against_seed_recipe_on_the_same_data(tmp_path):
    runs = {
        "lite-report-sgd": fake_result("lite-report-sgd", 0.60, 0.58, MINI, epochs=3),
        "lite-modern": fake_result("lite-modern", 0.7525, 0.74, MINI, epochs=3),
        "improved-report-sgd": fake_result("improved-report-sgd", 0.5, 0.5, MINI, epochs=3),
        "improved-modern": fake_result("improved-modern", 0.6, 0.6, FULL, epochs=3),
    }  # other data: no sentence
    _, out = generate(tmp_path, runs)
    text = read(out, "seed_discussion.tex")
    assert "moves Lite from validation 58.00\\% $\\to$ 74.00\\%, test 60.00\\% $\\to$ 75.25\\% (+15.25 points)" in text
    assert "moves Improved" not in text


def test_architecture_tables_come_from_the_code(tmp_path):
    _, out = generate(tmp_path)
    arch = read(out, "arch_tables.tex")
    for name in ("lite", "improved"):
        model = rl.build_model(name)
        for row in layer_table(model):
            assert f"{row.name} & [{', '.join(map(str, row.output_shape))}] & {row.params:,} \\\\" in arch
        assert f"Total &  & {rl.count_params(model):,}" in arch
    numbers = read(out, "numbers.tex")
    assert f"\\newcommand{{\\LiteParams}}{{{rl.count_params(rl.lite()):,}}}" in numbers
    assert f"\\newcommand{{\\ParamBudget}}{{{rl.PARAM_BUDGET:,}}}" in numbers
    recipes = read(out, "recipes_table.tex")
    assert f"peak learning rate & {rl.RECIPES['report']['lr']:g} / 0.001 & {rl.RECIPES['modern']['lr']:g}" in recipes


def test_figures_are_included_only_when_present(tmp_path):
    runs = {"improved-modern": fake_result("improved-modern", 0.5, 0.5, MINI)}
    manifest, out = generate(
        tmp_path, runs, figures=["improved_training_curves.png", "confusion_matrix_improved-modern.png"]
    )
    curves, confusion = read(out, "fig_curves.tex"), read(out, "fig_confusion.tex")
    # Paths relative to the folder pdflatex runs in (the parent of generated/).
    assert "\\includegraphics[width=0.85\\textwidth]{../figures/improved_training_curves.png}" in curves
    assert "lite\\_training\\_curves" in curves.split("Not in this build")[1]
    assert "\\ref{fig:litecurves}" not in curves and "\\ref{fig:improvedcurves}" in curves
    assert "../figures/confusion_matrix_improved-modern.png" in confusion
    assert "confusion\\_matrix\\_lite-modern" in confusion.split("Not in this build")[1]
    assert read(out, "fig_optimizer.tex").startswith("\\noindent\\emph{Not in this build")
    assert "per_class_accuracy" in manifest["missing_figures"]


def stamped_png(path: Path, written: str | None) -> None:
    """A 1x1 PNG as save_figure writes it, stamped `written` (ISO 8601) or not stamped at all."""
    from PIL import Image, PngImagePlugin

    from resnet_tools.results import WRITTEN_KEY

    info = PngImagePlugin.PngInfo()
    if written:
        info.add_text(WRITTEN_KEY, written)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1, 1)).save(path, pnginfo=info)


def test_figure_older_than_its_results_is_flagged(tmp_path):
    runs = {
        "lite-modern": fake_result("lite-modern", 0.5, 0.5, MINI),  # finished 2026-01-02T03:04:05
        "improved-modern": fake_result("improved-modern", 0.5, 0.5, MINI),
    }
    write_runs(tmp_path / "results", runs)
    figs = tmp_path / "figures"
    stamped_png(figs / "lite_training_curves.png", "2025-12-31T00:00:00+0000")  # drawn before the results
    stamped_png(figs / "improved_training_curves.png", "2026-01-03T00:00:00+0000")
    stamped_png(figs / "class_balance.png", "1999-01-01T00:00:00+0000")  # shows data, not results: never stale
    for png in figs.iterdir():  # a fresh clone's file times say nothing: the stamp inside decides
        os.utime(png, (1, 1) if png.name.startswith("improved") else (2e9, 2e9))
    manifest, out = generate(tmp_path, {})
    assert manifest["figures_older_than_results"] == {"lite_training_curves": ["lite-modern"]}
    curves = read(out, "fig_curves.tex").split("\\end{figure*}")
    assert "Warning: drawn before the current results of " + latex.tt_list(["lite-modern"]) in curves[0]
    assert "Warning" not in curves[1] and "Warning" not in read(out, "fig_data.tex")


def test_figure_path_latex_cannot_include_is_an_error(tmp_path):
    fig_dir = tmp_path / "figs#1"
    fig_dir.mkdir()
    (fig_dir / "samples_per_class.png").write_bytes(b"png")
    with pytest.raises(results.ResultsError, match="LaTeX cannot include"):
        paper.write_inputs(tmp_path / "results", fig_dir, tmp_path / "report" / "generated")


def write_per_class(results: Path, runs: list[str]) -> None:
    """notebook 05's CSV files, written by resnet_lib's own functions from synthetic predictions."""
    labels = torch.arange(10).repeat_interleave(10)  # 10 test images per class
    evals = {}
    for i, name in enumerate(runs):
        preds = labels.clone()
        preds[labels == 3] = 5  # every cat predicted as dog
        preds[torch.nonzero(labels == 1).flatten()[: 2 + i]] = 9  # some automobiles as trucks
        evals[name] = EvalResult(0.0, (preds == labels).float().mean().item(), torch.zeros(100, 10), preds, labels)
    write_table(per_class_accuracy(evals).reset_index(), results / "per_class_accuracy")
    write_table(confused_pairs(evals, k=5), results / "confused_pairs")


def test_per_class_analysis_from_notebook_05_files(tmp_path):
    runs = {
        "lite-modern": fake_result("lite-modern", 0.6, 0.70, MINI),
        "improved-modern": fake_result("improved-modern", 0.6, 0.55, MINI),
    }
    write_runs(tmp_path / "results", runs)
    write_per_class(tmp_path / "results", list(runs))
    # Staleness is judged by when each run finished (its results' "finished"), not by file times,
    # which a fresh clone sets to the checkout's: the fake runs finished in January 2026.
    _, out = generate(tmp_path, {})
    text = read(out, "per_class.tex")
    assert "lite-modern}, the run with the highest validation accuracy of those in the table" in text
    assert "hardest class is cat (0.0\\%)" in text
    assert "most confused pair is cat/dog: 10 cat images predicted as dog and 0 the other way" in text
    assert "automobile & \\textbf{80.0} & 70.0" in text  # best run per class in bold
    assert "older than" not in text
    for p in (tmp_path / "results").glob("*.*"):
        os.utime(p, (1, 1))  # file times say nothing (a fresh clone sets them): the stamp in the .tex decides
    later = {**runs["improved-modern"], "finished": f"{datetime.now(timezone.utc) + timedelta(minutes=1):%Y-%m-%dT%H:%M:%S%z}"}
    write_runs(tmp_path / "results", {"improved-modern": later})  # finished after the CSV was written
    _, out = generate(tmp_path, {})
    assert "older than the results of " + latex.tt_list(["improved-modern"]) in read(out, "per_class.tex")


def test_per_class_file_with_another_layout_fails_loudly(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "per_class_accuracy.csv").write_text("klass,lite-modern\nairplane,1.0\n")
    with pytest.raises(results.ResultsError, match="'class' column"):
        generate(tmp_path)


def test_broken_results_file_is_an_error_naming_it(tmp_path, capsys):
    bad = tmp_path / "results" / "lite-modern"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text('{"config": ')
    assert (
        paper.main(["--results", str(tmp_path / "results"), "--figures", str(tmp_path), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "lite-modern/results.json: unreadable" in capsys.readouterr().err
    (bad / "results.json").write_text('{"config": {}}')
    with pytest.raises(results.ResultsError, match="missing num_params"):
        facts.load_runs(tmp_path / "results")


def test_latex_specials_are_escaped(tmp_path):
    runs = {"lite-modern": fake_result("lite-modern", 0.5, 0.5, MINI, device="GPU_#1 & 50% ~fast")}
    _, out = generate(tmp_path, runs)
    assert "GPU\\_\\#1 \\& 50\\% \\textasciitilde{}fast" in read(out, "results_table.tex")


def test_report_source_types_no_results(tmp_path):
    """report.tex takes every number from generated/: no typed percentages or accuracies,
    and it inputs exactly the fragments the generator writes."""
    tex = (ROOT / "report" / "report.tex").read_text()
    body = "\n".join("" if line.lstrip().startswith("\\bibitem") else line.split("%")[0] for line in tex.splitlines())
    assert not re.search(r"\d\s*\\%", body), "a typed percentage in report.tex"
    assert not re.search(r"\b\d{1,3}\.\d{2}\b", body), "a typed two-decimal number in report.tex"
    manifest, _ = generate(tmp_path)
    inputs = set(re.findall(r"\\input\{generated/(\w+)\}", tex))
    assert inputs == {f.removesuffix(".tex") for f in manifest["files"]}


def test_results_written_by_train_and_evaluate_are_read(tmp_path, cifar):
    """The contract with the library: a real (tiny) results.json, not just the fake one."""
    cfg = tiny_config(epochs=1, channels_last=False)  # channels_last is slow on small CPU batches
    job.train_and_evaluate(cfg, data=cifar, out_dir=tmp_path / "results" / run_name(cfg), progress=False)
    manifest, out = generate(tmp_path)
    assert manifest["runs"] == ["lite-modern"]
    assert "non-official folder 'cifar'" in read(out, "results_table.tex")


# ---------------------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------------------
README = "# Project\n\nIntro.\n\n## Results\n\n<!-- results:start -->\nstale\n<!-- results:end -->\n\n## Next\n"


def test_readme_block_replaced_between_markers(tmp_path):
    runs = {"lite-modern": fake_result("lite-modern", 0.4567, 0.44, MINI)}
    write_runs(tmp_path / "results", runs)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "lite_training_curves.png").write_bytes(b"png")
    readme = tmp_path / "README.md"
    readme.write_text(README)
    readme.chmod(0o644)
    assert (
        readme_section.main(
            ["--readme", str(readme), "--results", str(tmp_path / "results"), "--figures", str(tmp_path / "figures")]
        )
        == 0
    )
    text = readme.read_text()
    assert text.startswith("# Project\n\nIntro.\n\n## Results\n\n<!-- results:start -->\n")
    assert text.endswith("<!-- results:end -->\n\n## Next\n") and "stale" not in text
    assert "| `lite-modern` | SGD + Nesterov momentum | 78,042 |" in text and "45.67 †" in text
    assert text.count("*not measured*") == len(RUNS) - 1  # the results table's rows
    assert "No run here used the full CIFAR-10" in text and "`make run`" in text
    assert "[docs/results.md](docs/results.md)" in text
    doc = (tmp_path / "docs" / "results.md").read_text()  # beside the README: the rest of the results
    assert doc.count("*not measured*") == 3 and "**Targets**" in doc and "Targets" not in text  # the seed rows'
    assert "| `lite-modern` | SGD" not in doc  # one place per fact: the results table is the README's
    assert "![Lite ResNet: loss, accuracy and learning rate per epoch](figures/lite_training_curves.png)" in text
    assert facts.REGENERATE in text
    assert readme.stat().st_mode & 0o777 == 0o644
    # Idempotent: a second run changes nothing.
    readme_section.main(["--readme", str(readme), "--results", str(tmp_path / "results"), "--figures", str(tmp_path / "figures")])
    assert readme.read_text() == text


def test_readme_skips_a_figure_drawn_before_its_results(tmp_path):
    write_runs(tmp_path / "results", {"improved-modern": fake_result("improved-modern", 0.5, 0.5, MINI)})
    (tmp_path / "figures").mkdir()
    stamped_png(tmp_path / "figures" / "improved_training_curves.png", "2025-12-31T00:00:00+0000")
    stamped_png(tmp_path / "figures" / "confusion_matrix_improved-modern.png", None)  # unstamped: not judged
    block = readme_section.render_block(tmp_path / "results", tmp_path / "figures", tmp_path)
    assert "(figures/confusion_matrix_improved-modern.png)" in block and "improved_training_curves" not in block


def test_readme_without_results_shows_no_numbers(tmp_path):
    block = readme_section.render_block(tmp_path / "none", tmp_path / "none", tmp_path)
    assert "No training run has produced results yet" in block
    assert not re.search(r"\d+\.\d+ ?%", block)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("no markers", "exactly once"),
        (README + "<!-- results:start -->", "exactly once"),
        ("<!-- results:end -->\n<!-- results:start -->\n", "comes before"),
    ],
)
def test_readme_markers_must_be_there_once_and_in_order(tmp_path, text, problem):
    with pytest.raises(readme_section.MarkerError, match=problem):
        readme_section.replace_block(text, "block")


def test_seeds_give_mean_and_std_and_only_a_clear_difference_is_a_finding(tmp_path):
    """Three seeds of each recipe: mean +- std and the seed count in the paper and the README; the
    modern-vs-seed sentence calls a difference a finding only where it clears twice its SE."""
    runs = {}
    for seed, (t_old, t_new) in enumerate(((0.700, 0.830), (0.705, 0.832), (0.710, 0.834))):
        for name, acc in (("lite-report-sgd", t_old), ("lite-modern", t_new)):
            res = fake_result(name, acc, acc - 0.01, FULL, epochs=40)
            res["config"]["seed"] = seed
            runs[run_name(res["config"])] = res
    _, out = generate(tmp_path, runs)
    table = read(out, "results_table.tex")
    assert "83.20 $\\pm$ 0.20" in table and "70.50 $\\pm$ 0.50" in table
    assert "lite-modern-s1" not in table  # seeds merge into their configuration's row
    sentences = read(out, "seed_discussion.tex") + read(out, "abstract.tex") + read(out, "limitations.tex")
    assert "3 and 3 seeds, more than twice its standard error" in sentences and "holds up" in sentences
    block = readme_section.render_block(tmp_path / "results", tmp_path / "figures", tmp_path)
    assert "| 83.20 ± 0.20 † | 3 |" in block and "| `lite-report-sgd` |" in block


def test_one_seed_each_is_not_called_a_finding(tmp_path):
    _, out = generate(
        tmp_path,
        {
            "lite-report-sgd": fake_result("lite-report-sgd", 0.70, 0.69, FULL, epochs=40),
            "lite-modern": fake_result("lite-modern", 0.83, 0.82, FULL, epochs=40),
        },
    )
    text = "".join(p.read_text() for p in out.glob("*.tex"))
    assert "too few seeds to tell it from seed-to-seed noise" in text and "holds up" not in text


def test_paper_shows_two_confusion_matrices_and_the_rest_in_the_appendix(tmp_path):
    runs = {n: fake_result(n, 0.8 - 0.01 * i, 0.79 - 0.01 * i, FULL, epochs=40) for i, n in enumerate(RUNS)}
    _, out = generate(tmp_path, runs, figures=[f"confusion_matrix_{n}.png" for n in RUNS])
    main = read(out, "fig_confusion.tex")
    key = ["lite-report-sgd", "improved-report-sgd"]  # each model's best run by validation accuracy
    assert not (out / "appendix_confusion.tex").exists() and main.count("\\begin{figure*}") == 1
    grid = main.split("\\begin{figure*}")[1].split("\\end{figure*}")[0]  # every matrix on one page
    assert grid.count("\\includegraphics") == len(RUNS) and "0.32\\textwidth" in grid  # six: three to a row
    assert [grid.index(f"confusion_matrix_{n}.") for n in key] < [grid.index("confusion_matrix_lite-modern.")] * 2
    assert "One run per configuration, its first seed (seed 0)." in grid and "Produced by" not in main
    _, out4 = generate(tmp_path / "four", dict(list(runs.items())[:4]),
                       figures=[f"confusion_matrix_{n}.png" for n in RUNS[:4]])
    assert read(out4, "fig_confusion.tex").count("0.46\\textwidth") == 4  # up to four: two to a row
    mixed = {**runs, "lite-modern": fake_result("lite-modern", 0.6, 0.6, MINI, epochs=2)}
    _, out = generate(tmp_path / "mixed", mixed, figures=["per_class_accuracy.png"])
    assert "do not compare like for like" in read(out, "fig_confusion.tex")  # per-class figure: mixed data


def test_seed_readings_table_from_the_experiments_index(tmp_path, monkeypatch):
    """Each reading of the seed recipe against the seed's Lite row (79.12 / 79.87): its final train
    and test accuracy, the best test epoch as a diagnostic, and the distance; unmeasured ones say why."""
    res = fake_result("lite-report-sgd", 0.70, 0.69, FULL, epochs=40)
    res["final"]["train_acc"] = 0.9267
    res["history"]["test_acc"][10] = 0.7350  # a better epoch than the last
    (tmp_path / "literal.json").write_text(json.dumps(res))
    index = {"data": "CIFAR-10 (JPEG copy), 2-core CPU, seed 0.",
             "readings": [{"name": "literal", "what": "SGD 0.01, constant", "file": "literal.json"},
                          {"name": "kuangliu", "what": "cosine T_max 200", "note": "not measured: no time"}]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(facts, "EXPERIMENTS", tmp_path)
    rows = words.reading_rows(facts.seed_readings()[0])
    assert rows[0] == ["literal", "SGD 0.01, constant", "1 (0)", "92.67", "70.00", "73.50", f"{13.55 + 9.87:.2f}"]
    assert rows[1][-1] == "not measured: no time" and rows[1][2:4] == ["0", "--"]
    assert "tab:readings" in paper.seed_readings_tex() and "JPEG copy" in paper.seed_readings_tex()
    block = readme_section.render_doc(tmp_path / "none")
    assert "| literal | SGD 0.01, constant | 1 (0) | 92.67 | 70.00 | 73.50 | 23.42 |" in block


def test_a_reading_over_several_seeds_gives_mean_std_and_its_distance_from_the_mean(tmp_path, monkeypatch):
    """A reading with "files" (one results file per seed) is merged like the other multi-seed rows:
    mean +- std and n; its distance to the seed's Lite row (79.12 / 79.87) comes from the means, its
    best test epoch is each seed's best averaged, and the closest Lite reading is named from it."""
    for seed, (train, test, best) in enumerate([(0.80, 0.78, 0.79), (0.81, 0.76, 0.77), (0.82, 0.77, 0.78)]):
        res = fake_result("lite-report-sgd", test, test - 0.01, FULL, epochs=40)
        res["config"]["seed"], res["final"]["train_acc"] = seed, train
        res["history"]["test_acc"][5] = best
        (tmp_path / f"crop{seed}.json").write_text(json.dumps(res))
    far = fake_result("lite-report-sgd", 0.70, 0.69, FULL, epochs=40)
    far["final"]["train_acc"] = 0.9267
    (tmp_path / "literal.json").write_text(json.dumps(far))
    index = {"data": "JPEG copy.", "readings": [
        {"name": "literal", "what": "SGD 0.01", "file": "literal.json"},
        {"name": "crop + flip", "what": "--crop --flip", "files": [f"crop{s}.json" for s in range(3)]},
        {"name": "planned", "what": "x", "files": ["absent0.json", "absent1.json"], "note": "not measured yet"}]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(facts, "EXPERIMENTS", tmp_path)
    readings = facts.seed_readings()[0]
    fit = facts.reading_fit(readings[1])
    assert facts.n_seeds(readings[1].res) == 3 and len(readings[1].members) == 3
    assert (fit.train, fit.test, fit.best_test) == pytest.approx((81.0, 77.0, 78.0))
    assert fit.distance == pytest.approx(abs(81.0 - 79.12) + abs(77.0 - 79.87))
    rows = words.reading_rows(readings)
    assert rows[1][2:] == ["3 (0, 1, 2)", "81.00 ± 1.00", "77.00 ± 1.00", "78.00", "4.75"]
    assert rows[2][2] == "0" and rows[2][-1] == "not measured yet"
    assert facts.closest_reading(readings) is readings[1]
    assert facts.closest_reading(readings, model="improved") is None
    closest = "Closest to the seed's Lite row (79.12% train, 79.87% test): crop + flip, 4.75 points away"
    assert words.closest_text(readings).startswith(closest) and "mean of 3 seeds" in words.closest_text(readings)
    tex_table = paper.seed_readings_tex()
    assert "81.00 $\\pm$ 1.00" in tex_table and "Closest to the seed's Lite row" in tex_table
    doc = readme_section.render_doc(tmp_path / "none")
    assert "| crop + flip | --crop --flip | 3 (0, 1, 2) | 81.00 ± 1.00 | 77.00 ± 1.00 | 78.00 | 4.75 |" in doc
    block = readme_section.render_block(tmp_path / "none", tmp_path / "figures", tmp_path)
    assert closest in block and closest not in doc  # the README names it; the page has the table


def test_an_improved_reading_is_measured_against_the_seeds_improved_row(tmp_path, monkeypatch):
    """A reading on the Improved model with Adam is compared with the seed's Improved Adam row
    (98.42 / 91.52), not with its Lite row."""
    res = fake_result("improved-report-adam", 0.90, 0.89, FULL, epochs=40)
    res["final"]["train_acc"] = 0.9700
    (tmp_path / "adam.json").write_text(json.dumps(res))
    index = {"data": "JPEG copy.", "readings": [{"name": "adam", "what": "Adam, crop", "file": "adam.json"}]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(facts, "EXPERIMENTS", tmp_path)
    row = words.reading_rows(facts.seed_readings()[0])[0]
    assert row[3:5] == ["97.00", "90.00"] and row[-1] == f"{1.42 + 1.52:.2f}"
    assert "Improved Adam 98.42\\% train, 91.52\\% test" in paper.seed_readings_tex()


def test_ablation_table_compares_variants_with_the_baseline_on_validation(tmp_path, monkeypatch):
    """The ablation index: the baseline's seeds merged (mean +- std), each variant's delta on
    validation against it, and a verdict that never calls one run a finding."""

    def run(val: float, test: float, seed: int, **changes) -> dict:
        res = fake_result("lite-modern", test, val, FULL, epochs=40)
        res["config"].update(seed=seed, **changes)
        return res

    files = {"m0.json": run(0.830, 0.825, 0), "m1.json": run(0.834, 0.829, 1), "m2.json": run(0.832, 0.827, 2),
             "wd.json": run(0.845, 0.840, 0, weight_decay=1e-4),
             "big0.json": run(0.870, 0.860, 0, lr=0.2), "big1.json": run(0.872, 0.862, 1, lr=0.2),
             "long.json": run(0.850, 0.845, 0, epochs=80)}
    for name, res in files.items():
        (tmp_path / name).write_text(json.dumps(res))
    index = {"data": "CIFAR-10 (JPEG copy), 2-core CPU.",
             "baseline": {"name": "modern", "what": "as is", "files": ["m0.json", "m1.json", "m2.json"]},
             "variants": [{"name": "wd 1e-4", "what": "--weight-decay 1e-4", "files": ["wd.json"]},
                          {"name": "lr 0.2", "what": "--lr 0.2", "files": ["big0.json", "big1.json"]},
                          {"name": "EMA", "what": "an EMA of the weights", "note": "not measured: no time"},
                          {"name": "80 epochs", "what": "--epochs 80", "files": ["long.json"], "diagnostic": True}]}
    (tmp_path / "ablation.json").write_text(json.dumps(index))
    monkeypatch.setattr(facts, "EXPERIMENTS", tmp_path)
    base, variants, data = facts.ablation()
    rows = words.ablation_rows(base, variants)
    assert rows[0][:7] == ["modern", "as is", "3 (0, 1, 2)", "79.88 ± 0.18", "83.20 ± 0.20", "82.70 ± 0.20", ""]
    assert rows[1][2:] == ["1 (0)", "81.05", "84.50", "84.00", "+1.30", "too few seeds (1 vs 3)"]
    assert rows[2][6:] == ["+3.90", "exceeds the noise (2 SE 0.31)"]  # short cells: Δ has its own column
    assert rows[3][2] == "0" and rows[3][-1] == "not measured: no time"
    assert rows[4][6:] == ["+1.80", "diagnostic, no candidate; too few seeds (1 vs 3)"]
    summary = words.ablation_summary(base, variants)
    assert summary.startswith("Against the baseline's mean, wd 1e-4: training +1.17, validation +1.30 points; lr 0.2:")
    assert "helped" not in summary and summary.endswith("Variants with one seed are a screening, not a finding.")
    assert "Outside the budget (diagnostics, no candidates): 80 epochs: training" in summary
    low = variants[0]._replace(res={**variants[0].res, "final": {**variants[0].res["final"], "val_acc": 0.829}})
    assert "(0.40 points): none of these changes helped here." in words.ablation_summary(base, [low])
    # a diagnostic above the noise (80 epochs: +1.80) is no candidate, so the verdict on the candidates stands
    assert "(0.40 points): none of these changes helped here." in words.ablation_summary(base, [low, variants[3]])
    # a variant that re-evaluates the baseline's own models (scripts/screen_tta.py) changed no training
    tta = low._replace(name="translate TTA", res={**low.res, "evaluation": "flip + translate TTA"})
    assert "translate TTA (evaluation only): validation -0.30 points." in words.ablation_summary(base, [tta])
    tex_table = paper.ablation_tex()
    assert "tab:ablation" in tex_table and "83.20 $\\pm$ 0.20" in tex_table and "JPEG copy" in tex_table
    assert "-{}-weight-decay 1e-4" in tex_table  # not an en dash
    block = readme_section.render_doc(tmp_path / "none")
    assert "| modern | as is | 3 (0, 1, 2) | 79.88 ± 0.18 | 83.20 ± 0.20 | 82.70 ± 0.20 |  | baseline |" in block


def test_training_curves_show_each_configurations_first_seed():
    """Notebooks 02/03 plot one curve per configuration (its first seed): later seeds' results do not
    make the curves figure stale."""
    runs = {
        "lite-modern": fake_result("lite-modern", 0.8, 0.8, FULL),
        "lite-report-sgd": fake_result("lite-report-sgd", 0.7, 0.7, FULL),
    }
    for k in (1, 2):
        runs[f"lite-modern-s{k}"] = fake_result("lite-modern", 0.8, 0.8, FULL)
        runs[f"lite-modern-s{k}"]["config"]["seed"] = k
    assert sorted(facts.figure_runs("lite_training_curves", runs)) == ["lite-modern", "lite-report-sgd"]
    assert facts.figure_runs("improved_training_curves", runs) == []


def test_targets_say_by_how_much_they_are_missed_and_from_how_many_seeds():
    jpeg = {"label": "CIFAR-10 (JPEG copy)", "official": False, "n_train": 45_000, "n_val": 5_000, "n_test": 10_000}
    runs = {f"lite-modern{'-seed%d' % k if k else ''}": fake_result("lite-modern", acc, acc, jpeg, epochs=40)
            for k, acc in enumerate((0.827, 0.829, 0.828))}
    for k, name in enumerate(runs):
        runs[name]["config"]["seed"] = k
    rows = words.target_rows(results.merge_seeds(runs))
    assert rows[0] == ["lite-modern", ">= 85.0", "82.80 ± 0.10 (n=3)", "missed by 2.20 points"]
    assert rows[1][2:] == ["not measured", "not measured on the full-size JPEG copy for 40 epochs"]
    one = words.target_rows(results.merge_seeds({"lite-modern": runs["lite-modern"]}))[0]
    assert one[3] == "missed by 2.30 points (from 1 seed; the target asks for 3)"
    mini = words.target_rows(results.merge_seeds({"lite-modern": fake_result("lite-modern", 0.9, 0.9, MINI)}))[0]
    assert mini[2] == "not measured"


def test_figures_and_tables_carry_when_they_were_written(tmp_path):
    """The stamp the staleness checks read is in the files, so a clone (new file times) judges alike."""
    import pandas as pd
    from resnet_tools.figures import _pyplot, save_figure
    from resnet_tools.results import written_at

    plt, _ = _pyplot()
    fig = plt.figure()
    before = datetime.now(timezone.utc).timestamp() - 1
    pdf, png = save_figure(fig, "curves", tmp_path)
    plt.close(fig)
    table = write_table(pd.DataFrame({"class": ["cat"], "run": [1.0]}), tmp_path / "per_class")
    after = datetime.now(timezone.utc).timestamp() + 1
    for p in (pdf, png, *table):
        os.utime(p, (1, 1))
        assert before <= written_at(p) <= after, p
    pdf_bytes = pdf.read_bytes()
    save_figure(plt.figure(), "curves", tmp_path)
    assert pdf.read_bytes() == pdf_bytes  # the PDF stays reproducible: the stamp is in the PNG only
    stamped_png(tmp_path / "old.png", None)
    assert written_at(tmp_path / "old.png") is None and written_at(tmp_path / "absent.csv") is None


def test_a_curves_figure_says_it_shows_each_configurations_first_seed_not_the_tables_mean(tmp_path):
    """The training curves draw one run per configuration (its first seed): the caption says which
    seed, and that the results table averages more, rather than "Runs as in Table 2"."""
    runs = {"lite-report-sgd": fake_result("lite-report-sgd", 0.7, 0.7, FULL, epochs=40)}
    for k in range(3):
        runs[f"lite-modern-s{k}"] = fake_result("lite-modern", 0.8, 0.8, FULL, epochs=40)
        runs[f"lite-modern-s{k}"]["config"]["seed"] = k
    _, out = generate(tmp_path, runs, figures=["lite_training_curves.png"])
    caption = read(out, "fig_curves.tex").split("\\caption{")[1]
    said = "One run per configuration, its first seed (seed 0); Table~\\ref{tab:results} gives the mean of 3 seeds"
    assert caption.split(". ")[1].startswith(said + " for \\texttt{lite-\\allowbreak{}modern}")
    assert "40 epochs." in caption and "Runs as in Table" not in caption
