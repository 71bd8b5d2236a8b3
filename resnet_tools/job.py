"""The whole training job: `train_and_evaluate` loads the data, builds the model, fits it
(resnet_lib.fit), evaluates it and writes results.json beside the checkpoints, history.csv and
TensorBoard files; the command line's `train` and the notebooks call it. A tool above the core: it
looks the core's functions up in resnet_lib at call time (rl.fit, rl.load_cifar10), so a test can
stand in for them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import resnet_lib as rl
from resnet_lib import ResNet, TrainConfig
from resnet_tools import checkpoints
from resnet_tools import distributed as ddp
from resnet_tools.budget import count_params
from resnet_tools.dataset import CIFAR10
from resnet_tools.devices import resolve_device
from resnet_tools.distill import agreement
from resnet_tools.errors import ConfigError, RanksDisagree
from resnet_tools.inference import load_checkpoint, load_for_inference_with_config
from resnet_tools.results import ResultsError, read_record, run_record
from resnet_tools.runlog import EpochLog
from resnet_tools.safeio import check_writable, run_lock, write_json
from resnet_tools.evaluation import evaluate_splits, logits_of


def train_and_evaluate(
    cfg: TrainConfig,
    data: CIFAR10 | None = None,
    data_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    download: bool = True,
    resume: bool = False,
    progress: bool = True,
) -> tuple[ResNet, dict[str, Any]]:
    """The whole job: load data, build the model, fit, evaluate, write results.

    Writes `out_dir/checkpoint.pt`, `out_dir/best.pt` (the best validation accuracy so far),
    `out_dir/history.csv` and TensorBoard event files (every epoch) and `out_dir/results.json`;
    returns (trained model, results dict). The results say what produced them: data, epochs,
    device, wall time. With `resume`, continues from `out_dir/checkpoint.pt`; without it,
    refuses to overwrite the checkpoint of an unfinished run (ValueError, before any work).

    Under torchrun (WORLD_SIZE > 1) it starts the process group (NCCL on GPUs, Gloo on CPUs)
    and ends it when done; `resnet_lib.fit` then trains with DDP and only rank 0 writes files.
    """
    # What fails without data fails first: the config, a device this machine lacks, an
    # unwritable output folder. OUT/.lock (run_lock, held by rank 0 alone under torchrun) makes a
    # second process training into the same folder fail at once instead of both writing there.
    cfg.validate()
    device = resolve_device(cfg.device)
    lock = contextlib.nullcontext()
    if out_dir is not None:
        check_writable(Path(out_dir))
        if int(os.environ.get("RANK", "0")) == 0:
            lock = run_lock(Path(out_dir))
    with lock:
        started = ddp.init_from_env(device) if ddp.env_world_size() > 1 else False
        together = False  # every rank got here at once: the closing barrier is safe
        try:
            result = _train_and_evaluate(cfg, device, data, data_dir, out_dir, download, resume, progress)
            together = True
            return result
        except RanksDisagree:
            together = True
            raise
        except RuntimeError as e:  # Gloo's timeout or lost peer: one line that says what happened
            failure = ddp.rank_failure(e)
            if failure is None:
                raise
            raise failure from e
        finally:
            if started:
                ddp.shutdown(together)


def _train_and_evaluate(
    cfg: TrainConfig,
    device: torch.device,  # resolve_device(cfg.device), chosen once by train_and_evaluate
    data: CIFAR10 | None,
    data_dir: str | Path | None,
    out_dir: str | Path | None,
    download: bool,
    resume: bool,
    progress: bool,
) -> tuple[ResNet, dict[str, Any]]:
    # train_and_evaluate checked the config, the device and the output folder; what else can
    # fail without data fails here, before loading (or downloading) data and before training:
    # the batch split across ranks, the model's budget, and what an existing checkpoint allows.
    if ddp.world().distributed:
        # First, before any rank can stop alone (a checkpoint check, its data) and leave the others waiting.
        ddp.check_ranks_agree(ddp.run_settings(cfg, device, resume=resume), ddp.world())
        ddp.check_batch_size(cfg.batch_size, ddp.world())
    out = Path(out_dir) if out_dir is not None else None
    checkpoint = out / "checkpoint.pt" if out is not None else None
    model = rl.build_model(cfg.model, seed=cfg.seed, allow_over_budget=cfg.allow_over_budget)
    if checkpoint is not None and checkpoint.exists():
        checkpoints.check_existing_checkpoint(checkpoint, cfg, model, resume)
    finished = _finished_run(out, cfg) if resume and checkpoint is not None and checkpoint.exists() else None
    if finished is not None:  # nothing to resume: a second final evaluation would rewrite its wall time
        print(f"{out}: this run is finished ({cfg.epochs} epochs); its results.json is kept as it is", file=sys.stderr)
        model.load_state_dict(checkpoints.load_checkpoint_dict(checkpoint)["model_state"])
        return model.to(device), finished
    source = None
    if cfg.init_from and not (resume and checkpoint is not None and checkpoint.exists()):
        source = _init_weights_from(model, cfg)
    if data is None:
        data = rl.load_cifar10(data_dir, download=download)
    teacher, teacher_record = _load_teacher(cfg, data) if cfg.teacher else (None, None)
    world = ddp.world()
    # history.csv and TensorBoard scalars in out_dir after every epoch (resnet_tools.runlog), rank 0 only.
    fresh = not (resume and checkpoint is not None and checkpoint.exists())
    log = _epoch_log(out, fresh) if world.main else None
    t0 = time.perf_counter()
    if not fresh:  # the wall time of a resumed run counts its earlier sessions too
        t0 -= checkpoints.elapsed_seconds(checkpoints.load_checkpoint_dict(checkpoint))
    try:
        history = rl.fit(
            model, data, cfg, checkpoint=checkpoint, resume=resume, progress=progress, on_epoch=log, teacher=teacher
        )
    except BaseException:
        if log is not None:
            log.close()
        raise
    wall = time.perf_counter() - t0
    results = _final_results(cfg, model, history, data, device, wall, source, teacher, teacher_record)
    if log is not None:
        log.final(results)
        log.close()
    if out is not None and world.main:
        write_json(results, out / "results.json")
    ddp.barrier()
    return model, results


def _final_results(
    cfg: TrainConfig, model: nn.Module, history: dict[str, list[float]], data: CIFAR10, device: torch.device,
    wall: float, source: dict[str, Any] | None, teacher: nn.Module | None, teacher_record: dict[str, Any] | None,
) -> dict[str, Any]:
    """results.json's record of a trained model: evaluated on the validation and test splits (flip TTA
    where cfg says), where its initial weights came from, and which teacher it learned from."""
    (train_x, _), val_xy = rl.split_train_val(data, cfg)
    device = ddp.rank_device(device) if ddp.world().distributed else device
    val, test = evaluate_splits(model, val_xy, data, data.stats, tta=cfg.tta, bf16=cfg.bf16)
    results = run_record(cfg, model, history, val, test, data, len(train_x), len(val_xy[1]), device, wall)
    if source is not None or cfg.init_from:  # on a resume the checkpoint already holds those weights
        results["init_from"] = source or {"path": cfg.init_from}
    if teacher is not None:  # which teacher, and how often the student predicts as it does on the test set
        teacher_test = logits_of(teacher, data.test_x, data.stats, tta=cfg.tta, bf16=cfg.bf16)
        results["teacher"] = {**(teacher_record or {}), "test_agreement": agreement(test.predictions, teacher_test)}
    return results


def _finished_run(out: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """out/results.json when it records this run finished: all cfg.epochs epochs of the same
    model, recipe and seed (the checkpoint beside it was already checked to match cfg)."""
    try:
        res = read_record(out / "results.json")
        c, epochs = res["config"], res["history"]["epoch"]
    except (ResultsError, KeyError, TypeError):
        return None  # none, or unreadable: the resume evaluates and writes it anew
    same = all(c.get(k) == getattr(cfg, k) for k in ("model", "recipe", "seed", "epochs"))
    return res if same and isinstance(epochs, list) and len(epochs) == cfg.epochs else None


def _init_weights_from(model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """Load cfg.init_from's weights into `model` (same architecture, checked); what results.json
    records of where they came from: the path, its model, recipe, seed, epochs and validation accuracy."""
    path = Path(cfg.init_from).expanduser()
    if not path.is_file():
        raise ConfigError(f"init_from={cfg.init_from!r}: no such checkpoint file")
    trained, saved = load_checkpoint(path, device="cpu", expect={"model": cfg.model})
    model.load_state_dict(trained.state_dict())
    src, val = saved["config"], [a for a in saved["history"].get("val_acc", []) if not math.isnan(a)]
    described = {k: src.get(k) for k in ("model", "recipe", "seed")}
    return {"path": str(path), **described, "epochs": saved["epoch"], "val_acc": val[-1] if val else None}


def _load_teacher(cfg: TrainConfig, data: CIFAR10) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher cfg.teacher names (a checkpoint or a safetensors export, checked as for
    inference: sums, finite weights), and what results.json records of it. Refused unless it
    normalizes as `data` does and predicts its classes: a teacher of other data misleads silently."""
    path = Path(cfg.teacher).expanduser()
    if not path.is_file():
        raise ConfigError(f"teacher={cfg.teacher!r}: no such checkpoint or safetensors file")
    try:
        teacher, stats, config = load_for_inference_with_config(path, device="cpu")
    except ValueError as e:
        raise ConfigError(f"teacher: {e}") from None
    theirs, ours = [*stats[0], *stats[1]], [*data.stats[0], *data.stats[1]]
    if len(theirs) != len(ours) or not all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(theirs, ours)):
        raise ConfigError(
            f"teacher {path} normalizes with mean/std {stats}, this data with {data.stats}: it was trained on "
            "other data; train a teacher on this data first"
        )
    with torch.no_grad():
        n_out = teacher(torch.zeros(1, 3, *data.train_x.shape[2:])).shape[1]
    if n_out != len(data.classes):
        raise ConfigError(f"teacher {path} predicts {n_out} classes, this data has {len(data.classes)}")
    record = {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        **{k: config.get(k) for k in ("model", "recipe", "seed", "epochs")},
        "num_params": count_params(teacher),
    }
    beside = path.with_name("results.json")  # the run the teacher came from, when it is there to tell
    try:
        final = json.loads(beside.read_text())["final"]
        record.update(test_acc=float(final["test_acc"]), val_acc=float(final["val_acc"]), tta=bool(final["tta"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return teacher, record


def _epoch_log(out: Path | None, fresh: bool) -> Any:
    """fit's on_epoch callback writing history.csv and TensorBoard event files into `out`, or None;
    `fresh` (not a resume) first moves an earlier run's files aside (runlog.set_aside_earlier_run)."""
    if out is None:
        return None
    return EpochLog(out, fresh=fresh)
