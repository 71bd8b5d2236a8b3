"""Safe file handling: an allow-list unpickler, md5 sums, atomic writes, writable checks.

Standard library only (plus torch for `atomic_save`), so resnet_lib can use it at import time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

# Exactly what a CIFAR batch pickle needs to rebuild its numpy arrays: numpy 1.x writes
# numpy.core.*, numpy 2.x writes numpy._core.*. Anything else (os.system, eval, ...) is
# refused before it can run.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class RefusedPickle(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; nothing of it was run."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise RefusedPickle(f"global '{module}.{name}' is not allowed in a CIFAR batch file")


def safe_unpickle(path: str | Path) -> Any:
    """Unpickle a file allowing only numpy array reconstruction (never arbitrary code)."""
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, encoding="latin1").load()


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, mode: str, write: Any) -> None:
    """Call write(f) on a temporary file in the same folder, fsync, then rename over `path`:
    a crash at any moment leaves either the old file or the new one, never half of one.

    A process killed mid-save (SIGKILL, a closed Colab session) cannot delete its
    temporary file; the next save removes those of writers that are no longer running,
    so they do not accumulate. The writer's pid is in the temporary file's name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (not possible on every OS/filesystem)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save `obj` to `path` atomically (see atomic_write)."""
    atomic_write(path, "wb", lambda f: torch.save(obj, f))


def remove_orphaned_temps(path: Path) -> None:
    """Delete `path.<pid>.*.tmp` files left by `atomic_save` in processes that have died."""
    import glob  # stdlib; only for glob.escape

    if os.name != "posix":  # os.kill(pid, 0) is a liveness probe only on POSIX
        return
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        pid_text = tmp.name[len(path.name) + 1 :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue  # not ours to judge / a save of this very process
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)  # its writer is gone: the file can never be completed
        except (PermissionError, OverflowError):
            pass  # alive under another user, or not a pid at all


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically (temp file + rename)."""
    atomic_write(Path(path), "w", lambda f: f.write(json.dumps(_jsonable(obj), indent=2) + "\n"))


def check_writable(folder: Path) -> None:
    """Fail now, not after 40 epochs, if results cannot be written to `folder`."""
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OSError(f"cannot write to {folder}: {blocker} is a file, not a folder; choose another output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(f"cannot write to {folder} ({e.strerror or e}); choose another output folder") from None
