"""The graphed training step (resnet_tools.cudagraph): eager on the CPU; its static-buffer,
lr-tensor and warm-up/restore logic (capture=False) trains exactly as train_step; a failed
capture falls back to eager; on a GPU the graph itself against eager training."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

import resnet_lib as rl
from resnet_tools.step import train_step
from conftest import fit_interrupted, tiny_config
from resnet_tools import cudagraph
from resnet_tools.cudagraph import GraphedStep, make_train_step
from resnet_tools.compile_step import make_step
from resnet_tools.optim import lr_factor, make_optimizer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: graphed step checked on a GPU")

# Batch sizes of the steps: full batches of 32 and smaller "last batches" in between.
SIZES = (32, 32, 20, 32, 32, 32, 20, 32)


def batches(sizes=SIZES, device="cpu", seed=0, channels_last=True):
    """Separable synthetic batches: a class-dependent colour plus noise, normalized-looking."""
    gen = torch.Generator().manual_seed(seed)
    colours = torch.randn(10, 3, generator=gen)
    out = []
    for n in sizes:
        y = torch.randint(0, 10, (n,), generator=gen)
        x = colours[y][:, :, None, None] + 0.5 * torch.randn(n, 3, 32, 32, generator=gen)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        out.append((x.to(device), y.to(device)))
    return out


def setup(cfg, device="cpu", total_steps=len(SIZES)):
    """A Lite model, fit's optimizer and a one-cycle LambdaLR (warm-up 2 steps), on `device`."""
    model = rl.build_model(cfg.model, seed=0).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, 2, cfg.schedule))
    return model, optimizer, scheduler


def run_eager(cfg, data, device="cpu"):
    model, optimizer, scheduler = setup(cfg, device)
    dev = torch.device(device)
    losses = [train_step(model, optimizer, scheduler, x, y, cfg, dev)[0].item() for x, y in data]
    return losses, model, optimizer


def optimizer_tensors(optimizer):
    return [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def assert_same_state(model_a, opt_a, model_b, opt_b, **tol):
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name, **tol)
    a, b = optimizer_tensors(opt_a), optimizer_tensors(opt_b)
    assert len(a) == len(b) > 0
    for s, t in zip(a, b):
        torch.testing.assert_close(s, t, **tol)


def cfg_modern(**kw):
    # SGD, Nesterov momentum 0.9, weight decay 5e-4, label smoothing 0.1, onecycle.
    kw.setdefault("bf16", False)  # fp32 on the CPU, whatever the processor (the GPU tests ask for bf16)
    return rl.TrainConfig.from_recipe("modern", model="lite", device="cpu", batch_size=32, lr=0.1, **kw)


def test_cpu_takes_the_eager_step_whatever_cuda_graph_says():
    data = batches(SIZES[:4])
    expected, _, _ = run_eager(cfg_modern(), data)
    for flag in (True, False):
        cfg = cfg_modern(cuda_graph=flag)
        model, optimizer, scheduler = setup(cfg)
        step = make_train_step(model, optimizer, scheduler, cfg, torch.device("cpu"), 32)
        assert not isinstance(step, GraphedStep)
        assert [step(x, y)[0].item() for x, y in data] == expected


def test_fit_on_the_cpu_is_unchanged_by_cuda_graph(cifar):
    h = [
        rl.fit(rl.build_model("lite", seed=0), cifar, tiny_config(epochs=1, cuda_graph=f), progress=False)
        for f in (True, False)
    ]
    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert h[0][k] == h[1][k], k


def test_static_path_trains_as_eager_train_step():
    cfg = cfg_modern()
    data = batches()
    expected, eager_model, eager_opt = run_eager(cfg, data)

    model, optimizer, scheduler = setup(cfg)
    step = make_train_step(model, optimizer, scheduler, cfg, torch.device("cpu"), 32, capture=False)
    assert isinstance(step, GraphedStep)
    losses, lrs = [], []
    for x, y in data:
        loss, logits = step(x, y)
        assert logits.shape == (len(y), 10) and loss.shape == ()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]["lr"])
    assert step.static[0].is_contiguous(memory_format=torch.channels_last)  # the pipeline's layout
    assert losses == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert_same_state(eager_model, eager_opt, model, optimizer, rtol=1e-5, atol=1e-6)
    # The groups hold floats again (the scheduler's, checkpoints'), and torch's own choice of kernel.
    assert all(type(lr) is float for lr in lrs)
    assert optimizer.param_groups[0]["fused"] == eager_opt.param_groups[0]["fused"]
    assert optimizer.param_groups[0]["foreach"] == eager_opt.param_groups[0]["foreach"]
    assert optimizer.param_groups[0]["lr"] == eager_opt.param_groups[0]["lr"]

    # Its state dict resumes an eager optimizer, which then steps as the graphed one would.
    fresh_model, fresh_opt, _ = setup(cfg)
    fresh_model.load_state_dict(model.state_dict())
    fresh_opt.load_state_dict(optimizer.state_dict())
    x, y = data[0]
    a = train_step(fresh_model, fresh_opt, _NoOp(), x, y, cfg, torch.device("cpu"))[0]
    b = train_step(eager_model, eager_opt, _NoOp(), x, y, cfg, torch.device("cpu"))[0]
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


class _NoOp:
    def step(self):
        pass


@pytest.mark.parametrize("trained_before", [False, True], ids=["fresh optimizer", "optimizer with state"])
def test_warm_up_leaves_parameters_buffers_and_optimizer_state_untouched(trained_before):
    cfg = cfg_modern()
    model, optimizer, scheduler = setup(cfg)
    data = batches()
    if trained_before:
        for x, y in data[:2]:
            train_step(model, optimizer, scheduler, x, y, cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state_before = [t.clone() for t in optimizer_tensors(optimizer)]
    lr_before = optimizer.param_groups[0]["lr"]

    step = make_train_step(model, optimizer, scheduler, cfg, torch.device("cpu"), 32, capture=False)
    assert step._record_step(*data[3])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    after = optimizer_tensors(optimizer)
    if trained_before:
        assert len(after) == len(state_before) and all(torch.equal(a, b) for a, b in zip(after, state_before))
    else:  # warm-up created the momentum buffers: zero, so the first step is eager's first step
        assert len(after) == len(list(model.parameters())) and all(not t.any() for t in after)
    assert optimizer.param_groups[0]["lr"] == lr_before and scheduler.last_epoch == (2 if trained_before else 0)


def test_a_failed_capture_prints_one_line_and_trains_eagerly(monkeypatch, capsys):
    def broken(self):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(GraphedStep, "_record", broken)
    cfg = cfg_modern()
    data = batches()
    expected, eager_model, eager_opt = run_eager(cfg, data)
    model, optimizer, scheduler = setup(cfg)
    step = make_train_step(model, optimizer, scheduler, cfg, torch.device("cpu"), 32, capture=False)
    losses = [step(x, y)[0].item() for x, y in data]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "cuda_graph: capture failed (RuntimeError: operation not permitted when stream is capturing); "
        "training eagerly"
    ]
    assert step.failed
    assert losses == expected  # warm-up restored exactly, then train_step itself
    assert_same_state(eager_model, eager_opt, model, optimizer, rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_other_optimizers_train_eagerly_with_one_line(optimizer, capsys):
    cfg = dataclasses.replace(cfg_modern(), optimizer=optimizer, lr=1e-3)
    model, opt, scheduler = setup(cfg)
    step = make_train_step(model, opt, scheduler, cfg, torch.device("cpu"), 32, capture=False)
    assert not isinstance(step, GraphedStep)
    name = type(opt).__name__
    assert capsys.readouterr().err == f"cuda_graph: {name} is not supported (SGD only); training eagerly\n"


def test_cuda_graph_is_a_validated_config_field_that_old_checkpoints_do_not_need(cifar, tmp_path):
    with pytest.raises(rl.ConfigError, match="cuda_graph='yes' must be True or False"):
        rl.TrainConfig(cuda_graph="yes")
    from resnet_tools.checkpoints import check_resumable

    cfg = tiny_config(epochs=1)
    model = rl.build_model("lite", seed=0)
    rl.fit(model, cifar, cfg, checkpoint=tmp_path / "c.pt", progress=False)
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    del saved["config"]["cuda_graph"]  # as written before the field existed
    for flag in (True, False):
        check_resumable(saved, dataclasses.replace(cfg, cuda_graph=flag), model, tmp_path / "c.pt", cifar)


def test_saved_results_ignore_cuda_graph(cifar, tmp_path):
    import json

    from resnet_tools.results import run_name, saved_results

    cfg = tiny_config(epochs=1)
    folder = tmp_path / run_name(cfg)
    folder.mkdir()
    config = dataclasses.asdict(cfg)
    del config["cuda_graph"]  # a results.json written before the field existed
    data = {"root": str(cifar.root), "label": cifar.label, "n_test": len(cifar.test_y),
            **{k: cifar.fingerprint[k] for k in ("train_sha256", "test_sha256")}}
    rest = {"num_params": 1, "history": {}, "final": {}, "device": "cpu", "wall_seconds": 1.0}  # read_record's keys
    (folder / "results.json").write_text(json.dumps({"config": config, "data": data, **rest}))
    (folder / "checkpoint.pt").write_bytes(b"")
    assert saved_results(tmp_path, cfg, cifar) is not None
    assert saved_results(tmp_path, dataclasses.replace(cfg, cuda_graph=False), cifar) is not None


def test_module_imports_torch_and_the_step_only():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cudagraph))
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert top <= {"__future__", "contextlib", "sys", "time", "typing", "torch", "resnet_tools"}
    ours = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module.startswith("resnet_tools")}
    assert ours == {"resnet_tools.step"}  # a leaf, as tests/test_floors.py checks: never resnet_lib


# --------------------------------------------------------------------------------------------
# On a GPU: the graph itself
# --------------------------------------------------------------------------------------------
@needs_cuda
def test_graphed_step_trains_as_eager_on_a_gpu():
    cfg = rl.TrainConfig.from_recipe("modern", model="lite", device="cuda")  # batch 128, lr 0.1, bf16
    sizes = (128,) * 6 + (100,) + (128,) * 4  # a smaller batch in between: the eager remainder
    data = batches(sizes, device="cuda")
    expected, eager_model, eager_opt = run_eager(cfg, data, "cuda")

    model, optimizer, scheduler = setup(cfg, "cuda")
    step = make_train_step(model, optimizer, scheduler, cfg, torch.device("cuda"), cfg.batch_size)
    assert isinstance(step, GraphedStep)
    losses = [step(x, y)[0].item() for x, y in data]
    assert step.graph is not None and not step.failed and step.capture_seconds > 0
    assert losses == pytest.approx(expected, rel=2e-2, abs=2e-2)  # bf16 autocast: not bit-identical
    assert losses[-1] < losses[0]  # it learns
    assert_same_state(eager_model, eager_opt, model, optimizer, rtol=2e-2, atol=2e-3)
    assert all(type(g["lr"]) is float for g in optimizer.param_groups)


@needs_cuda
def test_graphed_fit_resumes_as_an_uninterrupted_run(cifar, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=3, device="cuda", cuda_graph=True)
    full_model = rl.build_model("lite", seed=0)
    full = rl.fit(full_model, cifar, cfg, checkpoint=tmp_path / "full.pt", progress=False)

    ck = tmp_path / "part.pt"
    fit_interrupted(monkeypatch, rl.build_model("lite", seed=0), cifar, cfg, ck)
    shutil.copy(ck, tmp_path / "eager.pt")
    resumed_model = rl.build_model("lite", seed=123)  # weights come from the checkpoint
    resumed = rl.fit(resumed_model, cifar, cfg, checkpoint=ck, resume=True, progress=False)
    # The graphed run's checkpoint also resumes eagerly: its optimizer state is an ordinary one.
    eager_model = rl.build_model("lite", seed=123)
    eager_cfg = dataclasses.replace(cfg, cuda_graph=False)
    eager = rl.fit(eager_model, cifar, eager_cfg, checkpoint=tmp_path / "eager.pt", resume=True, progress=False)
    for run, model in ((resumed, resumed_model), (eager, eager_model)):
        assert run["epoch"] == full["epoch"] and run["lr"] == full["lr"]
        for k in ("train_loss", "test_loss"):
            assert run[k] == pytest.approx(full[k], rel=1e-2, abs=1e-3), k
        for (name, a), b in zip(full_model.state_dict().items(), model.state_dict().values()):
            torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-3, msg=name)


# --------------------------------------------------------------------------------------------
# The benchmark's GPU targets and its graphed steps (no GPU needed: a report as a GPU run writes it)
# --------------------------------------------------------------------------------------------
def test_bench_checks_the_gpu_targets_and_sees_fits_steps(cifar):
    from test_bench import load_bench

    reporting, methods = load_bench("reporting"), load_bench("methods")
    ratios = {
        "pipeline_over_ceiling": 0.95,
        "pipeline_over_reference_num_workers8": 2.5,
        "pipeline_over_best_reference": 2,
    }
    epoch = {"images": 50_000, "batch_size": 128, "epoch_seconds": 0.3, "projected_40_epochs_seconds": 20.0}
    report = {"throughput": {"lite": {"ratios": ratios}}, "full_epoch": {"lite": epoch, "improved": epoch}}
    checks = {c["target"]: c["ok"] for c in reporting.check_targets(torch.device("cuda"), report)}
    assert checks == {
        "lite: pipeline >= 3.0x the 8-worker reference loop (GPU)": False,
        "lite: pipeline >= 90% of the fixed-batch ceiling (cuda)": True,
        "lite: <= 0.25 s per 50,000-image epoch (GPU)": False,
        "improved: <= 0.45 s per 50,000-image epoch (GPU)": True,
        "improved: <= 25.0 s for 40 epochs with warm-up and evaluation (GPU)": True,
    }
    assert not any("GPU" in c["target"] for c in reporting.check_targets(torch.device("cpu"), report))

    factory = make_step  # fit's step factory, which the benchmark builds its own steps with too
    with methods.built_steps() as steps:  # what the pipeline and epoch sections read capture times from
        rl.fit(rl.build_model("lite", seed=0), cifar, tiny_config(epochs=1), progress=False)
    assert len(steps) == 1 and methods.capture_seconds(steps) == 0.0  # the CPU's step is eager
    assert make_step is factory  # put back
