"""Safe file handling: an allow-list unpickler, md5 and SHA-256 sums, atomic writes, writable
checks, a folder lock and the check that an output is not one of the inputs.

Standard library only (plus torch for `atomic_save`), so resnet_lib can use it at import time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import pickle
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

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


def safe_loads(data: bytes) -> Any:
    """safe_unpickle for bytes already read (and checked) from a file."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):  # a folder made read-only: the write's error is the one to report
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise
    try:  # make the rename itself durable (not possible on every OS/filesystem)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _naming(e: OSError, path: Path) -> OSError:
    """The same error (its class and errno) naming the file being written, not its temporary file."""
    if e.errno is None:
        return e
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(path))


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save `obj` to `path` atomically (see atomic_write). A failed write (a full disk)
    raises its OSError, and Ctrl-C or SIGTERM during the write its KeyboardInterrupt (cli.Terminated):
    torch's zip writer would report either as a RuntimeError ("unexpected pos") raised while closing
    the file after it, and a stopped run would end in a traceback instead of its resume line."""

    def save(f: Any) -> None:
        try:
            torch.save(obj, f)
        except RuntimeError as e:
            if isinstance(e.__context__, (OSError, KeyboardInterrupt)):
                raise e.__context__ from None
            raise

    atomic_write(path, "wb", save)


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
            with contextlib.suppress(OSError):  # unremovable (read-only folder): the save itself says why
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


def symlink_loop(path: str | Path) -> Path | None:
    """The first of `path` and its parents that is a symlink loop (a link that leads back to
    itself: every use fails with ELOOP, which tools report as 'missing' or 'File exists'), or None."""
    path = Path(path)
    for p in reversed((path, *path.parents)):
        try:
            os.stat(p)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return p
            return None  # missing: nothing below it can loop
    return None


def shown_path(path: str | Path) -> str:
    """A path as text that prints anywhere: bytes that are not UTF-8 (os.fsdecode keeps them as
    surrogates, which no UTF-8 stream can write) as \\xNN escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _not_utf8(path: Path) -> str | None:
    """Why `path` cannot name a run's output folder, if its name is not valid UTF-8 (TensorBoard's
    event writer encodes the path as UTF-8 and fails with an error naming no file)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8 (TensorBoard cannot write there); rename it or choose another folder"
    return None


def _why_not_a_folder(folder: Path) -> str | None:
    """Why `folder` cannot be (created as) a folder: a symlink loop, a dangling symlink, or a file
    at it or above it; None if nothing stands in the way."""
    loop = symlink_loop(folder)
    if loop is not None:
        return (f"{loop} is a symlink loop (a link that leads back to itself); remove or fix the link, or choose "
                "another output folder")
    for p in reversed((folder, *folder.parents)):
        if p.is_symlink() and not p.exists():  # mkdir would say only "File exists"
            return (f"{p} is a symlink to {os.readlink(p)}, which does not exist; create that folder, remove the "
                    "link, or choose another output folder")
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"{blocker} is a file, not a folder; choose another output folder"
    return None


def check_writable(folder: Path, option: str = "") -> None:
    """Fail now, not after 40 epochs, if results cannot be written to `folder`. `option` (such as
    "--out") is named in the message: the setting to change."""
    folder = Path(folder)
    subject = f"{option} {shown_path(folder)}" if option else shown_path(folder)
    why = _not_utf8(folder) or _why_not_a_folder(folder)
    if why is not None:
        raise OSError(f"cannot write to {subject}: {why}")
    why = _cannot_write_in(folder)
    if why is not None:
        raise OSError(f"cannot write to {subject} ({why}); choose another output folder")


def check_output_file(path: str | Path, option: str = "") -> None:
    """Fail before the work, not after it, if the file `path` cannot be written: it is a folder, or
    its folder cannot be made or written (check_writable's reasons). A dangling symlink at `path` is
    fine: the atomic writer replaces the link itself, as it would a file."""
    path = Path(path)
    subject = f"{option} {shown_path(path)}" if option else shown_path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write to {subject}: it is a folder; give the file's name")
    why = _why_not_a_folder(path.parent)
    if why is not None:
        raise OSError(f"cannot write to {subject}: {why}")
    why = _cannot_write_in(path.parent)
    if why is not None:
        raise OSError(f"cannot write to {subject}: its folder is not writable ({why})")


def _cannot_write_in(folder: Path) -> str | None:
    """Why a file cannot be written in `folder` (made if missing), tried with a temporary file; None if it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return str(e.strerror or e)
    return None


def state_sha256(obj: Any) -> str:
    """SHA-256 over a state (nested dicts / lists / tuples of tensors and plain values), in
    a fixed order: keys, dtypes, shapes and every tensor's raw bytes. A checkpoint stores it
    when saved, so a bit flipped afterwards (disk, copy, upload) is refused at load time."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            h.update(f"D{len(x)};".encode())
            for k in sorted(x, key=repr):
                h.update(f"K{k!r};".encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)};".encode())
            for v in x:
                walk(v)
        else:
            h.update(f"V{x!r};".encode())

    walk(obj)
    return h.hexdigest()


class FolderLocked(OSError):
    """Another live process holds the folder's lock (run_lock)."""


LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # alive under another user / not checkable: treat as held
    return True


def _lock_owner(lock: Path) -> tuple[int | None, str]:
    """(pid, host) written in a lock file; pid None if unreadable."""
    try:
        fields = lock.read_text().split()
    except OSError:
        return None, ""
    pid = int(fields[0]) if fields and fields[0].isdigit() else None
    return pid, fields[1] if len(fields) > 1 else ""


# The lock holder touches its lock file every LOCK_HEARTBEAT_S seconds. A lock of another
# machine (a shared Drive folder, a Colab session that was closed) whose pid cannot be checked
# from here is stale once it has not been touched for LOCK_STALE_S seconds.
LOCK_HEARTBEAT_S = 30.0
LOCK_STALE_S = 300.0


def _lock_age(lock: Path) -> float:
    try:
        return time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return math.inf


def _lock_is_stale(lock: Path) -> bool:
    """The lock's owner is a process of this machine that is no longer running; or a lock of
    another machine, or one without a pid (a writer killed between creating and writing it),
    that has not been touched for LOCK_STALE_S (without a pid: 5) seconds."""
    pid, host = _lock_owner(lock)
    if pid is None:
        return _lock_age(lock) > 5
    if host == socket.gethostname():
        return not _pid_alive(pid)
    return _lock_age(lock) > LOCK_STALE_S


def _refuse_held(folder: Path, lock: Path) -> None:
    """FolderLocked naming the live owner of `lock` (its pid and host; another machine's last heartbeat)."""
    pid, host = _lock_owner(lock)
    owner = f"process {pid}" + (f" on {host}" if host else "") if pid is not None else "another process"
    if host and host != socket.gethostname():
        age, stale = _lock_age(lock), LOCK_STALE_S
        owner += f", active {age:.0f} s ago (taken over after {stale:.0f} s without activity)"
    raise FolderLocked(
        f"{folder} is in use by {owner} (lock file {lock}): another training run writes there. Wait for "
        "it to finish or choose another output folder; if no run uses it, delete the lock file"
    ) from None


def _set_stale_aside(lock: Path) -> None:
    """Move a stale lock aside under a name of our own (atomic: of two processes taking over the same
    stale lock, one rename wins), putting back a fresh one another taker made meanwhile."""
    aside = lock.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    if not _lock_is_stale(aside):  # another taker's fresh lock was moved: put it back
        try:
            os.link(aside, lock)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[Path]:
    """Hold `folder/.lock` while the block runs: created with O_EXCL, holding this process's
    pid and host name, touched every LOCK_HEARTBEAT_S seconds, removed at the end. A second
    process that wants the same folder fails at once (FolderLocked, naming the owner), instead of
    both writing the same checkpoint. A lock left by a process that died (SIGKILL, a closed
    session) is taken over: at once on this machine (its pid is not running), after LOCK_STALE_S
    seconds without a heartbeat if it was another machine's."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if not _lock_is_stale(lock):
                _refuse_held(folder, lock)
            _set_stale_aside(lock)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise FolderLocked(f"{folder}: could not take the lock file {lock}")
    stop = threading.Event()

    def heartbeat() -> None:  # so that another machine can tell a live run from a dead one
        while not stop.wait(LOCK_HEARTBEAT_S):
            try:
                os.utime(lock)
            except OSError:
                pass

    beat = threading.Thread(target=heartbeat, name=f"run_lock {lock}", daemon=True)
    beat.start()
    try:
        yield lock
    except BaseException:
        _release(lock, me, stop, beat, quiet=True)  # the run's own error (a failed save) is the one to report
        raise
    _release(lock, me, stop, beat, quiet=False)


def _release(lock: Path, me: str, stop: threading.Event, beat: threading.Thread, quiet: bool) -> None:
    """Stop the heartbeat and remove our lock. A lock that cannot be removed (its folder made
    read-only) is left for the next run to take over (its pid is gone); said in one line unless
    `quiet` (the run failed: its error must not be hidden behind the lock's)."""
    stop.set()
    beat.join()
    try:
        if lock.read_text() == me:
            lock.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        if not quiet:
            print(f"note: could not remove the lock file {shown_path(lock)} ({e.strerror or e}); the next run "
                  "into this folder takes it over", file=sys.stderr)


def check_not_an_input(out: str | Path, inputs: dict[str, str | Path]) -> None:
    """Refuse an output path that is one of the inputs ({what: path}): the same path, a
    symlink to it or a hard link of it. Writing there would destroy the input it reads."""
    out = Path(out)
    for what, given in inputs.items():
        given = Path(given)
        try:
            same = out.resolve() == given.resolve() or (
                out.exists() and given.exists() and os.path.samefile(out, given)
            )
        except OSError:
            same = False
        if same:
            raise ValueError(
                f"the output {out} is the same file as the {what} {given}; writing it would destroy the {what}. "
                "Choose another output path"
            )


def is_safetensors(path: str | Path) -> bool:
    """Whether the file's content is safetensors (an 8-byte little-endian header length, then a
    JSON header), whatever its name: a torch checkpoint starts with PK (zip) or a pickle opcode.
    A damaged export still counts (its loader then says what is wrong with it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return str(path).endswith(".safetensors")  # let the loader name the problem
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0
