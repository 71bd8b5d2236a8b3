"""Knowledge distillation: the loss on synthetic tensors, one training step with a frozen teacher,
and a whole distilled run against a teacher trained on the same synthetic data."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import resnet_lib as rl
from resnet_tools import job, results
from resnet_tools.step import train_step
from resnet_tools.cudagraph import GraphedStep, make_train_step
from resnet_tools.distill import agreement, distillation_loss
from tests.conftest import tiny_config, write_cifar


def test_soft_loss_is_zero_when_the_student_predicts_as_the_teacher():
    logits = torch.randn(16, 10)
    y = torch.randint(0, 10, (16,))
    same = distillation_loss(logits, logits.clone(), y, temperature=4.0, alpha=1.0)
    assert same.item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(16, 10)
    assert distillation_loss(logits, other, y, temperature=4.0, alpha=1.0).item() > 0.01


def test_alpha_zero_is_the_labels_cross_entropy_and_the_mix_is_linear():
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    ce = F.cross_entropy(s, y, label_smoothing=0.1)
    assert distillation_loss(s, t, y, 2.0, 0.0, label_smoothing=0.1).item() == pytest.approx(ce.item(), rel=1e-6)
    soft = distillation_loss(s, t, y, 2.0, 1.0)
    half = distillation_loss(s, t, y, 2.0, 0.5, label_smoothing=0.1)
    assert half.item() == pytest.approx(0.5 * soft.item() + 0.5 * ce.item(), rel=1e-5)


def test_soft_loss_is_scaled_by_t_squared():
    """KL of softened distributions times T^2 (Hinton et al.): at T=1 it is the plain KL."""
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    kl = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")
    assert distillation_loss(s, t, y, 1.0, 1.0).item() == pytest.approx(kl.item(), rel=1e-5)


def test_gradient_flows_only_through_the_student():
    s = torch.randn(8, 10, requires_grad=True)
    t = torch.randn(8, 10, requires_grad=True)
    distillation_loss(s, t, torch.randint(0, 10, (8,)), 4.0, 0.9).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_a_training_step_leaves_the_teacher_as_it_was():
    cfg = tiny_config(teacher="unused.pt", distill_alpha=0.9)
    torch.manual_seed(0)
    student, teacher = rl.build_model("lite", seed=0), rl.build_model("lite", seed=1).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    loss, logits = train_step(student, opt, sched, x, y, cfg, torch.device("cpu"), teacher=teacher)
    assert torch.isfinite(loss) and logits.shape == (16, 10)
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BatchNorm statistics too
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())


def test_a_distillation_step_is_never_graphed():
    """The recorded CUDA graph holds the student alone: with a teacher the step runs eagerly."""
    cfg = tiny_config(teacher="unused.pt")
    model = rl.build_model("lite", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    teacher = rl.build_model("lite", seed=1).eval()
    step = make_train_step(model, opt, sched, cfg, torch.device("cpu"), 32, capture=False, teacher=teacher)
    assert not isinstance(step, GraphedStep)
    assert isinstance(make_train_step(model, opt, sched, cfg, torch.device("cpu"), 32, capture=False), GraphedStep)


def test_config_checks_the_distillation_fields():
    with pytest.raises(rl.ConfigError, match="needs a teacher"):
        rl.TrainConfig.from_recipe("distill")
    with pytest.raises(rl.ConfigError, match="distill_alpha"):
        tiny_config(teacher="t.pt", distill_alpha=1.5)
    with pytest.raises(rl.ConfigError, match="distill_temperature"):
        tiny_config(teacher="t.pt", distill_temperature=0.0)
    cfg = rl.TrainConfig.from_recipe("distill", teacher="t.pt")
    assert results.group_name(cfg) == "lite-distill"
    other_t = rl.TrainConfig.from_recipe("distill", teacher="t.pt", distill_temperature=2)
    assert results.group_name(other_t) == "lite-distill-t2-a0.9"
    assert results.group_name(tiny_config(teacher="t.pt")) == "lite-modern-kd-t4-a0.9"


def test_agreement_counts_equal_predictions():
    a = torch.tensor([0, 1, 2, 3])
    assert agreement(a, torch.tensor([0, 1, 0, 0])) == 0.5
    assert agreement(F.one_hot(a, 10).float(), a) == 1.0
    with pytest.raises(ValueError, match="equal"):
        agreement(a, a[:2])


def test_a_distilled_run_records_its_teacher(cifar, tmp_path):
    """A teacher trained on the same data; the student keeps Lite's parameter count, and results.json
    names the teacher (file hash, its own accuracy) and the student's agreement with it on the test set."""
    job.train_and_evaluate(tiny_config(epochs=2), data=cifar, out_dir=tmp_path / "teacher", progress=False)
    teacher = tmp_path / "teacher" / "best.pt"
    _, res = job.train_and_evaluate(
        rl.TrainConfig.from_recipe("distill", teacher=str(teacher), epochs=1, batch_size=32, warmup_epochs=0.5,
                                   device="cpu", bf16=False),
        data=cifar, out_dir=tmp_path / "student", progress=False,
    )
    own = json.loads((tmp_path / "teacher" / "results.json").read_text())
    assert res["num_params"] == 78_042 and res["config"]["recipe"] == "distill"
    t = res["teacher"]
    assert t["path"] == str(teacher) and len(t["sha256"]) == 64 and t["model"] == "lite"
    assert t["test_acc"] == pytest.approx(own["final"]["test_acc"]) and 0 <= t["test_agreement"] <= 1
    assert json.loads((tmp_path / "student" / "results.json").read_text())["teacher"] == t


def test_a_teacher_of_other_data_or_a_missing_file_is_refused(cifar, tmp_path):
    other = rl.load_cifar10(write_cifar(tmp_path / "other", seed=5, noise=60.0), download=False)
    job.train_and_evaluate(tiny_config(epochs=1), data=other, out_dir=tmp_path / "t", progress=False)
    with pytest.raises(rl.ConfigError, match="other data"):
        job.train_and_evaluate(tiny_config(teacher=str(tmp_path / "t" / "checkpoint.pt")), data=cifar, progress=False)
    with pytest.raises(rl.ConfigError, match="no such"):
        job.train_and_evaluate(tiny_config(teacher=str(tmp_path / "none.pt")), data=cifar, progress=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(rl.ConfigError, match="teacher"):
        job.train_and_evaluate(tiny_config(teacher=str(tmp_path / "junk.pt")), data=cifar, progress=False)
