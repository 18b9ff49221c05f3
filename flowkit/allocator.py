"""Allocator settings for training on glibc: keep freed memory (fast) or allocate in huge pages
(small peak).

A training step allocates and frees tens of MiB of activations. glibc's defaults serve every
block above the mmap threshold (128 KiB, adaptively up to 32 MiB) with a fresh ``mmap`` and
return it to the kernel on ``free``, so each step page-faults its activations back in: hundreds
of thousands of faults, about 2-3x the step time at 64x64. Two remedies, one per goal:

* **Speed** (:data:`MALLOC_ENV`, or :func:`tune_malloc` in-process): raise the mmap and trim
  thresholds so large blocks come from the heap and stay there. Nearly no page faults, but the
  heap fragments: blocks of many sizes leave holes that later requests do not fit, and peak RSS
  drifts above the live working set by a run-dependent amount.
* **Small peak** (:data:`LOW_MEMORY_ENV`, for memory-saving training): leave glibc's thresholds
  alone and switch on PyTorch's transparent-huge-page allocation (``THP_MEM_ALLOC_ENABLE``:
  blocks >= 2 MiB page-aligned and marked ``MADV_HUGEPAGE``), so a re-faulted block costs one
  fault per 2 MiB instead of one per 4 KiB. This is a measured choice, not a derived one: on the
  benchmark's memory-saving Glow (1x64x64, batch 64, this CPU) the peak was 487-502 MiB in
  every run, against 516-850 MiB with raised thresholds and 711-763 MiB with glibc's plain
  defaults, for ~1.2-1.3x the raised-threshold step time.

Both are environment variables read once at process start (glibc's tunables, PyTorch's first
allocation), so they only take effect in a child process or a re-exec, which is what the
``flowkit`` CLI does (:func:`startup_env`). :func:`tune_malloc` is the in-process fallback for
the speed setting (``mallopt`` works at any time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import Mapping

__all__ = [
    "LOW_MEMORY_ENV",
    "MALLOC_ENV",
    "env_active",
    "is_glibc",
    "startup_env",
    "tune_malloc",
]

#: Raised glibc thresholds: blocks up to 1 GiB come from the heap instead of fresh mmaps, and
#: freed memory is kept (trim threshold 2 GiB) instead of being returned after every step.
#: glibc 2.36 accepts thresholds above its old 32 MiB ceiling (measured: 40 and 200 MiB tensors
#: then allocate without page faults).
MALLOC_ENV: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 31),
}

#: PyTorch's transparent-huge-page allocation for blocks >= 2 MiB, with glibc's own thresholds:
#: the stable, small peak for memory-saving training (needs THP in "madvise" or "always" mode,
#: the common kernel default; with THP off it is harmless and simply has no effect).
LOW_MEMORY_ENV: dict[str, str] = {"THP_MEM_ALLOC_ENABLE": "1"}

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def is_glibc() -> bool:
    """True on Linux with glibc, where these settings mean something."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def startup_env(memory_saving: bool) -> dict[str, str]:
    """The variables a training process should start with: :data:`LOW_MEMORY_ENV` for
    memory-saving training, :data:`MALLOC_ENV` otherwise."""
    return dict(LOW_MEMORY_ENV if memory_saving else MALLOC_ENV)


def env_active(env: Mapping[str, str], environ: Mapping[str, str] | None = None) -> bool:
    """True when every variable of ``env`` is set to its value in ``environ`` (default: this
    process's environment, which is what it started with unless someone changed it since)."""
    environ = os.environ if environ is None else environ
    return all(environ.get(k) == v for k, v in env.items())


def tune_malloc() -> bool:
    """Raise glibc's malloc thresholds in this process (``mallopt``), as :data:`MALLOC_ENV`
    would at start-up. Returns False where it is not glibc (macOS, Windows, musl)."""
    if not is_glibc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]))
    ok &= mallopt(_M_TRIM_THRESHOLD, int(MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]))
    return bool(ok)
