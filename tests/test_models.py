"""The two seed models, row by row against the seed report's tables."""

from __future__ import annotations

import io
import re

import pytest
import torch

import resnet_lib as rl
from resnet_tools import budget
from seed_tables import IMPROVED, LITE
from resnet_tools.layers import summary


def parse_seed(table: str) -> list[tuple[str, tuple[int, ...], int]]:
    rows = []
    for line in table.strip().splitlines():
        m = re.match(r"\s*(\S+)\s+\[-1, ([\d, ]+)\]\s+([\d,]+)$", line)
        assert m, line
        shape = tuple(int(s) for s in m.group(2).split(","))
        rows.append((m.group(1), shape, int(m.group(3).replace(",", ""))))
    return rows


@pytest.mark.parametrize("factory, table, total", [(rl.lite, LITE, 78_042), (rl.improved, IMPROVED, 4_903_242)])
def test_summary_matches_seed_table_row_by_row(factory, table, total):
    model = factory()
    buf = io.StringIO()
    rows = summary(model, file=buf)
    expected = parse_seed(table)
    got = [(r.name, r.output_shape, r.params) for r in rows]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == e
    assert rl.count_params(model) == total
    assert f"Total params: {total:,}" in buf.getvalue()
    # the printed table uses the seed's format: every seed row appears verbatim (modulo spacing)
    printed = [" ".join(line.split()) for line in buf.getvalue().splitlines()]
    for line in table.strip().splitlines():
        assert " ".join(line.split()) in printed


def test_summary_does_not_touch_batchnorm_statistics():
    model = rl.lite().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary(model, file=io.StringIO())
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", ["lite", "improved"])
def test_forward_backward_shapes_and_every_parameter_gets_a_gradient(name):
    model = rl.build_model(name, seed=0)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10)
    out.logsumexp(1).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_builder_from_data_and_identity_shortcuts():
    model = rl.ResNet((8, 16), (2, 1))
    blocks = list(model.stages)
    assert len(blocks) == 3
    assert blocks[0].shortcut_conv is None and blocks[1].shortcut_conv is None  # same shape: identity
    assert blocks[2].shortcut_conv.stride == (2, 2)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="equal length"):
        rl.ResNet((8, 16), (1,))


def test_seeded_builds_are_identical_and_leave_global_rng_alone():
    state = torch.get_rng_state()
    a = rl.build_model("lite", seed=3)
    b = rl.build_model("lite", seed=3)
    c = rl.build_model("lite", seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_budget_guard():
    with pytest.raises(budget.BudgetError, match="5,000,000 budget"):
        rl.ResNet((64, 128, 256, 640), (1, 1, 1, 1))
    big = rl.ResNet((64, 128, 256, 640), (1, 1, 1, 1), allow_over_budget=True)
    assert rl.count_params(big) > rl.PARAM_BUDGET
    with pytest.raises(budget.BudgetError):
        rl.check_budget(big)
    assert rl.check_budget(rl.improved()) == 4_903_242


def test_unknown_model_name_lists_choices():
    with pytest.raises(rl.ConfigError, match="lite, improved"):
        rl.build_model("resnet50")
