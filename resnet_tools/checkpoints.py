"""The checkpoint format: what `resnet_lib.fit` writes after every epoch (`checkpoint_state`), the
safe loader of the dict (`load_checkpoint_dict`), and the checks that a checkpoint fits the run or
model that uses it. Rebuilding a model from one is resnet_tools.inference.load_checkpoint's.
Imports torch and the leaves resnet_tools.budget, dataset, renamed and safeio only."""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from resnet_tools.budget import count_params
from resnet_tools.dataset import CIFAR10
from resnet_tools.renamed import with_current_recipe
from resnet_tools.safeio import is_safetensors, state_sha256

# What `fit` writes into every checkpoint (format 1); resuming also needs _RESUME_KEYS.
CHECKPOINT_FORMAT = 1
_CHECKPOINT_KEYS = ("format", "epoch", "config", "num_params", "stats", "model_state")
_RESUME_KEYS = ("optimizer", "scheduler", "rng", "history")
# Parts of a checkpoint whose SHA-256 it stores ("sha256": {key: hex}); checkpoints written
# before this have no "sha256" and load unverified.
_HASHED_KEYS = ("model_state", "optimizer")

# Config fields that may differ between a checkpoint and the run that resumes it:
# they change how fast it runs, not what it computes.
RESUME_FREE = {"device", "compile", "cuda_graph", "bf16", "channels_last", "tta", "allow_over_budget"}
# TrainConfig fields added after checkpoints were first written: a checkpoint without one was
# trained with this value.
_ADDED_FIELDS = {"sync_bn": False, "init_from": "", "teacher": "", "distill_temperature": 4.0, "distill_alpha": 0.9}


def checkpoint_state(
    epoch: int,
    cfg: Any,  # a resnet_lib.TrainConfig
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    gen: torch.Generator,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    history: dict[str, list[float]],
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a checkpoint holds after `epoch` epochs: enough to rebuild the model for inference
    (_CHECKPOINT_KEYS) and to resume training exactly (_RESUME_KEYS); the data it was trained on
    (CIFAR10.fingerprint), and SHA-256 sums of its weights and optimizer state (state_sha256),
    which loading verifies."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": dataclasses.asdict(cfg),
        "num_params": count_params(model),
        "stats": {"mean": list(stats[0]), "std": list(stats[1])},
        "model_state": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"data": gen.get_state()},
        "history": history,
    }
    if data is not None:
        state["data"] = data
    state["sha256"] = {k: state_sha256(state[k]) for k in _HASHED_KEYS}
    return state


def elapsed_seconds(saved: dict[str, Any]) -> float:
    """Wall time a checkpoint's run has taken so far, over all its resumes: its elapsed_seconds, or
    for a checkpoint written before that field, the epochs' training time (a lower bound)."""
    if "elapsed_seconds" in saved:
        return float(saved["elapsed_seconds"])
    return float(sum(saved.get("history", {}).get("seconds", [])))


def check_config_matches(saved: dict[str, Any], expected: dict[str, Any], path: Path, now: str, advice: str) -> None:
    """Raise ValueError saying which model, or which config fields, differ from `expected`."""
    config = {**_ADDED_FIELDS, **(saved.get("config") or {})}
    if "model" in expected and config.get("model") != expected["model"]:
        raise ValueError(
            f"{path} is a checkpoint of model {config.get('model')!r}, not {expected['model']!r}; {advice}"
        )
    diffs = {k: (config.get(k), v) for k, v in expected.items() if config.get(k) != v}
    if diffs:
        text = ", ".join(f"{k}: checkpoint {a!r} vs {now} {b!r}" for k, (a, b) in diffs.items())
        raise ValueError(f"{path} was written with a different config ({text}); {advice}")


def _describe_data(d: dict[str, Any]) -> str:
    return f"{d.get('label')!r} at {d.get('root') or '?'} ({d.get('n_train')} training, {d.get('n_test')} test images)"


def check_same_data(saved: dict[str, Any], data: CIFAR10, path: Path) -> None:
    """Refuse to resume a run on other data than it was trained on (CIFAR10.fingerprint):
    its history and weights would mix two datasets. The data's folder may have moved; its
    images and labels may not change. Checkpoints written without a fingerprint are not checked."""
    was = saved.get("data")
    if not isinstance(was, dict) or "train_sha256" not in was:
        return
    now = data.fingerprint
    differ = [k for k in ("n_train", "n_test", "train_sha256", "test_sha256") if was.get(k) != now[k]]
    if differ:
        what = (
            "the same number of images, but different images or labels"
            if all(k.endswith("sha256") for k in differ)
            else "a different number of images"
        )
        raise ValueError(
            f"{path} was trained on other data: {_describe_data(was)}; this run has {_describe_data(now)} "
            f"({what}). Resume with the data it was trained on, or use another output folder to start over"
        )


def check_resumable(
    saved: dict[str, Any], cfg: Any, model: nn.Module, path: Path, data: CIFAR10 | None = None
) -> None:
    """Refuse to resume from a checkpoint that is weights-only, of another config or model, or
    (given `data`) of other data."""
    missing = [k for k in _RESUME_KEYS if k not in saved]
    if missing:
        raise ValueError(
            f"{path} cannot be resumed: it has no {', '.join(missing)} (a weights-only checkpoint); "
            "use another output folder to train from scratch"
        )
    expected = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUME_FREE}
    check_config_matches(saved, expected, path, "now", "use another output folder or the same config")
    if saved.get("num_params") != count_params(model):
        raise ValueError(f"{path} holds {saved.get('num_params')} parameters, the model has {count_params(model)}")
    if data is not None:
        check_same_data(saved, data, path)


# Per-epoch history. lr: at the start of the epoch; train_*: running values over the
# epoch's augmented batches; val_*/test_*: after the epoch, no TTA (val_* NaN without a
# validation split); seconds and images_per_sec: training only, evaluation excluded.


def load_checkpoint_dict(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by `fit`, with weights_only=True: tensors and plain
    containers only, so a malicious file cannot run code (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    does not override an explicit weights_only=True). Raises ValueError naming the file
    for anything that is not such a checkpoint; FileNotFoundError if there is no file."""
    path = Path(path)
    if path.is_file() and is_safetensors(path):
        raise ValueError(
            f"{path}: is a safetensors export (weights for inference), not a training checkpoint; load it with "
            "load_pretrained or load_for_inference (predict --checkpoint takes either)"
        )
    saved = _torch_load(path)
    _check_layout(saved, path)
    verify_checksums(saved, path)
    # A run started under an old recipe name (seed) resumes, and loads, as the new one (report).
    saved["config"] = with_current_recipe(saved["config"])
    return saved


def _torch_load(path: Path) -> Any:
    """torch.load(weights_only=True) of `path`, its failures as one ValueError naming the file and what
    it found (a refused global, an unreadable path, a truncated or corrupt file)."""
    try:
        with open(path, "rb") as f:  # a file object: torch.load reads a *.safetensors path as safetensors
            saved = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = (
            f"it asks for {found.group(1)}, which is not a tensor or a plain container"
            if found
            else ("it is not a plain-tensor torch file")
        )
        raise ValueError(
            f"{path}: refused to load: {what}. The file may be malicious or not a checkpoint; nothing in it "
            "was run. Do not open it with torch.load(weights_only=False)."
        ) from None
    except (IsADirectoryError, PermissionError) as e:  # other OSErrors come from damaged zips
        raise ValueError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - a damaged zip or pickle raises many types
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ValueError(
            f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {first}); expected a checkpoint.pt "
            "written by resnet_lib (fit / train)"
        ) from None
    return saved


def _check_layout(saved: Any, path: Path) -> None:
    """ValueError naming the file unless `saved` is a dict with every key of a checkpoint of this format."""
    if not isinstance(saved, dict):
        raise ValueError(
            f"{path}: holds a {type(saved).__name__}, not a resnet_lib checkpoint "
            f"(a dict with {', '.join(_CHECKPOINT_KEYS)})"
        )
    if "model_state" not in saved and saved and all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise ValueError(
            f"{path}: is a bare state_dict ({len(saved)} tensors), not a resnet_lib checkpoint: without its "
            "config, the model and its normalization are unknown. Use the checkpoint.pt that training wrote, "
            "or an exported .safetensors file"
        )
    missing = [k for k in _CHECKPOINT_KEYS if k not in saved]
    if missing:
        raise ValueError(
            f"{path}: not a resnet_lib checkpoint: no {', '.join(map(repr, missing))} "
            f"(expected {', '.join(_CHECKPOINT_KEYS)})"
        )
    if saved["format"] != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: checkpoint format {saved['format']!r}; this resnet_lib reads format {CHECKPOINT_FORMAT}"
        )
    if not isinstance(saved["config"], dict) or not isinstance(saved["model_state"], dict):
        raise ValueError(f"{path}: 'config' and 'model_state' must be dicts; not a resnet_lib checkpoint")


def verify_checksums(saved: dict[str, Any], path: Path) -> None:
    """Check the SHA-256 sums fit stored (checkpoint_state) against the tensors
    read back: ValueError naming the file and the damaged part. A checkpoint without sums
    (written before they existed, or by hand) is accepted as it is."""
    sums = saved.get("sha256")
    if sums is None:
        return
    if not isinstance(sums, dict):
        raise ValueError(f"{path}: 'sha256' must be a dict of checksums; not a resnet_lib checkpoint")
    for key in _HASHED_KEYS:
        if key in saved and key in sums and state_sha256(saved[key]) != sums[key]:
            raise ValueError(
                f"{path}: checksum mismatch in {key!r}: the file changed after it was saved (a damaged disk, "
                "copy or upload, or an edit); refusing to use it. Use an intact copy, or retrain"
            )


def check_weights_and_stats(path: str | Path, model: nn.Module, stats: Any) -> None:
    """Refuse weights with NaN or infinite values, and normalization statistics that are not a
    finite mean and a positive finite std for each of the 3 channels: with either, every image
    gets the same label (a model that runs, and silently predicts one class)."""
    ok = (
        isinstance(stats, dict)
        and all(
            isinstance(stats.get(k), (list, tuple))
            and len(stats[k]) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in stats[k])
            for k in ("mean", "std")
        )
        and all(v > 0 for v in stats["std"])
    )
    if not ok:
        shown = {k: stats.get(k) for k in ("mean", "std")} if isinstance(stats, dict) else stats
        raise ValueError(
            f"{path}: invalid normalization statistics {shown!r}; expected a finite mean and a positive, finite std "
            "for each of the 3 channels"
        )
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{path}: weight {name!r} holds {n} NaN or infinite value(s); refusing to load it")


def check_existing_checkpoint(path: Path, cfg: Any, model: nn.Module, resume: bool) -> None:
    """Before any training: a checkpoint to resume must match this run; one of an
    unfinished run (a closed session) is never overwritten by a run that does not resume it.
    A finished run's checkpoint, or an unreadable file, is moved aside with the rest of its run
    (runlog.set_aside_earlier_run) by the new run."""
    if resume:
        check_resumable(load_checkpoint_dict(path), cfg, model, path)
        return
    try:
        saved = load_checkpoint_dict(path)
    except ValueError:
        return  # corrupt or foreign: nothing to resume, so nothing is lost by replacing it
    done, total = saved["epoch"], saved["config"].get("epochs")
    if isinstance(done, int) and isinstance(total, int) and done < total:
        raise ValueError(
            f"{path} holds an unfinished run (epoch {done} of {total}); continue it with --resume "
            "(resume=True; in the notebooks RESUME=True, or make run RESUME=1), or delete it or choose another "
            "output folder to start over"
        )
