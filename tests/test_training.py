"""Training loop: learning, determinism, resume, divergence, config validation, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import resnet_lib as rl
from resnet_tools import budget, inference, job, results
from conftest import ROOT, fit_interrupted, tiny_config
from resnet_tools.evaluation import evaluate
from resnet_tools.optim import lr_factor


def test_learns_a_separable_toy_set(cifar):
    cfg = tiny_config(epochs=4, lr=0.1)
    model = rl.build_model("lite", seed=0)
    history = fit_quiet(model, cifar, cfg)
    assert set(history) == set(rl.HISTORY_KEYS)
    assert len(history["epoch"]) == 4
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["test_acc"][-1] >= 0.9  # chance is 0.1
    ev = evaluate(model, cifar, tta=True)
    assert ev.logits.shape == (100, 10) and ev.predictions.shape == (100,)
    assert ev.accuracy == pytest.approx((ev.predictions == cifar.test_y).float().mean().item())
    assert all(v > 0 for v in history["images_per_sec"])


def fit_quiet(model, data, cfg, **kw):
    return rl.fit(model, data, cfg, progress=False, **kw)


def test_same_seed_same_history(cifar):
    cfg = tiny_config()
    h1 = fit_quiet(rl.build_model("lite", seed=0), cifar, cfg)
    h2 = fit_quiet(rl.build_model("lite", seed=0), cifar, cfg)
    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert h1[k] == h2[k], k


def test_resume_gives_the_same_result_as_an_uninterrupted_run(cifar, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=3, cutout=8)
    full_model = rl.build_model("lite", seed=0)
    full = fit_quiet(full_model, cifar, cfg, checkpoint=tmp_path / "full.pt")

    # "Interrupted" early in epoch 2: the batch iterator of the second epoch raises after two
    # steps, then we resume.
    ck = tmp_path / "part.pt"
    part_model = rl.build_model("lite", seed=0)
    fit_interrupted(monkeypatch, part_model, cifar, cfg, ck)
    assert torch.load(ck, weights_only=True)["epoch"] == 1

    resumed_model = rl.build_model("lite", seed=123)  # weights come from the checkpoint
    resumed = fit_quiet(resumed_model, cifar, cfg, checkpoint=ck, resume=True)
    for k in ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"):
        assert resumed[k] == full[k], k
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_is_unwrapped_and_loads_with_weights_only(cifar, tmp_path):
    cfg = tiny_config(epochs=1)
    model = rl.build_model("lite", seed=0)
    fit_quiet(model, cifar, cfg, checkpoint=tmp_path / "c.pt")
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in saved["model_state"])
    assert saved["config"]["model"] == "lite" and saved["num_params"] == 78_042
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file
    loaded, _ = inference.load_checkpoint(tmp_path / "c.pt", device="cpu")
    assert torch.allclose(evaluate(loaded, cifar).logits, evaluate(model, cifar).logits, atol=1e-5)


def test_resume_refuses_another_model_or_config(cifar, tmp_path):
    ck = tmp_path / "c.pt"
    fit_quiet(rl.build_model("lite", seed=0), cifar, tiny_config(epochs=1), checkpoint=ck)
    with pytest.raises(ValueError, match="model 'lite', not 'improved'"):
        fit_quiet(
            rl.build_model("improved"), cifar, tiny_config(model="improved", epochs=1), checkpoint=ck, resume=True
        )
    with pytest.raises(ValueError, match=r"different config \(lr: checkpoint 0.05 vs now 0.2"):
        fit_quiet(rl.build_model("lite"), cifar, tiny_config(epochs=1, lr=0.2), checkpoint=ck, resume=True)


def test_a_checkpoint_older_than_a_config_field_resumes(cifar, tmp_path, monkeypatch):
    # A run started before init_from (or sync_bn) existed has no such key in its checkpoint's
    # config: it was trained with the field's default, so --resume must accept it.
    cfg, ck = tiny_config(epochs=2), tmp_path / "c.pt"
    fit_interrupted(monkeypatch, rl.build_model("lite", seed=0), cifar, cfg, ck)
    state = torch.load(ck, weights_only=True)
    for key in ("init_from", "sync_bn"):
        del state["config"][key]
    torch.save(state, ck)
    history = fit_quiet(rl.build_model("lite", seed=0), cifar, cfg, checkpoint=ck, resume=True)
    assert history["epoch"] == [1, 2]


def test_wall_time_of_a_resumed_run_counts_its_earlier_sessions(cifar, tmp_path, monkeypatch):
    cfg, out = tiny_config(epochs=2), tmp_path / "run"
    out.mkdir()
    fit_interrupted(monkeypatch, rl.build_model("lite", seed=0), cifar, cfg, out / "checkpoint.pt")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 0 < state["elapsed_seconds"] < 600
    state["elapsed_seconds"] = 1000.0  # as if the first session had taken 1,000 s
    torch.save(state, out / "checkpoint.pt")
    _, res = job.train_and_evaluate(cfg, data=cifar, out_dir=out, resume=True, progress=False)
    assert 1000 < res["wall_seconds"] < 1600
    assert torch.load(out / "checkpoint.pt", weights_only=True)["elapsed_seconds"] > 1000
    del state["elapsed_seconds"]  # epoch 1 again, from before the field: its training time stands in
    torch.save(state, out / "checkpoint.pt")
    (out / "results.json").unlink()
    _, res = job.train_and_evaluate(cfg, data=cifar, out_dir=out, resume=True, progress=False)
    assert state["history"]["seconds"][0] < res["wall_seconds"] < 600


def test_nan_loss_stops_with_epoch_and_step(cifar, tmp_path):
    cfg = tiny_config(epochs=3, lr=1e12, warmup_epochs=0.0, label_smoothing=0.0)
    with pytest.raises(rl.TrainingDiverged, match=r"epoch \d+, step \d+/6"):
        fit_quiet(rl.build_model("lite", seed=0), cifar, cfg, checkpoint=tmp_path / "c.pt")


def test_fit_enforces_the_budget(cifar):
    big = rl.ResNet((64, 128, 256, 640), (1, 1, 1, 1), allow_over_budget=True)
    with pytest.raises(budget.BudgetError):
        fit_quiet(big, cifar, tiny_config(epochs=1))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(model="vgg"), "choose one of: lite, improved"),
        (dict(optimizer="rmsprop"), "choose one of: sgd, adam, adamw"),
        (dict(schedule="step"), "choose one of: constant, cosine, onecycle"),
        (dict(epochs=0), "epochs=0 must be a positive integer"),
        (dict(batch_size=-8), "batch_size=-8 must be a positive integer"),
        (dict(lr="fast"), "lr='fast' must be a finite, non-negative number"),
        (dict(lr=float("nan")), "must be a finite"),
        (dict(device="tpu"), "choose one of: auto, cpu, cuda, mps"),
        (dict(crop="yes"), "crop='yes' must be True or False"),
    ],
)
def test_invalid_config_is_rejected_with_choices(overrides, message):
    with pytest.raises(rl.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**overrides)


def test_recipes():
    seed = rl.TrainConfig.from_recipe("report", model="improved")
    assert (seed.optimizer, seed.schedule, seed.crop, seed.flip, seed.epochs) == ("sgd", "constant", False, False, 40)
    adam = rl.TrainConfig.from_recipe("report", model="improved", optimizer="adam")
    assert adam.lr == 1e-3
    assert rl.TrainConfig.from_recipe("report", optimizer="adam", lr=None).lr == 1e-3  # as the CLI passes it
    assert rl.TrainConfig.from_recipe("report", optimizer="adam", lr=0.01).lr == 0.01
    modern = rl.TrainConfig.from_recipe("modern")
    assert modern.crop and modern.flip and modern.nesterov and modern.label_smoothing > 0 and modern.tta
    with pytest.raises(rl.ConfigError, match="valid choices: report, report-kuangliu, modern"):
        rl.TrainConfig.from_recipe("fancy")
    with pytest.raises(rl.ConfigError, match="unknown TrainConfig field"):
        rl.TrainConfig.from_recipe("report", epoch=3)



def test_every_recipe_means_the_same_on_every_device(monkeypatch):
    """One budget everywhere: no device changes a preset's batch size or learning rate (a larger GPU
    batch cost the Improved model about 5 points on real held-out images)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # device="auto" would pick a GPU
    for recipe, values in rl.RECIPES.items():
        for device in ("cpu", "cuda", "cuda:1", "auto"):
            cfg = rl.TrainConfig.from_recipe(recipe, device=device, teacher="t.pt" if recipe == "distill" else None)
            assert (cfg.batch_size, cfg.lr, cfg.epochs) == (values["batch_size"], values["lr"], values["epochs"])
    assert not hasattr(rl, "RECIPES_ON_CUDA")


def test_lr_schedules():
    f = lr_factor
    assert [f(s, 10, 0, "constant") for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert f(0, 10, 2, "onecycle") == 0.5 and f(1, 10, 2, "onecycle") == 1.0
    assert f(2, 10, 2, "onecycle") == 1.0 and f(10, 10, 2, "onecycle") == 0.0
    assert f(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert math.isclose(f(10, 10, 0, "cosine"), 0.0, abs_tol=1e-12)


def test_schedule_horizon_longer_than_the_run():
    """kuangliu/pytorch-cifar's CosineAnnealingLR(T_max=200) stopped after 40 epochs: the lr
    never decays far (0.909 of its peak in the last epoch), unlike a cosine over the run."""
    f, spe = lr_factor, 10  # steps per epoch
    last = 40 * spe - 1
    assert f(last, 40 * spe, 0, "cosine", horizon_steps=200 * spe) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * last / (200 * spe))))
    assert 0.90 < f(last, 40 * spe, 0, "cosine", 200 * spe) < 0.91 and f(last, 40 * spe, 0, "cosine") < 1e-3
    assert f(20 * spe, 40 * spe, 0, "onecycle", 80 * spe) == pytest.approx(0.75)  # linear decay, horizon 80
    assert f(5, 40 * spe, 0, "cosine", 0) == f(5, 40 * spe, 0, "cosine")  # 0 = the run's length
    cfg = rl.TrainConfig.from_recipe("report", schedule="cosine", schedule_epochs=200, lr=0.1)
    assert cfg.schedule_epochs == 200 and cfg.epochs == 40
    with pytest.raises(rl.ConfigError, match=r"schedule_epochs=20 must be 0 \(the run's length\) or at least"):
        rl.TrainConfig.from_recipe("report", schedule="cosine", schedule_epochs=20)


def test_fit_follows_the_schedule_horizon(cifar):
    """The per-epoch lr in the history follows a cosine over schedule_epochs, not over the run."""
    cfg = tiny_config(schedule="cosine", warmup_epochs=0.0, epochs=3, schedule_epochs=6, lr=0.1, val_size=0)
    history = rl.fit(rl.build_model("lite", seed=0), cifar, cfg, progress=False)
    spe = math.ceil(len(cifar.train_y) / cfg.batch_size)
    expected = [0.1 * lr_factor(e * spe, 3 * spe, 0, "cosine", 6 * spe) for e in range(3)]
    assert history["lr"] == pytest.approx(expected)
    assert history["lr"][-1] > 0.07  # a cosine over the 3-epoch run would be at 0.025 by now


def test_cli_train_writes_results_json(cifar_dir, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "resnet_lib.py"), "train", "--model", "lite", "--recipe", "modern",
         "--epochs", "1", "--batch-size", "64", "--device", "cpu", "--data-dir", str(cifar_dir),
         "--out", str(out), "--quiet", "--no-tta"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "lite modern seed 0: val acc" in proc.stdout and "test acc" in proc.stdout and "78,042 params" in proc.stdout
    )
    assert proc.stdout.count("(no TTA)") == 2  # val and test, each labelled
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["epochs"] == 1 and res["config"]["tta"] is False and res["config"]["batch_size"] == 64
    assert (
        res["num_params"] == 78_042
        and res["data"]["n_train"] == 180
        and res["data"]["n_val"] == 20
        and not res["data"]["official"]
    )
    assert 0 <= res["final"]["test_acc"] <= 1 and (out / "checkpoint.pt").exists()


def test_cli_errors_are_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "resnet_lib.py"), "train", "--data-dir", str(tmp_path / "nowhere"),
         "--no-download", "--out", str(tmp_path / "o"), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: CIFAR-10 files missing") and "Traceback" not in proc.stderr


def test_validation_split_is_seeded_disjoint_and_recorded(cifar):
    cfg = tiny_config(val_size=0.25, epochs=1)
    (tx, ty), (vx, vy) = rl.split_train_val(cifar, cfg)
    assert len(vy) == 50 and len(ty) == 150
    (tx2, _), (vx2, _) = rl.split_train_val(cifar, cfg)
    assert torch.equal(vx, vx2) and torch.equal(tx, tx2)
    flat = lambda x: {bytes(img.numpy().tobytes()) for img in x}  # noqa: E731
    assert not flat(tx) & flat(vx)  # no image is in both
    (_, _), (vx3, _) = rl.split_train_val(cifar, tiny_config(val_size=0.25, seed=1))
    assert not torch.equal(vx, vx3)
    assert len(rl.split_train_val(cifar, tiny_config(val_size=30))[1][1]) == 30
    (ax, _), (nx, _) = rl.split_train_val(cifar, tiny_config(val_size=0))
    assert torch.equal(ax, cifar.train_x) and len(nx) == 0
    history = fit_quiet(rl.build_model("lite", seed=0), cifar, cfg)
    assert 0 <= history["val_acc"][0] <= 1 and 0 <= history["test_acc"][0] <= 1
    no_val = fit_quiet(rl.build_model("lite", seed=0), cifar, tiny_config(val_size=0, epochs=1))
    assert math.isnan(no_val["val_acc"][0])
    with pytest.raises(rl.ConfigError, match="val_size"):
        tiny_config(val_size=2.5)
    with pytest.raises(rl.ConfigError, match="leaves no training images"):
        rl.split_train_val(cifar, tiny_config(val_size=200))


def test_fit_keeps_freed_memory_on_the_cpu(cifar, monkeypatch):
    import os

    glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc") if hasattr(os, "confstr") else False
    assert rl.keep_freed_memory() is glibc  # applied where the C library is glibc, a no-op elsewhere
    assert rl.keep_freed_memory() is glibc  # idempotent
    calls = []
    monkeypatch.setattr(rl, "keep_freed_memory", lambda: calls.append(1) or True)
    rl.fit(rl.build_model("lite", seed=0), cifar, tiny_config(epochs=1), progress=False)
    assert calls == [1]


def test_seed_kuangliu_preset_is_the_measured_reading():
    """The best-supported reading of the seed recipe (docs/models-and-recipes.md, "Which reading of the seed's recipe"):
    kuangliu/pytorch-cifar's main.py for 40 epochs without augmentation; Adam gets its usual 0.001."""
    cfg = rl.TrainConfig.from_recipe("report-kuangliu", model="lite")
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay) == ("sgd", 0.1, 0.9, False, 5e-4)
    assert (cfg.schedule, cfg.schedule_epochs, cfg.warmup_epochs, cfg.epochs, cfg.batch_size) == (
        "cosine",
        200,
        0,
        40,
        128,
    )
    assert not (cfg.crop or cfg.flip or cfg.cutout or cfg.tta or cfg.label_smoothing)
    spe = 352  # 45,000 images at batch 128
    last = lr_factor(40 * spe - 1, 40 * spe, 0, cfg.schedule, round(cfg.schedule_epochs * spe))
    assert 0.90 < last < 0.91  # the lr stays near its peak: a run that ends at a high learning rate
    assert rl.TrainConfig.from_recipe("report-kuangliu", optimizer="adam").lr == 1e-3
    assert results.run_name(cfg) == "lite-report-kuangliu-sgd"


def test_a_run_shorter_than_its_warm_up_is_warned_about(cifar):
    cfg = tiny_config(epochs=1, warmup_epochs=2.0)  # as `modern` with EPOCHS=1: the peak lr is never reached
    with pytest.warns(UserWarning, match=r"warmup_epochs=2 is not shorter than the run \(epochs=1\)"):
        history = rl.fit(rl.build_model("lite", seed=0), cifar, cfg, progress=False)
    assert max(history["lr"]) < cfg.lr  # what the warning says


def test_fit_keeps_the_best_validation_epoch_beside_the_last(cifar, tmp_path):
    ck = tmp_path / "checkpoint.pt"
    history = rl.fit(rl.build_model("lite", seed=0), cifar, tiny_config(epochs=3), checkpoint=ck, progress=False)
    best = torch.load(tmp_path / rl.BEST_CHECKPOINT, map_location="cpu", weights_only=True)
    val = history["val_acc"]
    assert best["epoch"] == val.index(max(val)) + 1  # the first epoch with the highest validation accuracy
    assert torch.load(ck, map_location="cpu", weights_only=True)["epoch"] == 3
    assert rl._is_best([0.5, 0.7]) and not rl._is_best([0.7, 0.7]) and not rl._is_best([0.5, float("nan")])
    no_val = tmp_path / "no-val" / "checkpoint.pt"
    no_val.parent.mkdir()
    rl.fit(rl.build_model("lite", seed=0), cifar, tiny_config(epochs=1, val_size=0), checkpoint=no_val, progress=False)
    assert no_val.exists() and not (no_val.parent / rl.BEST_CHECKPOINT).exists()  # the test set never selects


def test_init_from_starts_a_new_run_from_trained_weights_and_records_it(cifar, tmp_path):
    job.train_and_evaluate(tiny_config(epochs=2), data=cifar, out_dir=tmp_path / "a", progress=False)
    source = tmp_path / "a" / "checkpoint.pt"
    model, res = job.train_and_evaluate(
        tiny_config(epochs=1, lr=1e-9, warmup_epochs=0, init_from=str(source)),  # ~no update: the weights stay
        data=cifar, out_dir=tmp_path / "b", progress=False,
    )
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["init_from"]["path"] == str(source) and res["init_from"]["epochs"] == 2
    assert results.group_name(res["config"]) == "lite-modern-ft"  # not averaged with from-scratch seeds
    assert res["init_from"]["val_acc"] == pytest.approx(first["final"]["val_acc"])
    assert res["final"]["val_acc"] >= first["final"]["val_acc"] - 0.05  # far above a random init's chance
    with pytest.raises(rl.ConfigError, match="no such checkpoint"):
        job.train_and_evaluate(tiny_config(init_from=str(tmp_path / "none.pt")), data=cifar, progress=False)
    with pytest.raises(ValueError, match="improved"):
        job.train_and_evaluate(tiny_config(model="improved", init_from=str(source)), data=cifar, progress=False)


def test_resuming_a_finished_run_changes_nothing_and_says_so(cifar, tmp_path, capsys):
    out = tmp_path / "run"
    _, first = job.train_and_evaluate(tiny_config(epochs=1), data=cifar, out_dir=out, progress=False)
    before = (out / "results.json").read_bytes()
    model, again = job.train_and_evaluate(tiny_config(epochs=1), data=cifar, out_dir=out, resume=True, progress=False)
    assert (out / "results.json").read_bytes() == before and again == json.loads(before)
    assert "this run is finished (1 epochs)" in capsys.readouterr().err
    tta = first["final"]["tta"]
    assert evaluate(model, cifar, tta=tta, bf16=False).accuracy == pytest.approx(first["final"]["test_acc"])


def test_fit_checks_the_config_and_splits_once_per_run(cifar, tmp_path, monkeypatch):
    # The device, the config's check and the validation split are set up once per run, not per epoch
    # or per step (issue 27, point 4); a resumed run too.
    cfg = tiny_config(epochs=3)
    ck = tmp_path / "c.pt"
    fit_interrupted(monkeypatch, rl.build_model("lite", seed=0), cifar, cfg, ck)
    calls = {"validate": 0, "resolve_device": 0, "split_train_val": 0}

    def counted(name, real):
        def wrapper(*a, **k):
            calls[name] += name != "validate" or a[0] is cfg  # not the checkpoint's config, read back
            return real(*a, **k)

        return wrapper

    monkeypatch.setattr(rl.TrainConfig, "validate", counted("validate", rl.TrainConfig.validate))
    for name in ("resolve_device", "split_train_val"):
        monkeypatch.setattr(rl, name, counted(name, getattr(rl, name)))
    history = fit_quiet(rl.build_model("lite", seed=0), cifar, cfg, checkpoint=ck, resume=True)
    assert history["epoch"] == [1, 2, 3]
    assert calls == {"validate": 1, "resolve_device": 1, "split_train_val": 1}
