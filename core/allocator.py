"""The C allocator's settings for the engine's loops (glibc only; elsewhere nothing changes).

A training step allocates and frees dozens of tensors of a few to tens of MiB (activations of 50k Gaussians,
images, their gradients). glibc's malloc maps blocks above its threshold straight from the kernel and gives
freed ones back, so every step faulted its fresh pages in again: about 22,000 page faults and 90-120 ms of
kernel time per preview step on the 2-core machine. Kept for reuse, the faults drop to none, a two-thread
step takes 11-17 % less wall time and the peak resident memory did not change (977 against 987 MiB over 50
steps; benchmarks/results/session14_allocator_binning.md).
"""
from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at 32 MiB on 64-bit systems: larger blocks are always mapped (and the
# rasterizer reuses its own large buffers, see core.render.scratch).
MMAP_THRESHOLD = 32 * 1024 * 1024
# Free memory at the top of the heap beyond this goes back to the system.
TRIM_THRESHOLD = 256 * 1024 * 1024
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_status = (False, "glibc's own settings: keep_freed_memory() was not called")


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks up to ``MMAP_THRESHOLD`` for reuse (process-wide).

    Returns whether the settings were applied: not where the C library is not glibc, nor when the user set
    glibc's own ``MALLOC_*`` environment variables (theirs win). ``status()`` says which.
    """
    global _status
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _status = (False, "not glibc: the C library's own settings")
    elif any(name in os.environ for name in _USER_SETTINGS):
        _status = (False, "your MALLOC_* environment settings")
    else:
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):
            mallopt = None
        applied = (mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
                   and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
        _status = (applied, f"glibc malloc keeps freed blocks up to {MMAP_THRESHOLD >> 20} MiB for reuse" if applied
                   else "glibc refused the settings: its own defaults")
    return _status[0]


def status() -> tuple[bool, str]:
    """Whether ``keep_freed_memory`` applied its settings in this process, and what holds, in words."""
    return _status
