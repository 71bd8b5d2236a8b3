"""Inference on new images and shareable weights: models rebuilt from checkpoints, predict, submission
files, safetensors."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from resnet_lib import ARCHS, CIFAR10_MEAN, CIFAR10_STD, ResNet, TrainConfig, build_model
from resnet_tools.budget import count_params
from resnet_tools.checkpoints import RESUME_FREE, check_config_matches, check_weights_and_stats, load_checkpoint_dict
from resnet_tools.devices import resolve_device
from resnet_tools.errors import DataError
from resnet_tools.renamed import with_current_recipe
from resnet_tools.safeio import RefusedPickle, atomic_write, check_not_an_input, is_safetensors, safe_loads
from resnet_tools.evaluation import logits_of


# How flat (N, 3072) rows are ordered: channel-major (1024 R, 1024 G, 1024 B, as in CIFAR-10's
# batch files) or pixel-major (R, G, B of each pixel, as many competition files).
LAYOUTS = ("nchw", "nhwc")


def load_checkpoint(
    path: str | Path, device: str = "auto", expect: TrainConfig | dict[str, Any] | None = None
) -> tuple[ResNet, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; return (model in eval mode, checkpoint dict).

    `expect`: the config this checkpoint must have been trained with, as a TrainConfig
    (fields that only change speed are ignored) or a dict of fields, e.g.
    {"model": "improved"}; a mismatch raises ValueError saying which model or fields differ.
    """
    saved = load_checkpoint_dict(path)
    cfg = saved["config"]
    if expect is not None:
        expected = dataclasses.asdict(expect) if isinstance(expect, TrainConfig) else dict(expect)
        expected = {k: v for k, v in expected.items() if not (isinstance(expect, TrainConfig) and k in RESUME_FREE)}
        check_config_matches(saved, expected, Path(path), "expected", "load the checkpoint of that run instead")
    name = cfg.get("model")
    if name not in ARCHS:
        raise ValueError(f"{path}: unknown model {name!r} in checkpoint; valid: {', '.join(ARCHS)}")
    model = build_model(name, allow_over_budget=bool(cfg.get("allow_over_budget")))
    if saved.get("num_params") != count_params(model):
        raise ValueError(
            f"{path}: holds {saved.get('num_params')} parameters, model {name!r} has {count_params(model)}"
        )
    try:
        model.load_state_dict(saved["model_state"])
    except RuntimeError as e:
        raise ValueError(f"{path}: its tensors do not match model {name!r} ({str(e).splitlines()[0]})") from None
    check_weights_and_stats(path, model, saved["stats"])
    model.to(resolve_device(device)).eval()
    return model, saved


def _check_layout(layout: str | None) -> None:
    if layout not in (None, *LAYOUTS):
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} (or None), got {layout!r}")


def as_nchw_uint8(images: Any, layout: str | None = None) -> torch.Tensor:
    """uint8 images as (N, 3, 32, 32) from (N, 32, 32, 3), (N, 3, 32, 32) or flat rows (N, 3072).

    A 4-D shape says its layout; flat rows do not, so they need `layout` ("nchw" or "nhwc"):
    read the wrong way round they give confident nonsense, not an error. A `layout` that
    contradicts a 4-D shape is refused."""
    _check_layout(layout)
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {x.dtype}")
    shape = tuple(x.shape)
    if x.ndim == 4 and shape[1:] in ((3, 32, 32), (32, 32, 3)):
        own = "nchw" if shape[1:] == (3, 32, 32) else "nhwc"
        if layout not in (None, own):
            raise ValueError(f"images of shape {shape} are {own}, not the layout {layout!r} given")
        return x if own == "nchw" else x.permute(0, 3, 1, 2).contiguous()
    if x.ndim == 2 and shape[1] == 3 * 32 * 32:
        if layout is None:
            raise ValueError(
                f"flat rows of shape {shape} may be channel-major (nchw, as CIFAR-10's batch files) or "
                "pixel-major (nhwc): say which with --layout nchw or --layout nhwc (layout= in Python)"
            )
        return as_nchw_uint8(x.reshape(-1, 3, 32, 32) if layout == "nchw" else x.reshape(-1, 32, 32, 3))
    raise ValueError(f"images must have shape (N, 32, 32, 3), (N, 3, 32, 32) or (N, 3072); got {shape}")


def predict(
    model: nn.Module,
    images: Any,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    tta: bool = False,
    batch_size: int = 1000,
    layout: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (N,), probabilities (N, 10)) for uint8 images in any layout as_nchw_uint8 takes
    (flat (N, 3072) rows need `layout`, "nchw" or "nhwc").

    `stats` is the normalization the model was trained with (a checkpoint's "stats");
    default: the reference statistics of the official training set.
    """
    x = as_nchw_uint8(images, layout)
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
    from safetensors.torch import load

    path = Path(path)
    try:
        # From bytes read here, not safetensors' own open: it refuses a path whose name is not UTF-8.
        blob = path.read_bytes()
        state = load(blob)  # checks the header before the metadata is read from it below
        meta = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")]).get("__metadata__") or {}
    except (SafetensorError, OSError, ValueError, RuntimeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable safetensors file ({first})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(
            f"{path}: metadata format {meta.get('format')!r}, expected {EXPORT_FORMAT!r} "
            "(export it with resnet_lib.py export)"
        )
    config = with_current_recipe(_meta_json(path, meta, "config"))  # an export of an old run: today's names
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


def _npy_header(f: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of a .npy stream (a file, or a member of a .npz)."""
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    return shape, dtype


def _check_claim(where: str, shape: tuple[int, ...], dtype: np.dtype, held: int, container: str = "file") -> None:
    """Refuse a header whose shape and dtype do not need exactly the `held` bytes that follow it:
    a header claiming 10^10 images would otherwise ask for terabytes of memory."""
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects, not uint8 images")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need != held:
        raise DataError(
            f"{where}: its header says shape {shape} of {dtype} ({need:,} bytes), but the {container} holds "
            f"{held:,} bytes of data; truncated or damaged"
        )


def _check_npy_size(path: Path) -> None:
    """Compare a .npy header's shape and dtype with the file's size before loading it."""
    try:
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f)
            held = os.fstat(f.fileno()).st_size - f.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable .npy file ({str(e)[:200]})") from None
    _check_claim(str(path), shape, dtype, held)


# Deflate expands at most ~1032-fold: a member claiming more than that of its compressed bytes is a lie.
DEFLATE_MAX_RATIO = 1032


def _check_npz_member(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int) -> None:
    """The sizes the zip directory gives a member, and its .npy header, against the bytes the file holds."""
    where = f"{path}: array {info.filename.removesuffix('.npy')!r}"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DataError(f"{where} uses zip compression method {info.compress_type}; save with np.savez(_compressed)")
    most = info.compress_size if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO * info.compress_size
    if info.compress_size > archive_size or info.file_size > most:
        raise DataError(
            f"{where}: the zip directory says {info.file_size:,} bytes from {info.compress_size:,} stored, "
            f"more than the file's {archive_size:,} bytes can hold; truncated or damaged"
        )
    with z.open(info) as f:
        shape, dtype = _npy_header(f)
        held = info.file_size - f.tell()
    _check_claim(where, shape, dtype, held, container="archive")


def _npz_names(path: Path) -> list[str]:
    """The array names of a .npz (np.savez's members are NAME.npy), every member checked first."""
    try:
        archive_size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if sum(info.compress_size for info in infos) > archive_size:
                raise DataError(f"{path}: its zip directory claims more bytes than the file's {archive_size:,}")
            for info in infos:
                _check_npz_member(path, z, info, archive_size)
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, SyntaxError, RuntimeError, NotImplementedError) as e:
        raise DataError(f"{path}: not a readable .npz file ({str(e)[:200]})") from None
    return [info.filename.removesuffix(".npy") for info in infos]


NPZ_IMAGE_NAMES = ("data", "x", "images")  # what a .npz with several arrays may call its images


def _read_npz(path: Path, layout: str | None) -> tuple[torch.Tensor, list[Any]]:
    """A .npz of one array (the images), or of images named data, x or images plus an optional
    'ids'; any other set of arrays is refused rather than guessed at. No pickles are loaded."""
    names = _npz_names(path)
    images = [n for n in names if n in NPZ_IMAGE_NAMES]
    if len(names) == 1:
        images, ids_name = names, None
    elif len(images) == 1 and set(names) == {images[0], "ids"}:
        ids_name = "ids"
    else:
        raise DataError(
            f"{path}: holds arrays {names}; expected one array, or one named "
            f"{', '.join(NPZ_IMAGE_NAMES[:-1])} or {NPZ_IMAGE_NAMES[-1]} with an optional 'ids'"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz[images[0]]
            ids = npz[ids_name] if ids_name else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a plain numpy archive ({str(e)[:200]})") from None
    return _images_and_ids(path, arr, ids, layout)


def _read_npy(path: Path, layout: str | None) -> tuple[torch.Tensor, list[Any]]:
    _check_npy_size(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a plain numpy array ({e})") from None
    return _images_and_ids(path, arr, None, layout)


def _check_pickle_lengths(path: Path, blob: bytes) -> None:
    """Walk the pickle's opcodes, building nothing: the unpickler allocates what a length claims
    (BINBYTES8 of 10^12) before reading it, so a claim beyond the file's end is refused here."""
    import pickletools  # stdlib

    try:
        for _ in pickletools.genops(io.BytesIO(blob)):
            pass
    except ValueError as e:  # a length past the end, an unknown opcode, a missing STOP
        raise DataError(f"{path}: unreadable pickle ({str(e)[:200]}); truncated or damaged") from None


def _check_nested_size(path: Path, data: Any, file_size: int) -> None:
    """A pickle repeats an object by a 2-byte memo reference, so a small file can hold a list of
    millions of copies: refuse a 'data' of lists with more values than the file has bytes."""
    dims, x = [], data
    while isinstance(x, (list, tuple)) and x:
        dims.append(len(x))
        x = x[0]
    n = int(np.prod(dims, dtype=object)) * (x.size if isinstance(x, np.ndarray) else 1)
    if n > file_size:
        raise DataError(f"{path}: 'data' is lists of {n:,} values, more than its {file_size:,} bytes hold; crafted?")


def _unpickle_input(path: Path) -> Any:
    """The object of a prediction pickle, read with the allow-list unpickler after the length check."""
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from None
    _check_pickle_lengths(path, blob)
    try:
        return safe_loads(blob)
    except RefusedPickle as e:
        raise DataError(f"{path}: refused: {e}; nothing in it was run") from None
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


def _read_pickle(path: Path, layout: str | None) -> tuple[torch.Tensor, list[Any]]:
    """A pickle of a dict with 'data' and optionally 'ids' (or 'id'), as CIFAR-10's batch files."""
    obj = _unpickle_input(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with 'data' (and optionally 'ids'), got {type(obj).__name__}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj:
        raise DataError(f"{path}: no 'data' key (found {sorted(obj)})")
    data = obj["data"]
    if isinstance(data, (list, tuple)):
        _check_nested_size(path, data, path.stat().st_size)
    try:
        arr = np.asarray(data) if isinstance(data, (np.ndarray, list, tuple)) else None
    except (ValueError, TypeError):  # ragged nested lists
        arr = None
    if arr is None or arr.dtype.kind not in "uif":
        kind = f"an array of {arr.dtype}" if arr is not None else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of images, got {kind}")
    # The batch format defines its flat rows as channel-major (1024 R, 1024 G, 1024 B): no --layout needed.
    layout = layout or ("nchw" if arr.ndim == 2 else None)
    return _images_and_ids(path, arr, obj.get("ids", obj.get("id")), layout)


def _images_and_ids(path: Path, arr: Any, ids: Any, layout: str | None) -> tuple[torch.Tensor, list[Any]]:
    """(images (N, 3, 32, 32), ids) from an array and its ids (None: 0..N-1), each id checked as
    write_submission would write it, so a bad one is refused before the model runs."""
    try:
        x = as_nchw_uint8(arr, layout)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    if ids is None:
        return x, list(range(len(x)))
    # No np.ndim(ids): it would build an array from a list of memo references to one huge string.
    if not (isinstance(ids, (list, tuple)) or isinstance(ids, np.ndarray) and ids.ndim == 1):
        raise DataError(
            f"{path}: 'ids' must be a list of {len(x)} ids, one per image, got {type(ids).__name__} {ids!r:.60}"
        )
    ids = [i.item() if isinstance(i, np.generic) else i for i in ids]
    if len(ids) != len(x):
        raise DataError(f"{path}: {len(ids)} ids for {len(x)} images")
    for n, i in enumerate(ids):
        try:
            id_text(i)
        except ValueError as e:
            raise DataError(f"{path}: id {i!r:.60} (image {n}) {e}") from None
    return x, ids


IMAGE_FILES = (".png", ".jpg", ".jpeg")  # matched case-insensitively
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # np.savez's zip; an empty zip
IMAGE_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG


def input_kind(path: Path) -> str:
    """'images', 'npy', 'npz' or 'pickle': by the file's first bytes (x.NPY, a .npy named .pkl), then
    by its name for a file too damaged to tell (so the error names what it was meant to be)."""
    if path.is_dir():
        return "images"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from None
    suffix = path.suffix.lower()
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGICS):
        return "npz"
    if head.startswith(IMAGE_MAGICS) or suffix in IMAGE_FILES:
        return "images"
    return {".npy": "npy", ".npz": "npz"}.get(suffix, "pickle")


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


def read_unlabeled(path: str | Path, layout: str | None = None) -> tuple[torch.Tensor, list[Any]]:
    """(uint8 images (N, 3, 32, 32), ids) from PNG/JPEG files (one, or a folder of them:
    read_image_files), a .npy array, a .npz archive (_read_npz) or a pickle holding a dict with
    'data' and optionally 'ids' (loaded with the restricted unpickler, never pickle.load); the
    format is told by content. Flat (N, 3072) rows need `layout` ("nchw" or "nhwc"), except in
    a pickle, whose format (CIFAR-10's batch files) defines them as nchw. Every size a header
    claims is checked against the file before memory is allocated for it."""
    _check_layout(layout)
    path = Path(path)
    kind = input_kind(path)
    if kind == "images":  # decoded images have one layout: `layout` is for arrays
        return read_image_files(path)
    return {"npy": _read_npy, "npz": _read_npz, "pickle": _read_pickle}[kind](path, layout)


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


def id_text(value: Any) -> str:
    """The text a submission writes for an id: a string as given, an integer in decimal, bytes
    decoded as UTF-8, None and NaN as empty (missing). Anything else raises ValueError: a float's
    text as given is lost (1 or 1.0?), and an id rewritten would no longer match the grader's."""
    if value is None or isinstance(value, (float, np.floating)) and value != value:
        return ""
    if isinstance(value, (bool, np.bool_)):  # before int: True is an int
        raise ValueError("is a boolean, not an id")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("is bytes that are not UTF-8 text") from None
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        raise ValueError("is a float: its text as given is lost (1 or 1.0?); store ids as integers or strings")
    raise ValueError(f"is a {type(value).__name__}: ids must be strings or integers")


def _submission_texts(path: Path, ids: list[Any]) -> list[str]:
    """Each id's text (id_text), refusing a line break or a formula start (see write_submission)."""
    texts = []
    for row, value in enumerate(ids, start=1):
        try:
            text = id_text(value)
        except ValueError as e:
            raise ValueError(f"{path}: id {value!r:.60} (row {row}) {e}; refusing to write it") from None
        if "\n" in text or "\r" in text:
            raise ValueError(f"{path}: id {text!r} (row {row}) contains a line break; it would split its row")
        if text.startswith(FORMULA_STARTS) and not _is_number(text):
            raise ValueError(
                f"{path}: id {text!r} (row {row}) starts with {text[0]!r}: a spreadsheet would run it as a formula "
                "(CSV injection); refusing to write it"
            )
        texts.append(text)
    return texts


def write_submission(path: str | Path, ids: list[Any], labels: torch.Tensor) -> Path:
    """CSV with header ID,Labels (labels as class indices), the class-competition format,
    written with the csv module (an id with a comma or a quote is quoted) and atomically.

    Ids are written as id_text says (strings as given, integers as integers); refused
    (ValueError naming the row): an id of another kind (a float, whose text as given is lost),
    a number of ids other than of labels, an id with a line break (it would split its row), and
    an id a spreadsheet would run as a formula (text starting with = + - @, a tab or a carriage
    return; numbers such as -3 are fine). Refused, not rewritten: an altered id would no longer
    match the grader's. Duplicate or empty ids are written as they are, with a warning.
    """
    import csv  # stdlib
    import warnings  # stdlib

    path = Path(path)
    labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if len(ids) != len(labels):
        raise ValueError(f"{path}: {len(ids)} ids for {len(labels)} labels")
    texts = _submission_texts(path, ids)
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
