"""The record: which runs write results/ and figures/, and the committed README and paper rebuilt from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

import resnet_lib as rl
from conftest import ROOT
from resnet_tools.record import not_record_tag, output_dirs
from resnet_tools.report import paper
from resnet_tools.report import readme as readme_section


def sized(n_train: int, n_test: int, label: str, root: str = "/data/cifar") -> rl.CIFAR10:
    """A CIFAR10 of the given sizes (1x1 pixels: only the counts and the label matter here)."""
    x, y = torch.zeros(n_train, 3, 1, 1, dtype=torch.uint8), torch.zeros(n_train, dtype=torch.long)
    tx, ty = torch.zeros(n_test, 3, 1, 1, dtype=torch.uint8), torch.zeros(n_test, dtype=torch.long)
    return rl.CIFAR10(x, y, tx, ty, root=root, label=label)


FULL_JPEG = sized(50_000, 10_000, "CIFAR-10 (JPEG copy)")
NOTEBOOK_04 = [rl.TrainConfig.from_recipe("report", model="improved", optimizer=o, seed=s) for o in ("sgd", "adam")
               for s in (0, 1)] + [rl.TrainConfig.from_recipe("modern", model="improved", device="cpu", bf16=True)]


def test_the_notebooks_own_runs_on_all_of_cifar10_are_the_record(tmp_path, capsys):
    assert not_record_tag(FULL_JPEG, NOTEBOOK_04) is None  # Adam and speed-only fields included
    assert not_record_tag(sized(50_000, 10_000, "CIFAR-10 (official)")) is None
    assert output_dirs(tmp_path, FULL_JPEG, NOTEBOOK_04) == (tmp_path / "results", tmp_path / "figures")
    assert capsys.readouterr().out.startswith("the record: ")


@pytest.mark.parametrize(
    "data, configs, smoke, tag",
    [
        (sized(4_070, 1_015, "non-official CIFAR-10 files: cifar10-mini", "/x/cifar10-mini"), (), False,
         "cifar10-mini"),
        (FULL_JPEG.head(1000, 500), (), False, "subset"),
        (sized(50_000, 10_000, "image folder: pets", "/x/My Pets"), (), False, "my-pets"),
        (FULL_JPEG, [rl.TrainConfig.from_recipe("modern", epochs=2)], False, "epochs2"),
        (FULL_JPEG, [rl.TrainConfig.from_recipe("modern", lr=0.05, train_subset=64)], False, "lr0.05-trainsubset64"),
        (FULL_JPEG, [rl.TrainConfig.from_recipe("modern", optimizer="adam")], False, "optimizeradam"),
        (FULL_JPEG, (), True, "smoke"),
    ],
)
def test_any_other_run_goes_to_a_folder_named_for_it(tmp_path, capsys, data, configs, smoke, tag):
    assert not_record_tag(data, configs, smoke) == tag
    assert output_dirs(tmp_path, data, configs, smoke=smoke) == (
        tmp_path / "runs" / tag / "results", tmp_path / "runs" / tag / "figures")
    assert capsys.readouterr().out.startswith(f"not the record ({tag}): ")


def test_folders_given_are_obeyed(tmp_path):
    mini = sized(100, 50, "subset of CIFAR-10 (official)")
    assert output_dirs(tmp_path, mini, (), tmp_path / "r", tmp_path / "f") == (tmp_path / "r", tmp_path / "f")
    assert output_dirs(tmp_path, mini, (), None, tmp_path / "f") == (tmp_path / "runs" / "subset" / "results",
                                                                      tmp_path / "f")


# ------------------------------------------------------------------ the committed record
def test_committed_readme_section_is_rebuilt_from_the_record_byte_for_byte():
    readme = (ROOT / "README.md").read_text()
    block = readme_section.render_block(ROOT / "results", ROOT / "figures", ROOT)
    assert readme_section.replace_block(readme, block) == readme, "run: python scripts/update_readme_results.py"


def test_committed_results_page_is_rebuilt_from_the_record_byte_for_byte():
    committed = (ROOT / readme_section.DOC).read_text()
    assert readme_section.render_doc(ROOT / "results") == committed, "run: python scripts/update_readme_results.py"


def test_committed_paper_inputs_are_rebuilt_from_the_record_byte_for_byte(tmp_path):
    committed = ROOT / "report" / "generated"
    paper.write_inputs(ROOT / "results", ROOT / "figures", tmp_path, tex_dir=ROOT / "report")
    rebuilt = sorted(p.name for p in tmp_path.glob("*.tex"))
    assert rebuilt == sorted(p.name for p in committed.glob("*.tex"))
    for name in rebuilt:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), f"{name}: run make report"


def test_the_record_holds_results_files_only():
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True)
    kept = [Path(p).relative_to("results") for p in tracked.stdout.split()]
    assert any(p.name == "results.json" for p in kept), "no run in the record"
    in_runs = [p for p in kept if len(p.parts) > 1]
    assert all(p.name in ("results.json", "history.csv") for p in in_runs), in_runs  # never a checkpoint
