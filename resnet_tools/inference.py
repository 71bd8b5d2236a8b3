"""Inference on new images and shareable weights: predict, submission files, safetensors."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from resnet_lib import ARCHS, CIFAR10_MEAN, CIFAR10_STD, DataError, ResNet, build_model, count_params
from resnet_lib import logits_of, resolve_device
from resnet_tools.checkpoints import check_weights_and_stats, load_checkpoint
from resnet_tools.safeio import RefusedPickle, atomic_write, check_not_an_input, is_safetensors, safe_unpickle


def as_nchw_uint8(images: Any) -> torch.Tensor:
    """uint8 images as (N, 3, 32, 32) from (N, 32, 32, 3), (N, 3, 32, 32) or flat
    channel-major rows (N, 3072) as in the CIFAR batch files."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {x.dtype}")
    if x.ndim == 2 and x.shape[1] == 3 * 32 * 32:
        return x.reshape(-1, 3, 32, 32)
    if x.ndim == 4 and tuple(x.shape[1:]) == (3, 32, 32):
        return x
    if x.ndim == 4 and tuple(x.shape[1:]) == (32, 32, 3):
        return x.permute(0, 3, 1, 2).contiguous()
    raise ValueError(f"images must have shape (N, 32, 32, 3), (N, 3, 32, 32) or (N, 3072); got {tuple(x.shape)}")


def predict(
    model: nn.Module,
    images: Any,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    tta: bool = False,
    batch_size: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (N,), probabilities (N, 10)) for uint8 images in any layout as_nchw_uint8 takes.

    `stats` is the normalization the model was trained with (a checkpoint's "stats");
    default: the reference statistics of the official training set.
    """
    x = as_nchw_uint8(images)
    stats = stats if stats is not None else (CIFAR10_MEAN, CIFAR10_STD)
    logits = logits_of(model, x, stats, tta=tta, batch_size=batch_size)
    bad = (~torch.isfinite(logits)).any(1)
    if bad.any():
        raise ValueError(
            f"the model gave NaN or infinite outputs for {int(bad.sum())} of {len(x)} images (first: image "
            f"{int(bad.nonzero()[0, 0])}); its weights or normalization statistics are damaged. No labels written"
        )
    probs = logits.softmax(1)
    return probs.argmax(1), probs


def stats_of(saved: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return tuple(saved["stats"]["mean"]), tuple(saved["stats"]["std"])


EXPORT_FORMAT = "resnet_lib/1"


def export_safetensors(checkpoint: str | Path, out: str | Path) -> Path:
    """Write a checkpoint's weights as safetensors (no pickle), with its config,
    normalization statistics and parameter count in the file's metadata."""
    from safetensors.torch import save

    check_not_an_input(out, {"checkpoint": checkpoint})  # before the work, and again before writing
    model, saved = load_checkpoint(checkpoint, device="cpu")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": EXPORT_FORMAT,
        "model": saved["config"]["model"],
        "num_params": str(saved["num_params"]),
        "config": json.dumps(saved["config"]),
        "stats": json.dumps(saved["stats"]),
    }
    out = Path(out)
    check_not_an_input(out, {"checkpoint": checkpoint})
    blob = save(state, metadata=meta)  # bytes: a small model's weights, written atomically below
    atomic_write(out, "wb", lambda f: f.write(blob))
    return out


def _meta_json(path: Path, meta: dict[str, str], key: str) -> Any:
    """A JSON field of an export's metadata, as a dict; ValueError naming the file otherwise."""
    if key not in meta:
        raise ValueError(
            f"{path}: metadata has no {key!r} (found {sorted(meta)}); export it with resnet_lib.py export"
        )
    try:
        value = json.loads(meta[key])
    except ValueError:
        raise ValueError(f"{path}: metadata {key!r} is not valid JSON: {meta[key][:80]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: metadata {key!r} must be a JSON object, got {type(value).__name__}")
    return value


def load_pretrained(path: str | Path, device: str = "auto") -> tuple[ResNet, dict[str, Any]]:
    """Rebuild the model of an exported .safetensors file; return (model in eval mode,
    {"config", "stats", "num_params"}). Refuses a file whose parameter count or tensors
    do not match the architecture its metadata names, whose metadata is incomplete, or whose
    weights or normalization statistics are not finite (check_weights_and_stats)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable safetensors file ({first})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(
            f"{path}: metadata format {meta.get('format')!r}, expected {EXPORT_FORMAT!r} "
            "(export it with resnet_lib.py export)"
        )
    config = _meta_json(path, meta, "config")
    stats = _meta_json(path, meta, "stats")
    name = config.get("model")
    if name not in ARCHS:
        raise ValueError(f"{path}: unknown model {name!r}; valid: {', '.join(ARCHS)}")
    model = build_model(name, allow_over_budget=bool(config.get("allow_over_budget")))
    n_file = sum(v.numel() for k, v in state.items() if "running_" not in k and "num_batches" not in k)
    if str(meta.get("num_params")) != str(count_params(model)) or n_file != count_params(model):
        raise ValueError(
            f"{path}: holds {n_file:,} parameters (metadata says {meta.get('num_params')}), "
            f"but model {name!r} has {count_params(model):,}; refusing to load"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: tensors do not match model {name!r}: {str(e).splitlines()[0]}") from None
    check_weights_and_stats(path, model, stats)
    model.to(resolve_device(device)).eval()
    return model, {"config": config, "stats": stats, "num_params": count_params(model)}


def load_for_inference(
    path: str | Path, device: str = "auto"
) -> tuple[ResNet, tuple[tuple[float, ...], tuple[float, ...]]]:
    """(model, normalization stats) from a training checkpoint (.pt) or an export (.safetensors)."""
    model, stats, _ = load_for_inference_with_config(path, device)
    return model, stats


def load_for_inference_with_config(
    path: str | Path, device: str = "auto"
) -> tuple[ResNet, tuple[tuple[float, ...], tuple[float, ...]], dict[str, Any]]:
    """(model, normalization stats, the run's TrainConfig as a dict) from a training checkpoint
    (.pt) or an export (.safetensors, whose metadata holds the config): `predict` uses the
    config's `tta`, what the run was evaluated with."""
    if is_safetensors(path):  # by content, not by name
        model, meta = load_pretrained(path, device)
    else:
        model, meta = load_checkpoint(path, device)
    return model, stats_of(meta), dict(meta.get("config") or {})


def tta_label(tta: bool) -> str:
    """How an accuracy was measured, for printing beside it: 'flip TTA' or 'no TTA'."""
    return "flip TTA" if tta else "no TTA"


def _check_npy_size(path: Path) -> None:
    """Compare a .npy header's shape and dtype with the file's size before loading it: a header
    claiming 10^10 images would otherwise ask for terabytes of memory."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable .npy file ({str(e)[:200]})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects, not uint8 images")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need != size - offset:
        raise DataError(
            f"{path}: its header says shape {shape} of {dtype} ({need:,} bytes), but the file holds "
            f"{size - offset:,} bytes of data; truncated or damaged"
        )


IMAGE_FILES = (".png", ".jpg", ".jpeg")  # matched case-insensitively


def read_image_files(path: Path) -> tuple[torch.Tensor, list[Any]]:
    """(uint8 images (N, 3, 32, 32), ids) from one PNG/JPEG file or every one under a folder
    (any depth: a flat folder or the train/<class>/ image-folder layout), sorted; ids are the
    paths relative to the folder (the file name for one file). Other sizes are centre-cropped
    to a square and resized to 32x32, as CIFAR-10's images were made from larger photos."""
    from PIL import Image, ImageOps

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_FILES)
    if not files:
        raise DataError(f"{path}: no .png, .jpg or .jpeg images in it")
    out = np.empty((len(files), 3, 32, 32), dtype=np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as img:
                # BOX: area averaging, the usual filter for shrinking (exact for whole-number factors)
                rgb = ImageOps.fit(img.convert("RGB"), (32, 32), Image.Resampling.BOX)
        except Exception as e:  # noqa: BLE001 - corrupt images raise many types (OSError, SyntaxError, ...)
            raise DataError(f"{file}: cannot read the image ({type(e).__name__}: {e})") from None
        out[i] = np.asarray(rgb).transpose(2, 0, 1)
    ids = [file.name] if path.is_file() else [f.relative_to(path).as_posix() for f in files]
    return torch.from_numpy(out), ids


def read_unlabeled(path: str | Path) -> tuple[torch.Tensor, list[Any]]:
    """(uint8 images (N, 3, 32, 32), ids) from PNG/JPEG files (one, or a folder of them:
    read_image_files), a .npy array, or a pickle holding a dict with 'data' and optionally
    'ids' (loaded with the restricted unpickler, never pickle.load)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() in IMAGE_FILES:
        if not path.exists():
            raise DataError(f"{path}: no such file")
        return read_image_files(path)
    if path.suffix == ".npy":
        _check_npy_size(path)
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a plain numpy array ({e})") from None
        try:
            x = as_nchw_uint8(arr)
        except ValueError as e:
            raise DataError(f"{path}: {e}") from None
        return x, list(range(len(x)))
    try:
        obj = safe_unpickle(path)
    except RefusedPickle as e:
        raise DataError(f"{path}: refused: {e}; nothing in it was run") from None
    except (IsADirectoryError, PermissionError, FileNotFoundError) as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        AttributeError,
        OverflowError,
        MemoryError,
        KeyError,
    ) as e:
        raise DataError(f"{path}: unreadable pickle ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with 'data' (and optionally 'ids'), got {type(obj).__name__}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj:
        raise DataError(f"{path}: no 'data' key (found {sorted(obj)})")
    data = obj["data"]
    try:
        arr = np.asarray(data) if isinstance(data, (np.ndarray, list, tuple)) else None
    except (ValueError, TypeError):  # ragged nested lists
        arr = None
    if arr is None or arr.dtype.kind not in "uif":
        kind = f"an array of {arr.dtype}" if arr is not None else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of images, got {kind}")
    try:
        x = as_nchw_uint8(arr)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    ids = obj.get("ids", obj.get("id"))
    if ids is not None and (isinstance(ids, (str, bytes)) or np.ndim(ids) != 1):
        raise DataError(
            f"{path}: 'ids' must be a list of {len(x)} ids, one per image, got {type(ids).__name__} {ids!r:.60}"
        )
    ids = list(range(len(x))) if ids is None else [i.item() if hasattr(i, "item") else i for i in ids]
    if len(ids) != len(x):
        raise DataError(f"{path}: {len(ids)} ids for {len(x)} images")
    return x, ids


# First characters that make a spreadsheet read a cell as a formula (CSV injection): an id
# starting with one of them is refused unless it is a number (-3, +1.5).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    if text != text.strip():
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_submission(path: str | Path, ids: list[Any], labels: torch.Tensor) -> Path:
    """CSV with header ID,Labels (labels as class indices), the class-competition format,
    written with the csv module (an id with a comma or a quote is quoted) and atomically.

    Refused (ValueError naming the row): a number of ids other than of labels, an id with a
    line break (it would split its row), and an id a spreadsheet would run as a formula (text
    starting with = + - @, a tab or a carriage return; numbers such as -3 are fine). Refused,
    not rewritten: an altered id would no longer match the grader's. Duplicate or empty ids
    are written as they are, with a warning.
    """
    import csv  # stdlib
    import warnings  # stdlib

    path = Path(path)
    labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if len(ids) != len(labels):
        raise ValueError(f"{path}: {len(ids)} ids for {len(labels)} labels")
    texts = ["" if i is None or (isinstance(i, float) and i != i) else str(i) for i in ids]  # None, NaN: empty
    for row, text in enumerate(texts, start=1):
        if "\n" in text or "\r" in text:
            raise ValueError(f"{path}: id {text!r} (row {row}) contains a line break; it would split its row")
        if text.startswith(FORMULA_STARTS) and not _is_number(text):
            raise ValueError(
                f"{path}: id {text!r} (row {row}) starts with {text[0]!r}: a spreadsheet would run it as a formula "
                "(CSV injection); refusing to write it"
            )
    empty = [row for row, text in enumerate(texts, start=1) if not text.strip()]
    if empty:
        warnings.warn(f"{path}: {len(empty)} empty id(s), first at row {empty[0]}", UserWarning, stacklevel=2)
    seen: set[str] = set()
    dups = [text for text in texts if text.strip() and (text in seen or seen.add(text))]
    if dups:
        shown = ", ".join(map(repr, sorted(set(dups))[:5]))
        warnings.warn(
            f"{path}: {len(dups)} duplicate id(s) ({shown}{', ...' if len(set(dups)) > 5 else ''})",
            UserWarning,
            stacklevel=2,
        )

    def write(f: Any) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ID", "Labels"])
        w.writerows((text, int(c)) for text, c in zip(texts, labels))

    atomic_write(path, "w", write)
    return path
