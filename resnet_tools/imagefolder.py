"""Image-folder datasets: root/train/<class>/*.{png,jpg,jpeg,webp} and root/test/<class>/*.

The layout of the public CIFAR-10 JPEG copy, of CINIC-10 and of Kaggle-style exports.
The images are decoded once with Pillow (in worker processes for large sets) into the
arrays `resnet_tools.cifarfiles.read_batch` returns, uint8 (N, 3, 32, 32), and cached as one
uncompressed .npz keyed by a fingerprint of the content of every file, so a later load
reads one file instead of decoding tens of thousands of small ones::

    data = load_image_folder("data/cifar10-jpeg")
    data.train_x.shape, data.label   # (50000, 3, 32, 32), 'CIFAR-10 (JPEG copy)'

What is trusted, and what is not:

* The cache key is a SHA-256 over every file's relative path and the SHA-256 of its bytes: any change of
  content invalidates it, whatever the file's size and mtime say (touching a file does not). Every load
  reads every file for it; decoding checks the bytes it decodes against those hashes, so a file replaced
  mid-load is an error, never a cache entry under the wrong key. Measured on the 60,000-image CIFAR-10 JPEG
  copy (55 MB, warm page cache; "Intel(R) Xeon(R) Processor", 2 cores shared with a training job; medians
  of 5 interleaved loads, two runs): a cached load took 0.73 and 0.67 s with the old key (paths, sizes,
  mtimes) and 0.67 and 0.79 s with this one, no difference beyond the noise: os.read and a cheap relative
  path win back what hashing costs. A cold page cache adds the reads (once about 5 s there): the price of
  never serving stale pixels.
* Pixels: EXIF orientation is applied (ImageOps.exif_transpose). Alpha is dropped, not composited: the
  colour channels are kept as stored (what Image.convert("RGB") does for RGBA, LA, PA and transparent
  palettes). 16-bit samples (I;16*, and mode I within 0-65535) keep their high byte, as Pillow reduces
  16-bit colour PNGs itself; floating-point (F) and out-of-range I images are refused. Other modes (1, L,
  P, CMYK, YCbCr, ...) go through Image.convert("RGB").
* Images are the files with an accepted suffix (IMAGE_SUFFIXES: .webp where this Pillow reads it) directly
  in a class folder. Anything else inside train/ and test/ (other suffixes, files in nested folders, loose
  files) is not loaded, and one warning per load counts it and names the first few. Hidden files and
  folders (.DS_Store, ._x.jpg, .ipynb_checkpoints) are skipped silently.
* Classes are the sorted folder names; load_as_cifar10 warns when they are not CIFAR-10's.

Nothing is ever written inside train/ or test/, and no pickle is ever loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import secrets
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError, features
from tqdm.auto import tqdm

from resnet_tools.dataset import CIFAR10, CLASSES
from resnet_tools.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFolderData",
    "is_image_folder",
    "load_image_folder",
    "load_as_cifar10",
    "dataset_label",
]

# Matched case-insensitively (exports often write .JPG); .webp only where Pillow was built with libwebp.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg") + ((".webp",) if features.check("webp") else ())
SPLITS = ("train", "test")
SIZE = 32
CIFAR_JPEG_LABEL = "CIFAR-10 (JPEG copy)"
_JPEG = {".jpg", ".jpeg"}
# Hashed into the fingerprint: a new layout or decoding never reads an old file (v2: content key, EXIF, 16-bit).
_CACHE_VERSION = "imagefolder-cache-v2"
_PARALLEL_MIN = 2000  # below this, starting worker processes costs more than decoding in-process
_CHUNK = 1000  # files per worker task: amortises the transfer of results, still a live progress bar
_NAMED = 3  # files named in the "not loaded" warning; the count says how many more


class ImageFolderData(NamedTuple):
    """An image-folder dataset in memory, in the layout of `resnet_tools.cifarfiles.read_batch`."""

    train_x: np.ndarray  # uint8 (N, 3, 32, 32), C-contiguous, channel-major like the official batches
    train_y: np.ndarray  # int64 (N,), index into classes
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]  # sorted folder names
    label: str  # which dataset a run used, from dataset_label
    fingerprint: str  # SHA-256 hex over the relative path and the SHA-256 of the bytes of every image


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


def _files_below(folder: Path) -> list[Path]:
    """Every file under a folder nested in a class folder (never loaded), hidden ones left out, sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # links to folders are not followed: no loops
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
    return found


def _class_images(folder: Path, skipped: list[Path]) -> list[Path]:
    """The images directly in a class folder, sorted by name; every other file below it goes to `skipped`."""
    images: list[Path] = []
    others: list[Path] = []
    for e in _entries(folder):
        if _is_dir(e):
            others += _files_below(Path(e.path))
        elif e.name.lower().endswith(IMAGE_SUFFIXES):
            images.append(Path(e.path))
        else:
            others.append(Path(e.path))
    if not images:
        held = f"; it holds only {_named(others, folder)}" if others else ""
        raise DataError(f"{folder}: no image files (accepted: {', '.join(IMAGE_SUFFIXES)}, in any case){held}")
    skipped += others
    return images


def _named(paths: Sequence[Path], base: Path) -> str:
    """'a, b, c and 4 more': the first _NAMED paths relative to base, and a count of the rest."""
    names = ", ".join(p.relative_to(base).as_posix() for p in paths[:_NAMED])
    return names + (f" and {len(paths) - _NAMED} more" if len(paths) > _NAMED else "")


def _warn_not_loaded(root: Path, skipped: Sequence[Path]) -> None:
    """One line per load, so that a folder that loads 380 of its 400 images says so."""
    if skipped:
        n = len(skipped)
        warnings.warn(
            f"{root}: {n} file{'s' if n > 1 else ''} not loaded: {_named(skipped, root)} (images are "
            f"{', '.join(IMAGE_SUFFIXES)} files directly in a class folder; move these there or delete them)",
            stacklevel=4,  # the caller of load_image_folder
        )


def _scan(root: Path) -> tuple[tuple[str, ...], list[Path], list[Path], np.ndarray, np.ndarray]:
    """Classes, then train and test image paths and labels: classes in order, files sorted within a class.
    Files that are not loaded (see the module docstring) are counted and named in a warning."""
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
    skipped: list[Path] = []
    for split in SPLITS:
        skipped += [Path(e.path) for e in _entries(root / split) if not _is_dir(e)]  # loose files, no class
        files: list[Path] = []
        counts = []
        for c in classes:
            images = _class_images(root / split / c, skipped)
            files += images
            counts.append(len(images))
        found.append(files)
        labels.append(np.repeat(np.arange(len(classes), dtype=np.int64), counts))
    _warn_not_loaded(root, skipped)
    return classes, found[0], found[1], labels[0], labels[1]


def _read_bytes(path: str) -> bytes:
    """A file's bytes through os.read: for 60,000 small files half the time of open().read()
    (0.28 s against 0.50 s), which a cached load pays on every call."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            parts = []
            while part := os.read(fd, 1 << 20):
                parts.append(part)
        finally:
            os.close(fd)
    except OSError as e:  # a broken link or a file that vanished since the listing
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None
    return b"".join(parts)


def _digests(files: Sequence[Path]) -> list[bytes]:
    """SHA-256 of every file's bytes. One thread: from the page cache reading is GIL-bound, and two or
    four threads were no faster (CIFAR-10 JPEG copy: 0.28 s in one, 0.30 s in two or four)."""
    return [hashlib.sha256(_read_bytes(str(path))).digest() for path in files]


def _fingerprint(files: Sequence[Path], digests: Sequence[bytes]) -> str:
    """SHA-256 over the relative path and content hash of every image in load order: any added, removed,
    renamed or changed file changes it, whatever its size and mtime (a same-size edit with the mtime put
    back fooled a key of paths, sizes and mtimes)."""
    h = hashlib.sha256(_CACHE_VERSION.encode())
    for path, digest in zip(files, digests, strict=True):
        # Every image is root/split/class/name: its last three parts are its relative path (Path.relative_to
        # cost 0.23 s for 60,000 files). No NUL in a name, and a digest of fixed length: unambiguous.
        rel = "/".join(str(path).rsplit(os.sep, 3)[-3:])
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + digest)
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
def _to_rgb(img: Image.Image, path: str) -> np.ndarray:
    """uint8 (32, 32, 3). Alpha is dropped (colour channels as stored); 16-bit samples keep their high byte,
    as Pillow reduces 16-bit RGB PNGs (rawmode RGB;16B), where convert("RGB") would clip them at 255."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":  # I: 16-bit grey PNGs in older Pillow, TIFFs
        a = np.asarray(img)
        if mode == "I" and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{path}: 32-bit image (mode I) with values outside 0-65535; save it with 8 or 16 bits")
        return np.repeat((a.astype(np.uint32) >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    if mode == "F":
        raise DataError(f"{path}: floating-point image (mode F) has no 0-255 scale; save it with 8 or 16 bits")
    if mode.endswith("A") or "transparency" in img.info:  # via RGBA: a palette with alpha bytes warns when made RGB
        return np.asarray(img.convert("RGBA"))[:, :, :3]
    return np.asarray(img.convert("RGB"))  # 1, L, P, RGB, CMYK, YCbCr, LAB, ...


def _decode_one(path: str) -> tuple[np.ndarray, bytes]:
    """uint8 (3, 32, 32), EXIF orientation applied, and the SHA-256 of the very bytes it was decoded from."""
    data = _read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as img:
            size = img.size  # from the header: a wrong size is reported without decoding
            if size == (SIZE, SIZE):  # a square stays 32x32 whatever the orientation
                ImageOps.exif_transpose(img, in_place=True)
                rgb = _to_rgb(img, path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt images raise many types (OSError, SyntaxError, ValueError, ...)
        reason = "cannot identify image file" if isinstance(e, UnidentifiedImageError) else e  # not the BytesIO
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {reason})") from None
    if size != (SIZE, SIZE):
        raise DataError(f"{path}: image is {size[0]}x{size[1]} pixels, expected {SIZE}x{SIZE}")
    return rgb.transpose(2, 0, 1), hashlib.sha256(data).digest()


def _decode_chunk(paths: Sequence[str]) -> tuple[np.ndarray, list[bytes]]:
    """Decode images into uint8 (n, 3, 32, 32), with their content hashes. Runs in worker processes:
    plain data in and out."""
    out = np.empty((len(paths), 3, SIZE, SIZE), dtype=np.uint8)
    digests = []
    for i, path in enumerate(paths):
        out[i], digest = _decode_one(path)
        digests.append(digest)
    return out, digests


def _store(
    out: np.ndarray, start: int, result: tuple[np.ndarray, list[bytes]], files: Sequence[Path], want: Sequence[bytes]
) -> None:
    """Put a decoded chunk in place, unless a file changed since it was hashed for the cache key (then
    the pixels would be cached under the key of other content)."""
    x, got = result
    for i, digest in enumerate(got):
        if digest != want[start + i]:
            raise DataError(f"{files[start + i]}: the file changed while the folder was being loaded; load it again")
    out[start : start + len(x)] = x


def _decode_all(
    files: Sequence[Path], digests: Sequence[bytes], workers: int, progress: bool, desc: str
) -> np.ndarray:
    out = np.empty((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    paths = [str(p) for p in files]
    parallel = workers > 1 and len(paths) >= _PARALLEL_MIN
    step = min(_CHUNK, math.ceil(len(paths) / (4 * workers))) if parallel else _CHUNK  # keep every worker busy
    chunks = [(i, paths[i : i + step]) for i in range(0, len(paths), step)]
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        if not parallel:
            for start, chunk in chunks:
                _store(out, start, _decode_chunk(chunk), files, digests)
                bar.update(len(chunk))
            return out
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_decode_chunk, chunk): (start, len(chunk)) for start, chunk in chunks}
            try:
                for future in as_completed(futures):
                    start, n = futures[future]
                    _store(out, start, future.result(), files, digests)
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
def _find_cache(
    folders: Sequence[Path], name: str, fingerprint: str, classes: tuple[str, ...], n_train: int, n_test: int
) -> tuple[np.ndarray, np.ndarray] | None:
    for folder in folders:
        cached = _read_cache(folder / name, fingerprint, classes, n_train, n_test)
        if cached is not None:
            return cached
    return None


def load_image_folder(
    root: str | Path, cache_dir: str | Path | None = None, workers: int | None = None, progress: bool = True
) -> ImageFolderData:
    """Load root/train/<class>/* and root/test/<class>/* (32x32 images) as uint8 arrays.

    Classes are the sorted folder names; files load sorted by name within a class, classes in
    order. The decoded arrays are cached as cifar-cache-<fingerprint>.npz in `cache_dir` if given,
    else in root/.cache/ if writable, else in ~/.cache/compact-resnets/, and reused while the
    paths and the bytes of every image are unchanged (every load reads them all to check).
    Files that are not loaded are named in a warning. Raises DataError naming the file or folder.
    """
    root = Path(root)
    classes, train_files, test_files, train_y, test_y = _scan(root)
    files = train_files + test_files
    n_train, n_test = len(train_files), len(test_files)
    n_workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    digests = _digests(files)
    fingerprint = _fingerprint(files, digests)
    name = f"cifar-cache-{fingerprint[:16]}.npz"
    folders = _cache_dirs(root, cache_dir)
    cached = _find_cache(folders, name, fingerprint, classes, n_train, n_test)
    if cached is not None:
        train_x, test_x = cached
    else:
        x = _decode_all(files, digests, n_workers, progress, f"decoding {root.name or root}")
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
    """`load_image_folder(root)` as a CIFAR10 (resnet_tools.dataset; what load_cifar10 returns for an image
    folder); DataError unless it has ten classes, as the seed's models have ten outputs. Ten other
    names are accepted (CINIC-style exports, a renamed folder): `classes` is the folder's sorted names,
    and a warning says which differ from CIFAR-10's and which label each folder gets."""
    d = load_image_folder(root)
    if len(d.classes) != len(CLASSES):
        raise DataError(f"{root}: {len(d.classes)} class folders ({', '.join(d.classes)}); the models need exactly 10")
    if d.classes != CLASSES:
        extra = ", ".join(c for c in d.classes if c not in CLASSES)
        missing = ", ".join(c for c in CLASSES if c not in d.classes)
        order = ", ".join(f"{i} {c}" for i, c in enumerate(d.classes))
        warnings.warn(
            f"{root}: class folders are not CIFAR-10's (not in CIFAR-10: {extra}; missing: {missing}); "
            f"labels follow the sorted folder names: {order}",
            stacklevel=3,  # the caller of load_cifar10
        )
    tensors = (torch.from_numpy(a) for a in (d.train_x, d.train_y, d.test_x, d.test_y))
    return CIFAR10(*tensors, root=str(root), official=False, classes=d.classes, label=d.label)
