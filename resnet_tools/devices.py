"""Where a run trains: device names (auto, cpu, cuda[:N], mps), what results call the device, bf16
autocast, and the CPU allocator setting `fit` applies. Imports torch and resnet_tools.errors only.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

import torch

from resnet_tools.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, then mps, then cpu. Any other name must be a device this
    machine has: ConfigError otherwise, so a run fails before it loads data."""
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


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (Intel AMX, or AVX512-BF16: Cooper Lake,
    Sapphire Rapids, AMD Zen 4 and later). Elsewhere oneDNN emulates bf16, slower than fp32
    (bench/README.md, "bf16 on the CPU")."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu, since torch 2.1
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def bf16_enabled(device_type: str, requested: bool | None, cpu_native: bool | None = None) -> bool:
    """Whether a run on `device_type` computes in bf16 autocast. True or False is obeyed on
    every device; None (auto) is on for CUDA and for a CPU with native bf16 (`cpu_native`,
    asked of the processor when not given), off elsewhere (emulated bf16, MPS)."""
    if requested is not None:
        return requested
    if device_type == "cuda":
        return True
    if device_type == "cpu":
        return cpu_native_bf16() if cpu_native is None else cpu_native
    return False


# torch.compile on the CPU makes a bf16 step 1.18x faster for Lite and 1.09x for Improved, fp32 1.21x
# and 1.04x (bench/results/numerics-cpu.md), after a compile of 10-70 s (cold, or from inductor's cache):
# worth it on runs of this many steps or more (5.7 epochs of 45,000 images), never on tests or smoke runs.
COMPILE_MIN_STEPS = 2_000


def compile_enabled(device_type: str, requested: bool | None, steps: int, compiler: bool | None = None) -> bool:
    """Whether fit trains through torch.compile. True or False is obeyed; None (auto) compiles on
    the CPU for runs of at least COMPILE_MIN_STEPS steps where a C++ compiler builds inductor's
    kernels (`compiler`, looked for when not given). Never automatically on CUDA, which replays the
    step as a CUDA graph instead, nor on MPS."""
    if requested is not None:
        return requested
    if device_type != "cpu" or steps < COMPILE_MIN_STEPS:
        return False
    return has_cxx_compiler() if compiler is None else compiler


def has_cxx_compiler() -> bool:
    """Whether inductor's CPU backend finds its C++ compiler: $CXX, else g++ (clang++ on macOS)."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++", "c++"]
    return any(shutil.which(name) for name in names)


def numerics(device: torch.device, requested: bool | None) -> str:
    """What results record as the run's arithmetic: "bf16 autocast" or "fp32"."""
    return "bf16 autocast" if bf16_enabled(device.type, requested) else "fp32"


def bf16_autocast(device: torch.device, bf16: bool | None) -> torch.autocast:
    """The autocast context of a run on `device`: bf16 where bf16_enabled says, else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_enabled(device.type, bf16))


def device_name(device: torch.device) -> str:
    """The device as results record it: the GPU's name, or the CPU and its torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    native = ", native bf16" if device.type == "cpu" and cpu_native_bf16() else ""
    return f"{device.type} ({cpu_model()}{native}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
