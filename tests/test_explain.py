"""Calibration (temperature scaling, ECE, reliability diagram) and Grad-CAM, on tiny synthetic inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import resnet_lib as rl
from resnet_tools import figures
from resnet_tools import explain
from resnet_tools.evaluation import logits_of

pytest.importorskip("torchmetrics")


def overconfident_toy(n=2000, seed=0):
    """Logits of a 70%-accurate classifier that is ~100% sure of every answer."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    wrong = torch.rand(n, generator=g) > 0.7
    pred = torch.where(wrong, (labels + torch.randint(1, 10, (n,), generator=g)) % 10, labels)
    logits = 12.0 * F.one_hot(pred, 10).float() + 0.5 * torch.randn(n, 10, generator=g)
    return logits, labels


def test_temperature_scaling_lowers_the_nll_of_an_overconfident_model():
    logits, labels = overconfident_toy()
    t = explain.fit_temperature(logits[:1000], labels[:1000])  # "validation" half
    assert t > 1  # over-confident: the logits are softened
    test_logits, test_labels = logits[1000:], labels[1000:]
    before = F.cross_entropy(test_logits, test_labels).item()
    after = F.cross_entropy(test_logits / t, test_labels).item()
    assert after < 0.5 * before
    # T minimizes the validation NLL: nearby temperatures do worse
    nll = lambda s: F.cross_entropy(logits[:1000].double() / s, labels[:1000]).item()  # noqa: E731
    assert nll(t) <= min(nll(0.9 * t), nll(1.1 * t))
    summary = explain.calibrate(logits[:1000], labels[:1000], test_logits, test_labels).summary()
    assert summary["NLL after"] < summary["NLL before"] and summary["ECE after (%)"] < summary["ECE before (%)"]
    assert summary["test acc (%)"] == pytest.approx(100 * (test_logits.argmax(1) == test_labels).float().mean().item())
    with pytest.raises(ValueError, match="validation split"):
        explain.fit_temperature(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))


def test_ece_matches_a_hand_computation():
    # Two classes; top-1 probabilities 0.9, 0.9, 0.6, 0.6, 0.55; right, wrong, right, right, wrong.
    p = torch.tensor([0.9, 0.9, 0.6, 0.6, 0.55])
    pred = torch.tensor([0, 1, 0, 1, 0])
    labels = torch.tensor([0, 0, 0, 1, 1])
    probs = torch.stack([torch.where(pred == 0, p, 1 - p), torch.where(pred == 1, p, 1 - p)], 1)
    logits = probs.log()
    # 15 bins of width 1/15: 0.9 -> bin 13, 0.6 -> bin 9, 0.55 -> bin 8.
    hand = (2 / 5) * abs(0.5 - 0.9) + (2 / 5) * abs(1.0 - 0.6) + (1 / 5) * abs(0.0 - 0.55)
    assert explain.expected_calibration_error(logits, labels) == pytest.approx(hand, abs=1e-6)
    b = explain.reliability_bins(logits, labels)
    assert b["count"][[8, 9, 13]].tolist() == [1, 2, 2] and b["count"].sum() == 5
    assert b["accuracy"][[8, 9, 13]].tolist() == [0.0, 1.0, 0.5]
    assert b["confidence"][13] == pytest.approx(0.9) and np.isnan(b["accuracy"][0])
    ece = np.nansum(b["count"] / 5 * np.abs(b["accuracy"] - b["confidence"]))
    assert ece == pytest.approx(hand, abs=1e-6)  # the diagram's bins are the metric's


def test_grad_cam_maps_have_the_image_size_and_lie_in_0_1():
    pytest.importorskip("captum")
    model = rl.build_model("lite", seed=0).eval()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    targets = logits_of(model, images, (rl.CIFAR10_MEAN, rl.CIFAR10_STD)).argmax(1)
    maps = explain.grad_cam(model, images, targets, (rl.CIFAR10_MEAN, rl.CIFAR10_STD))
    assert maps.shape == (5, 32, 32) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    peaks = maps.flatten(1).amax(1)
    assert all(math.isclose(v, 1.0, rel_tol=1e-5) or v == 0 for v in peaks.tolist())
    assert (peaks == 1).any() and not model.training


def test_calibration_and_grad_cam_figures(tmp_path):
    pytest.importorskip("captum")
    import matplotlib

    matplotlib.use("Agg")
    logits, labels = overconfident_toy(400)
    cals = {"a": explain.calibrate(logits[:200], labels[:200], logits[200:], labels[200:])}
    cals["b"] = cals["a"]
    table = explain.calibration_table(cals)
    assert list(table["run"]) == ["a", "b"] and table["temperature"].iloc[0] > 1
    fig = explain.plot_reliability_diagram(cals)
    assert len([ax for ax in fig.axes if ax.get_legend()]) == 2
    figures.save_figure(fig, "reliability", tmp_path)
    pick = explain.pick_examples(logits.argmax(1), labels, n=3)
    assert len(pick["correct"]) == 3 and len(pick["misclassified"]) == 3
    assert all(logits.argmax(1)[i] != labels[i] for i in pick["misclassified"])
    groups = {}
    for kind in ("correct", "misclassified"):
        idx = pick[kind]
        images = torch.randint(0, 256, (len(idx), 3, 32, 32), dtype=torch.uint8)
        titles = explain.example_titles(idx, logits.argmax(1), labels, logits.softmax(1))
        groups[kind] = (images, torch.rand(len(idx), 32, 32), titles)
    groups["none here"] = (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, 32, 32), [])
    fig = explain.plot_grad_cam(groups)
    assert [ax.get_ylabel() for ax in fig.axes[::3][:4]] == ["correct", "Grad-CAM", "misclassified", "Grad-CAM"]
    pdf, png = figures.save_figure(fig, "gradcam", tmp_path)
    assert png.stat().st_size > 1000
