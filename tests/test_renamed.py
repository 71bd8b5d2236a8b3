"""The seed report's recipes renamed (issue 28, point 6: `seed` is now `report`, run names end in -s<k>,
not -seed<k>): every place that reads a name still takes the old one, under the new name
(resnet_tools/renamed.py), so runs started before the rename resume and render."""

from __future__ import annotations

import dataclasses
import json
import shutil

import torch
from conftest import ROOT, fit_interrupted

import resnet_lib as rl
from resnet_tools import checkpoints, cli, results
from resnet_tools.renamed import RECIPE_ALIASES
from resnet_tools.report import readme
from test_report import FULL, fake_result
from test_training import fit_quiet


def test_old_recipe_names_are_the_new_presets():
    for old, new in RECIPE_ALIASES.items():
        assert new in rl.RECIPES and old not in rl.RECIPES
        assert rl.TrainConfig.from_recipe(old, device="cpu") == rl.TrainConfig.from_recipe(new, device="cpu")
    assert rl.TrainConfig.from_recipe("seed", optimizer="adam").lr == 1e-3  # the report's Adam rate, as before


def test_the_command_line_takes_an_old_name_with_a_one_line_note(tmp_path, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(cli, "_train_one", lambda cfg, args, out: trained.append(cfg))
    assert cli.main(["train", "--recipe", "seed", "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    assert trained[0].recipe == "report"
    notes = [line for line in capsys.readouterr().err.splitlines() if "now called" in line]
    assert notes == ["note: recipe 'seed' is now called 'report'; training as that"]


def test_run_names_end_in_s_and_old_folders_are_still_found(tmp_path):
    cfg = rl.TrainConfig.from_recipe("report", seed=1, device="cpu")
    assert results.run_name(cfg) == "lite-report-sgd-s1" and results.group_name(cfg) == "lite-report-sgd"
    assert results.former_run_name(cfg) == "lite-seed-sgd-seed1"
    assert results.run_name(rl.TrainConfig.from_recipe("modern", device="cpu")) == "lite-modern"  # seed 0: no suffix
    assert results.run_dir(tmp_path, cfg) == tmp_path / "lite-report-sgd-s1"
    (tmp_path / "lite-seed-sgd-seed1").mkdir()  # a run begun before the rename: it goes on there
    assert results.run_dir(tmp_path, cfg) == tmp_path / "lite-seed-sgd-seed1"


def test_folders_named_before_the_rename_group_under_the_new_names(tmp_path):
    runs = {"lite-seed-sgd": 0, "lite-seed-sgd-seed1": 1, "lite-modern": 0, "lite-modern-seed1": 1}
    for folder, seed in runs.items():
        res = fake_result("lite-modern" if "modern" in folder else "lite-report-sgd", 0.8, 0.8, FULL, epochs=40)
        res["config"].update(seed=seed, recipe=res["config"]["recipe"].replace("report", "seed"))
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "results.json").write_text(json.dumps(res))
    warned = []
    loaded = results.load_results(tmp_path, warn=warned.append)
    assert warned == [] and sorted(loaded) == sorted(runs)
    assert {r["config"]["recipe"] for n, r in loaded.items() if "seed-sgd" in n} == {"report"}
    merged = results.merge_seeds(loaded)
    assert {g: m["seeds"]["n"] for g, m in merged.items()} == {"lite-modern": 2, "lite-report-sgd": 2}


def test_a_checkpoint_of_recipe_seed_resumes_as_report(cifar, tmp_path, monkeypatch):
    cfg = rl.TrainConfig.from_recipe("report", epochs=2, batch_size=32, device="cpu", bf16=False)
    ck = tmp_path / "checkpoint.pt"
    fit_interrupted(monkeypatch, rl.build_model("lite", seed=0), cifar, cfg, ck)
    state = torch.load(ck, weights_only=True)
    state["config"]["recipe"] = "seed"  # as a run started before the rename wrote it
    torch.save(state, ck)
    assert checkpoints.load_checkpoint_dict(ck)["config"] == dataclasses.asdict(cfg)
    history = fit_quiet(rl.build_model("lite", seed=0), cifar, cfg, checkpoint=ck, resume=True)
    assert history["epoch"] == [1, 2]


def test_the_record_under_its_old_names_renders_as_committed(tmp_path):
    # The committed record as it was before the rename (lite-seed-sgd, -seed1, recipe seed) gives
    # docs/results.md byte for byte: old result folders render under the new names.
    for table in (ROOT / "results").glob("*.*"):  # notebook 05's tables, read as they are
        shutil.copy(table, tmp_path)
    for path in (ROOT / "results").glob("*/results.json"):
        res = json.loads(path.read_text())
        old = tmp_path / results.former_run_name(res["config"])
        former = {new: old for old, new in RECIPE_ALIASES.items()}
        res["config"]["recipe"] = former.get(res["config"]["recipe"], res["config"]["recipe"])
        old.mkdir()
        (old / "results.json").write_text(json.dumps(res))
    assert {"lite-seed-sgd", "lite-modern-seed1"} <= {p.name for p in tmp_path.iterdir()}
    assert readme.render_doc(tmp_path) == (ROOT / readme.DOC).read_text()
