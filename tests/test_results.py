"""Results across seeds: run names, mean +- std, McNemar's test, and when a difference is a finding."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from conftest import tiny_config

import resnet_lib as rl
from resnet_tools import cli, job
from resnet_tools import results


def fake_run(recipe: str = "modern", seed: int = 0, test: float = 0.8, val: float = 0.79, **cfg) -> dict:
    c = dataclasses.asdict(rl.TrainConfig.from_recipe(recipe, seed=seed, device="cpu", **cfg))
    return {"config": c, "num_params": 78_042, "history": {"epoch": [1]}, "device": "cpu", "wall_seconds": 60.0,
            "data": {"label": "CIFAR-10 (JPEG copy)", "n_train": 45_000, "n_val": 5_000, "n_test": 10_000},
            "final": {"train_acc": 0.9, "val_acc": val, "test_acc": test, "tta": True}}


def test_run_names_add_the_seed_and_groups_leave_it_out():
    assert results.run_name(fake_run(seed=0)["config"]) == "lite-modern"
    assert results.run_name(fake_run(seed=2)["config"]) == "lite-modern-s2"
    assert results.group_name(fake_run(seed=2)["config"]) == "lite-modern"
    assert results.run_name(fake_run("report", seed=1, optimizer="adam")["config"]) == "lite-report-adam-s1"


def test_merge_seeds_gives_mean_std_and_every_value():
    runs = {"lite-modern": fake_run(test=0.80), "lite-modern-s1": fake_run(seed=1, test=0.82),
            "lite-modern-s2": fake_run(seed=2, test=0.84), "lite-report-sgd": fake_run("report", test=0.7)}
    merged = results.merge_seeds(runs)
    assert list(merged) == ["lite-modern", "lite-report-sgd"]
    m = merged["lite-modern"]
    assert m["seeds"]["n"] == 3 and m["seeds"]["seeds"] == [0, 1, 2]
    assert m["final"]["test_acc"] == pytest.approx(0.82) and m["final_std"]["test_acc"] == pytest.approx(0.02)
    assert m["seeds"]["values"]["test_acc"] == [0.80, 0.82, 0.84] and m["wall_seconds"] == 180.0
    one = merged["lite-report-sgd"]
    assert one["seeds"]["n"] == 1 and math.isnan(one["final_std"]["test_acc"])
    assert m["device"] == "cpu" and merged["lite-report-sgd"]["device"] == "cpu"
    runs["lite-modern-s2"]["device"] = "NVIDIA H100 80GB HBM3"  # a seed run elsewhere: both devices named
    assert results.merge_seeds(runs)["lite-modern"]["device"] == "cpu; NVIDIA H100 80GB HBM3"


def test_best_of_each_group_picks_by_validation_never_by_test():
    runs = {"lite-modern": fake_run(val=0.80, test=0.90), "lite-modern-s1": fake_run(seed=1, val=0.82, test=0.70),
            "lite-report-sgd": fake_run("report", val=0.70),
            "lite-report-sgd-s1": fake_run("report", seed=1, val=0.69),
            "lite-report-kuangliu": fake_run("report-kuangliu", val=None)}
    assert results.best_of_each_group(runs) == {"lite-modern": "lite-modern-s1", "lite-report-sgd": "lite-report-sgd"}


def test_mcnemar_counts_discordant_images_and_gives_the_exact_p():
    labels = np.zeros(30, dtype=int)
    a = labels.copy()
    b = labels.copy()
    b[:10] = 1  # B wrong on 10 images that A gets right
    a[10:12] = 1  # A wrong on 2 that B gets right
    m = results.mcnemar(a, b, labels)
    assert (m.only_a, m.only_b) == (10, 2)
    expected = 2 * sum(math.comb(12, i) for i in range(3)) / 2**12  # two-sided binomial, n=12, k<=2
    assert m.p == pytest.approx(expected)
    assert results.mcnemar(a, a, labels).p == 1.0
    big = results.mcnemar(np.r_[np.zeros(600), np.ones(400)], np.r_[np.ones(500), np.zeros(500)], np.zeros(1000))
    assert (big.only_a, big.only_b) == (500, 400) and 5e-4 < big.p < 1.5e-3  # normal approx. z=3.33: 0.0009


def test_stored_test_predictions_round_trip():
    res = fake_run()
    res["final"]["test_predictions"] = "0123456789"
    assert results.test_predictions(res).tolist() == list(range(10))
    assert results.test_predictions(fake_run()) is None


def test_one_run_each_is_never_a_finding_and_seeds_must_clear_twice_the_se():
    one = results.merge_seeds({"a": fake_run(test=0.90), "b": fake_run("report", test=0.70)})
    v = results.difference_verdict(one["lite-modern"], one["lite-report-sgd"])
    assert v.diff == pytest.approx(20.0) and not v.holds and "too few seeds" in v.text
    spread = {f"m{s}": fake_run(seed=s, test=t) for s, t in enumerate((0.80, 0.82, 0.84))}
    close = {f"s{s}": fake_run("report", seed=s, test=t) for s, t in enumerate((0.79, 0.81, 0.83))}
    m = results.merge_seeds({**spread, **close})
    v = results.difference_verdict(m["lite-modern"], m["lite-report-sgd"])
    assert v.diff == pytest.approx(1.0) and not v.holds and "less than twice its standard error" in v.text
    far = {f"s{s}": fake_run("report", seed=s, test=t) for s, t in enumerate((0.70, 0.71, 0.72))}
    m = results.merge_seeds({**spread, **far})
    v = results.difference_verdict(m["lite-modern"], m["lite-report-sgd"])
    assert v.holds and v.diff == pytest.approx(11.0) and "more than twice" in v.text


def test_cli_seeds_trains_each_seed_into_its_run_folder(cifar_dir, tmp_path, capsys):
    out = tmp_path / "results"
    args = ["train", "--data-dir", str(cifar_dir), "--out", str(out), "--seeds", "0,3", "--epochs", "1",
            "--batch-size", "64", "--device", "cpu", "--quiet", "--no-download"]
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        assert cli.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["lite-modern", "lite-modern-s3"]
    runs = results.load_results(out)
    assert [r["config"]["seed"] for r in runs.values()] == [0, 3]
    assert all(len(r["final"]["test_predictions"]) == r["data"]["n_test"] for r in runs.values())
    printed = capsys.readouterr().out
    assert "lite-modern, 2 seeds: test acc" in printed and "+-" in printed
    with pytest.raises(SystemExit):  # argparse: not a list of distinct seeds
        cli.main(["train", "--seeds", "1,1"])
    assert cli.main(args + ["--seed", "1"]) == 2  # --seed and --seeds together


def test_summary_table_one_row_per_group():
    runs = {"lite-modern": fake_run(test=0.80), "lite-modern-s1": fake_run(seed=1, test=0.84),
            "lite-report-sgd": fake_run("report", test=0.7)}
    table = results.summary_table(runs)
    assert table["run"].tolist() == ["lite-modern", "lite-report-sgd"] and table["seeds"].tolist() == [2, 1]
    assert table.loc[0, "test acc (%)"] == 82.0 and table.loc[0, "test std"] == pytest.approx(2.83, abs=0.01)
    assert math.isnan(table.loc[1, "test std"]) and table.loc[0, "data"] == "CIFAR-10 (JPEG copy)"


def test_notebook_seeds_parameter_trains_every_seed_and_summarises(tmp_path):
    """SEEDS=0,1 (environment, as nbconvert users set it): one run per seed, then one summary row."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT, write_cifar

    data = write_cifar(tmp_path / "data", per_batch=40, n_test=50)
    env = {k: v for k, v in os.environ.items() if k not in ("EPOCHS", "SEED", "SEEDS", "RECIPES", "MODEL")}
    env.update(SMOKE="1", DATA_DIR=str(data), RESULTS_DIR=str(tmp_path / "results"),
               FIGURES_DIR=str(tmp_path / "figures"), SEEDS="0,1", RECIPES="modern")
    proc = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "02_train_lite.ipynb"),
                           str(tmp_path / "out.ipynb"), "--cwd", str(ROOT), "--no-progress-bar"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = results.load_results(tmp_path / "results")
    assert list(runs) == ["lite-modern", "lite-modern-s1"]
    assert [r["config"]["seed"] for r in runs.values()] == [0, 1]
    cells = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    last = [c for c in cells if c["cell_type"] == "code"][-1]
    every, summary = ("".join(o["data"]["text/plain"]) for o in last["outputs"])
    assert "lite-modern-s1" in every  # one row per run ...
    assert "lite-modern" in summary and "seeds" in summary and "lite-modern-s1" not in summary  # ... then per group


def test_missing_runs_names_the_notebook_that_makes_each():
    runs = {"lite-modern": fake_run(), "lite-modern-s1": fake_run(seed=1)}
    missing = results.missing_runs(runs)
    assert "lite-modern" not in missing and missing["lite-report-sgd"] == "02_train_lite"
    assert (
        missing["improved-modern"] == "03_train_improved"
        and missing["improved-report-adam"] == "04_optimizer_comparison"
    )


def test_for_display_shows_missing_cells_as_a_dash():
    import pandas as pd

    from resnet_tools.results import for_display

    table = pd.DataFrame({"run": ["a", "b"], "test std": [0.25, math.nan], "seeds": [3, 1]})
    shown = for_display(table)
    assert shown["test std"].tolist() == [0.25, "—"] and shown["seeds"].tolist() == [3, 1]
    assert "NaN" not in shown.to_string() and table["test std"].isna().sum() == 1  # the input is left as it was


def test_saved_results_are_reused_on_the_same_images_only(cifar, tmp_path):
    """Issue 29 #8: notebook 04 reused a run after the training batches were changed in place (same
    folder, label and counts): the data's SHA-256 sums decide, from results.json or the checkpoint."""
    import dataclasses
    import json

    from resnet_tools.results import run_name, saved_results

    cfg = tiny_config(epochs=1)
    job.train_and_evaluate(cfg, cifar, out_dir=tmp_path / run_name(cfg), progress=False)
    assert saved_results(tmp_path, cfg, cifar) is not None
    shifted = dataclasses.replace(cifar, train_y=(cifar.train_y + 1) % 10)  # labels shifted, as in the attack
    inverted = dataclasses.replace(cifar, test_x=255 - cifar.test_x)
    assert saved_results(tmp_path, cfg, shifted) is None and saved_results(tmp_path, cfg, inverted) is None
    results = tmp_path / run_name(cfg) / "results.json"
    old = json.loads(results.read_text())
    for k in ("train_sha256", "test_sha256"):
        del old["data"][k]  # written before results held them: the checkpoint's fingerprint decides
    results.write_text(json.dumps(old))
    assert saved_results(tmp_path, cfg, cifar) is not None and saved_results(tmp_path, cfg, shifted) is None
    (tmp_path / run_name(cfg) / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert saved_results(tmp_path, cfg, cifar) is None  # nothing says which images: trained again


def test_saved_results_name_a_results_file_they_cannot_read(cifar, tmp_path):
    """A damaged results.json beside a checkpoint is named in one line (read_record), not a JSON traceback."""
    from resnet_tools.results import ResultsError, run_name, saved_results

    cfg = tiny_config(epochs=1)
    (tmp_path / run_name(cfg)).mkdir()
    (tmp_path / run_name(cfg) / "checkpoint.pt").write_bytes(b"")  # present: the results file is read first
    results = tmp_path / run_name(cfg) / "results.json"
    results.write_text('{"config": ')
    with pytest.raises(ResultsError, match="results.json: unreadable results file .*delete the folder"):
        saved_results(tmp_path, cfg, cifar)
    results.write_text('{"config": {}}')
    with pytest.raises(ResultsError, match="not a resnet_lib results file: missing num_params"):
        saved_results(tmp_path, cfg, cifar)
