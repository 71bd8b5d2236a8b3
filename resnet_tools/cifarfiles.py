"""CIFAR-10's official python format: the batch files, their md5 sums and the download.

`resnet_lib.load_cifar10` comes here for a folder holding `cifar-10-batches-py/` (the layout
torchvision uses). Batch files are unpickled with an allow-list (resnet_tools.safeio), so a
malicious file cannot run code; every problem is a DataError naming the file and the fix.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from resnet_tools.dataset import CIFAR10, CLASSES
from resnet_tools.errors import DataError
from resnet_tools.safeio import RefusedPickle, file_md5, safe_unpickle, symlink_loop

# From the dataset's page (and torchvision.datasets.CIFAR10, which uses the same values).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
}
CIFAR10_TEST_MD5 = {"test_batch": "40351d587109b95175f43aff81a1287e"}


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file: uint8 images (N, 3, 32, 32) and int64 labels (N,).

    Raises DataError naming the file for anything that is not a valid CIFAR-10 batch.
    """
    path = Path(path)
    try:
        obj = safe_unpickle(path)
    except RefusedPickle as e:
        raise DataError(f"{path}: refused: {e}; the file may be malicious, nothing in it was run") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle raises almost anything (OverflowError, KeyError, ...)
        raise DataError(
            f"{path}: truncated or corrupt batch file ({type(e).__name__}: {e}); expected a CIFAR-10 "
            "python-version batch (a pickled dict with 'data' and 'labels')"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with 'data' and 'labels', got {type(obj).__name__}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise DataError(f"{path}: expected keys 'data' and 'labels', found {sorted(map(str, obj))}")
    data, labels = obj["data"], obj["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of N x 3072 pixels, got {kind}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must have shape (N, 3072) (3x32x32, channel-major), got {data.shape}")
    if data.shape[0] == 0:
        raise DataError(f"{path}: holds no images; expected 'data' of shape (N, 3072) with N > 0")
    try:
        labels = np.asarray(labels)
    except Exception:  # noqa: BLE001 - ragged or exotic objects; reported below by type
        labels = np.asarray(None)
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: 'labels' must be {data.shape[0]} integers, got shape {labels.shape} of {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{path}: labels must lie in 0..{len(CLASSES) - 1}, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def download_archive(root: Path) -> None:
    """Download and extract the official archive into `root`, md5-checked (torchvision's helper)."""
    from torchvision.datasets.utils import download_and_extract_archive

    print(f"CIFAR-10 not found in {root}; downloading the official archive (163 MB) ...", file=sys.stderr)
    try:
        download_and_extract_archive(CIFAR10_URL, str(root), md5=CIFAR10_ARCHIVE_MD5)
    except Exception as e:  # network errors come in many types (URLError, OSError, ...)
        raise DataError(
            f"could not download CIFAR-10 ({type(e).__name__}: {e}).\n"
            f"Put the official python version in {root / CIFAR10_FOLDER} (data_batch_1..5, test_batch), "
            "or point at an existing copy with --data-dir DIR / DATA_DIR=DIR "
            f"(the folder that contains {CIFAR10_FOLDER}/)."
        ) from None


def _batch_folder(root: Path, expected: dict[str, str], download: bool) -> Path:
    """The folder that holds all of `expected`'s batch files (root/cifar-10-batches-py/, or root itself),
    after the official archive is downloaded where every file is missing and `download` is true; else
    DataError naming what is wrong: a symlink loop, a file, some files missing, the binary version."""
    for path in (root, root / CIFAR10_FOLDER, *(root / CIFAR10_FOLDER / name for name in expected)):
        if (loop := symlink_loop(path)) is not None:
            raise DataError(
                f"{loop} is a symlink loop (a link that leads back to itself), not CIFAR-10 data; "
                "remove or fix the link, or point --data-dir / DATA_DIR at the real folder"
            )
    if root.is_file():
        raise DataError(
            f"data folder {root} is a file, not a folder; expected the folder that contains {CIFAR10_FOLDER}/ "
            f"(if it is the downloaded archive, extract it first: tar xzf {root.name})"
        )
    folder = root / CIFAR10_FOLDER
    if not folder.is_dir() and any((root / name).is_file() for name in expected):
        folder = root  # pointed at cifar-10-batches-py/ itself (or a copy of its files)
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing and download and len(missing) < len(expected):
        # Some files are there: a subset or an interrupted copy. Downloading would extract
        # the official files over the user's own, so name what is missing instead.
        raise DataError(
            f"CIFAR-10 files missing in {folder}: {', '.join(missing)} (expected data_batch_1..data_batch_5 "
            "and test_batch). The folder holds the other files, so it is not downloaded over them: add the "
            "missing files, or empty the folder to download the official archive."
        )
    if missing and download:
        download_archive(root)
        missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        is_binary = (root / "cifar-10-batches-bin").is_dir() or (root / "data_batch_1.bin").is_file()
        binary = " (found the binary version of CIFAR-10; the python version is needed)" if is_binary else ""
        raise DataError(
            f"CIFAR-10 files missing in {folder}: {', '.join(missing)} (expected data_batch_1..data_batch_5 "
            f"and test_batch){binary}.\n"
            f"Download the python version of CIFAR-10 and extract it into {root}, "
            "allow the automatic download (download=True, no --no-download), "
            "or point at an existing copy with --data-dir DIR / DATA_DIR=DIR "
            f"(the folder that contains {CIFAR10_FOLDER}/)."
        )
    return folder


def load_batch_folder(root: Path, download: bool = True) -> CIFAR10:
    """CIFAR-10 from `root/cifar-10-batches-py/` (or from that folder itself), downloading the
    official archive (md5-checked) into `root` where every file is missing and `download` is true.
    A folder whose files differ from the official md5 sums (a subset, say) loads with one
    warning that says how many images it holds."""
    expected = {**CIFAR10_TRAIN_MD5, **CIFAR10_TEST_MD5}
    folder = _batch_folder(root, expected, download)
    official = True
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, md5 in expected.items():
        path = folder / name
        if path.stat().st_size == 0:
            raise DataError(
                f"{path}: file is empty (0 bytes); expected a CIFAR-10 python-version batch "
                "(a pickled dict with 'data' and 'labels', about 30 MB), e.g. from an interrupted copy"
            )
        official &= file_md5(path) == md5
        parts[name] = read_batch(path)
    train_x = np.concatenate([parts[n][0] for n in CIFAR10_TRAIN_MD5])
    train_y = np.concatenate([parts[n][1] for n in CIFAR10_TRAIN_MD5])
    test_x, test_y = parts["test_batch"]
    if not official:
        warnings.warn(
            f"{folder} is not the official CIFAR-10 (md5 differs): {len(train_y):,} training and "
            f"{len(test_y):,} test images",
            stacklevel=3,  # the caller of resnet_lib.load_cifar10
        )
    return CIFAR10(
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(np.ascontiguousarray(test_x)),
        torch.from_numpy(test_y),
        root=str(root),
        official=official,
        label="CIFAR-10 (official)" if official else f"non-official CIFAR-10 files: {root.resolve().name}",
    )
