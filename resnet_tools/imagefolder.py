"""Image-folder datasets: root/train/<class>/*.{png,jpg,jpeg} and root/test/<class>/*.

The layout of the public CIFAR-10 JPEG copy, of CINIC-10 and of Kaggle-style exports.
The images are decoded once with Pillow (in worker processes for large sets) into the
arrays `resnet_lib.read_batch` returns, uint8 (N, 3, 32, 32), and cached as one
uncompressed .npz keyed by a fingerprint of the file list, so a later load reads one
file instead of decoding tens of thousands of small ones::

    data = load_image_folder("data/cifar10-jpeg")
    data.train_x.shape, data.label   # (50000, 3, 32, 32), 'CIFAR-10 (JPEG copy)'

Nothing is ever written inside train/ or test/, and no pickle is ever loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import secrets
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from resnet_lib import CIFAR10, CLASSES, DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFolderData",
    "is_image_folder",
    "load_image_folder",
    "load_as_cifar10",
    "dataset_label",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # matched case-insensitively: exports often write .JPG
SPLITS = ("train", "test")
SIZE = 32
CIFAR_JPEG_LABEL = "CIFAR-10 (JPEG copy)"
_JPEG = {".jpg", ".jpeg"}
_CACHE_VERSION = "imagefolder-cache-v1"  # hashed into the fingerprint: a new cache layout never reads an old file
_PARALLEL_MIN = 2000  # below this, starting worker processes costs more than decoding in-process
_CHUNK = 1000  # files per worker task: amortises the transfer of results, still a live progress bar


class ImageFolderData(NamedTuple):
    """An image-folder dataset in memory, in the layout of `resnet_lib.read_batch`."""

    train_x: np.ndarray  # uint8 (N, 3, 32, 32), C-contiguous, channel-major like the official batches
    train_y: np.ndarray  # int64 (N,), index into classes
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]  # sorted folder names
    label: str  # which dataset a run used, from dataset_label
    fingerprint: str  # SHA-256 hex over the file list (relative paths, sizes, mtimes)


# ---------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------
def _entries(folder: Path) -> list[os.DirEntry]:
    """A folder's entries sorted by name; hidden ones (.DS_Store, ._x.jpg, .ipynb_checkpoints) skipped."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{folder}: cannot list the folder ({e.strerror or e})") from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError as e:  # a symlink loop (ELOOP); a broken link just reads as "not a folder"
        raise DataError(f"{entry.path}: cannot follow the link ({e.strerror or e})") from None


def _class_folders(split_dir: Path) -> list[str]:
    return [e.name for e in _entries(split_dir) if _is_dir(e)]


def is_image_folder(root: str | Path) -> bool:
    """True when root/train and root/test are folders that each hold at least one subfolder.

    Cheap and never raises: an unlistable split folder or a looping link counts as a
    subfolder, so that `load_image_folder` (not a fallback loader) reports the problem.
    """
    root = Path(root)
    for split in SPLITS:
        if not (root / split).is_dir():
            return False
        try:
            if not _class_folders(root / split):
                return False
        except DataError:
            pass
    return True


def _scan(root: Path) -> tuple[tuple[str, ...], list[Path], list[Path], np.ndarray, np.ndarray]:
    """Classes, then train and test image paths and labels: classes in order, files sorted within a class."""
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DataError(
                f"{root / split}: folder missing; an image-folder dataset needs {root}/train/<class>/*.jpg|png "
                f"and {root}/test/<class>/*.jpg|png"
            )
    names = {split: _class_folders(root / split) for split in SPLITS}
    for split in SPLITS:
        if not names[split]:
            raise DataError(f"{root / split}: no class folders; expected one subfolder of images per class")
    if names["train"] != names["test"]:
        only_train = sorted(set(names["train"]) - set(names["test"]))
        only_test = sorted(set(names["test"]) - set(names["train"]))
        raise DataError(
            f"{root}: train/ and test/ have different classes: only in train/: {', '.join(only_train) or 'none'}; "
            f"only in test/: {', '.join(only_test) or 'none'}"
        )
    classes = tuple(names["train"])
    found: list[list[Path]] = []
    labels: list[np.ndarray] = []
    for split in SPLITS:
        files: list[Path] = []
        counts = []
        for c in classes:
            folder = root / split / c
            images = [
                Path(e.path) for e in _entries(folder) if e.name.lower().endswith(IMAGE_SUFFIXES) and not _is_dir(e)
            ]
            if not images:
                raise DataError(f"{folder}: no image files (accepted: {', '.join(IMAGE_SUFFIXES)}, in any case)")
            files += images
            counts.append(len(images))
        found.append(files)
        labels.append(np.repeat(np.arange(len(classes), dtype=np.int64), counts))
    return classes, found[0], found[1], labels[0], labels[1]


def _fingerprint(root: Path, files: Iterable[Path]) -> str:
    """SHA-256 over relative path, size and mtime of every image in load order: any added, removed,
    renamed or edited file changes it (a content hash would cost as much as decoding)."""
    h = hashlib.sha256(_CACHE_VERSION.encode())
    for path in files:
        try:
            st = path.stat()
        except OSError as e:  # a broken link or a file that vanished since the listing
            raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None
        rel = path.relative_to(root).as_posix()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def dataset_label(classes: Sequence[str], n_train: int, n_test: int, suffixes: Iterable[str], name: str) -> str:
    """What results record as the dataset of a run loaded from an image folder (the one place that decides).

    'CIFAR-10 (JPEG copy)' needs CIFAR-10's ten class names, its 50,000/10,000 split and JPEG files
    only; anything else (CINIC-10, a subset, PNG exports) is 'image folder: NAME'.
    """
    suffixes = {s.lower() for s in suffixes}
    if tuple(classes) == CLASSES and (n_train, n_test) == (50_000, 10_000) and suffixes and suffixes <= _JPEG:
        return CIFAR_JPEG_LABEL
    return f"image folder: {name}"


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------
def _decode_one(path: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            size = img.size  # from the header: a wrong size is reported without decoding
            if size == (SIZE, SIZE):
                rgb = np.asarray(img.convert("RGB"))  # grayscale, palette, RGBA (alpha dropped), CMYK
    except Exception as e:  # noqa: BLE001 - corrupt images raise many types (OSError, SyntaxError, ValueError, ...)
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
    if size != (SIZE, SIZE):
        raise DataError(f"{path}: image is {size[0]}x{size[1]} pixels, expected {SIZE}x{SIZE}")
    return rgb.transpose(2, 0, 1)


def _decode_chunk(paths: Sequence[str]) -> np.ndarray:
    """Decode images into uint8 (n, 3, 32, 32). Runs in worker processes: plain data in and out."""
    out = np.empty((len(paths), 3, SIZE, SIZE), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = _decode_one(path)
    return out


def _decode_all(files: Sequence[Path], workers: int, progress: bool, desc: str) -> np.ndarray:
    out = np.empty((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    paths = [str(p) for p in files]
    parallel = workers > 1 and len(paths) >= _PARALLEL_MIN
    step = min(_CHUNK, math.ceil(len(paths) / (4 * workers))) if parallel else _CHUNK  # keep every worker busy
    chunks = [(i, paths[i : i + step]) for i in range(0, len(paths), step)]
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        if not parallel:
            for start, chunk in chunks:
                out[start : start + len(chunk)] = _decode_chunk(chunk)
                bar.update(len(chunk))
            return out
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_decode_chunk, chunk): (start, len(chunk)) for start, chunk in chunks}
            try:
                for future in as_completed(futures):
                    start, n = futures[future]
                    out[start : start + n] = future.result()
                    bar.update(n)
            except BaseException as e:
                pool.shutdown(cancel_futures=True)  # the first bad file stops the rest
                if isinstance(e, DataError):  # one line, without the worker's remote traceback chained on
                    raise DataError(str(e)) from None
                raise
    return out


# ---------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------
def _cache_dirs(root: Path, cache_dir: str | Path | None) -> list[Path]:
    """Where to look for and write the cache, in order (beside the data, else in the home folder)."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    return [root / ".cache", Path.home() / ".cache" / "compact-resnets"]


def _read_cache(path: Path, fingerprint: str, classes: tuple[str, ...], n_train: int, n_test: int):
    """(train_x, test_x) from a cache that matches exactly, else None. Never trusted: no pickles, every
    field checked; a damaged file is reported once and then replaced by the caller."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # own handle: closed even on a bad zip
            if str(z["fingerprint"]) != fingerprint or tuple(z["classes"].tolist()) != classes:
                return None
            train_x, test_x = z["train_x"], z["test_x"]
    except Exception as e:  # noqa: BLE001 - a damaged zip raises many types (BadZipFile, ValueError, EOFError, ...)
        warnings.warn(
            f"{path}: unreadable image cache ({type(e).__name__}: {e}); decoding the images again", stacklevel=3
        )
        return None
    for x, n in ((train_x, n_train), (test_x, n_test)):
        if x.dtype != np.uint8 or x.shape != (n, 3, SIZE, SIZE):
            return None
    return np.ascontiguousarray(train_x), np.ascontiguousarray(test_x)


def _write_cache(folder: Path, name: str, arrays: dict[str, np.ndarray]) -> Path | None:
    """Write atomically (temp file in the same folder, fsync, rename): a crash never leaves a half file
    under the real name. An unwritable folder (or a full disk) means no cache, not an error."""
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{name}"  # "x": created here, umask applies
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
        return folder / name
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return None


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------
def load_image_folder(
    root: str | Path, cache_dir: str | Path | None = None, workers: int | None = None, progress: bool = True
) -> ImageFolderData:
    """Load root/train/<class>/* and root/test/<class>/* (32x32 images) as uint8 arrays.

    Classes are the sorted folder names; files load sorted by name within a class, classes in
    order. The decoded arrays are cached as cifar-cache-<fingerprint>.npz in `cache_dir` if given,
    else in root/.cache/ if writable, else in ~/.cache/compact-resnets/, and reused while the
    file list (paths, sizes, mtimes) is unchanged. Raises DataError naming the file or folder.
    """
    root = Path(root)
    classes, train_files, test_files, train_y, test_y = _scan(root)
    files = train_files + test_files
    n_train, n_test = len(train_files), len(test_files)
    fingerprint = _fingerprint(root, files)
    name = f"cifar-cache-{fingerprint[:16]}.npz"
    folders = _cache_dirs(root, cache_dir)
    cached = None
    for folder in folders:
        cached = _read_cache(folder / name, fingerprint, classes, n_train, n_test)
        if cached is not None:
            break
    if cached is not None:
        train_x, test_x = cached
    else:
        n_workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        x = _decode_all(files, n_workers, progress, f"decoding {root.name or root}")
        train_x, test_x = x[:n_train], x[n_train:]  # views along axis 0: still C-contiguous
        arrays = {
            "train_x": train_x,
            "test_x": test_x,
            "fingerprint": np.array(fingerprint),
            "classes": np.array(classes),
        }
        for folder in folders:
            if _write_cache(folder, name, arrays) is not None:
                break
    label = dataset_label(classes, n_train, n_test, {p.suffix for p in files}, root.resolve().name)
    return ImageFolderData(train_x, train_y, test_x, test_y, classes, label, fingerprint)


def load_as_cifar10(root: str | Path) -> CIFAR10:
    """`load_image_folder(root)` as resnet_lib's CIFAR10 (what load_cifar10 returns for an image
    folder); DataError unless it has ten classes, as the seed's models have ten outputs."""
    d = load_image_folder(root)
    if len(d.classes) != len(CLASSES):
        raise DataError(f"{root}: {len(d.classes)} class folders ({', '.join(d.classes)}); the models need exactly 10")
    tensors = (torch.from_numpy(a) for a in (d.train_x, d.train_y, d.test_x, d.test_y))
    return CIFAR10(*tensors, root=str(root), official=False, classes=d.classes, label=d.label)
