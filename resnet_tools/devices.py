"""Where a run trains: device names (auto, cpu, cuda[:N], mps), what results call the device, and
the CPU allocator setting `fit` applies. Imports torch only; resnet_lib re-exports these names.
"""

from __future__ import annotations

import os
import platform

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, then mps, then cpu. Any other name must be a device this
    machine has: ConfigError otherwise, so a run fails before it loads data."""
    from resnet_lib import ConfigError  # it imports this module

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name!r} is not valid; choose one of: {', '.join(DEVICES)}, or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}, but this machine has no CUDA GPU that torch can use; choose cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not mps_available():
        raise ConfigError(f"device={name!r}, but Apple's MPS backend is not available here; choose cpu or auto")
    return device


def device_name(device: torch.device) -> str:
    """The device as results record it: the GPU's name, or the CPU and its torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# glibc's malloc hands freed memory back to the OS and serves large blocks with fresh mmap()s,
# so every CPU training step page-faults its activations back in; keeping it in the process is
# faster (measurements and the reasoning: bench/README.md, "Memory on the CPU"). Both thresholds
# must be set together. The cost: the process keeps its peak heap until it exits.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
CPU_MALLOC_SETTINGS = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: (1 << 31) - 1}


def keep_freed_memory() -> bool:
    """Apply CPU_MALLOC_SETTINGS where the C library is glibc (Linux); elsewhere do
    nothing. Idempotent; `fit` calls it before training on the CPU. True if applied."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or no GNU libc name
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return all(libc.mallopt(option, value) == 1 for option, value in CPU_MALLOC_SETTINGS.items())
    except (OSError, AttributeError):
        return False
