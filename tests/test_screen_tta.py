"""scripts/screen_tta.py: the translate TTA views, and the re-evaluation of a finished run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tiny_config, write_cifar

sys.path.insert(0, str(ROOT / "scripts"))
import resnet_lib as rl  # noqa: E402
from resnet_tools import job  # noqa: E402
import screen_tta  # noqa: E402
from resnet_tools.evaluation import logits_of  # noqa: E402


def test_translate_views_weigh_to_one_and_move_a_pixel_one_step_each_way():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 5] = 1.0
    views = screen_tta.translate_views(x)
    assert sum(w for w, _ in views) == pytest.approx(1.0)
    assert len(views) == 6 and all(v.shape == x.shape for _, v in views)
    where = [tuple(torch.nonzero(v[0, 0] == 1.0).flatten().tolist()) for _, v in views]
    # the image, its mirror, then each shifted copy and its mirror (column c mirrors to 7 - c)
    assert where == [(3, 5), (3, 2), (4, 6), (4, 1), (2, 4), (2, 3)]


def test_translate_logits_of_a_constant_image_equal_the_plain_logits():
    # reflect padding keeps a constant image constant, so every view gives the same logits
    model = rl.build_model("lite", seed=0).eval()
    x = torch.full((2, 3, 32, 32), 100, dtype=torch.uint8)
    stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    plain = logits_of(model, x, stats, tta=False, bf16=False)
    assert torch.allclose(screen_tta.translate_logits(model, x, stats), plain, atol=1e-5)


@pytest.fixture
def finished_run(tmp_path: Path) -> tuple[Path, Path]:
    data_dir = write_cifar(tmp_path / "cifar")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        cfg = tiny_config(epochs=1, tta=True, val_size=40)
        job.train_and_evaluate(cfg, data_dir=data_dir, out_dir=out, download=False, progress=False)
    return data_dir, out


def test_screen_writes_the_runs_record_with_translate_numbers_and_a_paired_test(finished_run, tmp_path):
    data_dir, run = finished_run
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        screen_tta.main([str(run), "--data-dir", str(data_dir), "--out", str(tmp_path / "exp")])
    rec = json.loads((tmp_path / "exp" / "ablation-tta-translate-s0.json").read_text())
    orig = json.loads((run / "results.json").read_text())
    assert rec["config"] == orig["config"] and rec["history"] == orig["history"]
    assert rec["final"]["tta"] == "flip+translate" and "translate" in rec["evaluation"]
    n_val, n_test = orig["data"]["n_val"], orig["data"]["n_test"]
    assert round(rec["final"]["val_acc"] * n_val) == pytest.approx(rec["final"]["val_acc"] * n_val, abs=1e-3)
    assert len(rec["final"]["test_predictions"]) == n_test
    m = rec["val_mcnemar_vs_run"]
    # the paired counts are consistent with the two validation accuracies
    assert m["only_b"] - m["only_a"] == round((rec["final"]["val_acc"] - orig["final"]["val_acc"]) * n_val)


def test_screen_refuses_data_the_run_was_not_trained_on(finished_run, tmp_path):
    _, run = finished_run
    other = write_cifar(tmp_path / "other", seed=7)
    with pytest.warns(UserWarning), pytest.raises(SystemExit, match="not the data"):
        screen_tta.main([str(run), "--data-dir", str(other), "--out", str(tmp_path / "exp")])
