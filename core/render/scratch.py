"""Large scratch buffers that the CPU rasterizer reuses from one render to the next.

The compositing log (cpu.CompositeGaussians) is sized for the worst case, tens of MB at 50k Gaussians and
512^2, and a render writes a few MB to 20 MB of it. Allocated fresh each time, every 4 KiB page written
faults and is zeroed by the kernel: measured 3,900 page faults and 9 ms of system time per 50k @512^2
render on one thread, 15-18 ms on two (the threads fault concurrently). numpy's own large allocations ask
for transparent huge pages, which was worse (35-40 ms of system time: the kernel compacts memory to find
them). A buffer given back to the pool keeps its pages, so the next render of a similar scene writes into
memory that is already mapped.

Buffers return to the pool when the lease that holds them is garbage-collected (with the autograd graph
that keeps the log for the backward pass), so a log is never reused while a backward pass may still read it.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

# A buffer is allocated this much larger than asked, so that the next render of a slightly larger scene
# (a training step after the Gaussians moved) still fits.
HEADROOM = 1.25
ALIGNMENT = 64  # bytes: views into a buffer start on cache-line boundaries


class _Lease:
    """Holds a pool's buffer until garbage-collected (only identity matters)."""

    __slots__ = ("__weakref__",)


class ScratchPool:
    """Reusable uint8 buffers, at most ``max_free`` kept while unused and ``max_free_bytes`` in total.

    Thread-safe: renders on several threads each take their own buffer.
    """

    def __init__(self, max_free: int = 4, max_free_bytes: int = 1 << 30):
        self.max_free = max_free
        self.max_free_bytes = max_free_bytes
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def free_bytes(self) -> int:
        """Bytes held by unused buffers."""
        with self._lock:
            return sum(b.nbytes for b in self._free)

    def take(self, nbytes: int) -> tuple[np.ndarray, _Lease]:
        """A buffer of at least ``nbytes`` (uint8 [>= nbytes], contents undefined) and the lease that gives it
        back to the pool when garbage-collected: keep the lease alive as long as the buffer is in use."""
        with self._lock:
            fitting = [i for i, b in enumerate(self._free) if b.nbytes >= nbytes]
            if fitting:
                buffer = self._free.pop(min(fitting, key=lambda i: self._free[i].nbytes))
            else:
                buffer = None
        if buffer is None:
            # torch's allocator, not numpy's: numpy asks for huge pages (see the module docstring)
            buffer = torch.empty(int(nbytes * HEADROOM) + ALIGNMENT, dtype=torch.uint8).numpy()
        lease = _Lease()
        weakref.finalize(lease, self._give, buffer)
        return buffer, lease

    def take_arrays(self, parts: list[tuple[int, np.dtype]]) -> tuple[list[np.ndarray], _Lease]:
        """_carve()'s arrays of ``(length, dtype)`` in one buffer from the pool, and that buffer's lease."""
        buffer, lease = self.take(_carved_nbytes(parts))
        return _carve(buffer, parts), lease

    def _give(self, buffer: np.ndarray) -> None:
        with self._lock:
            self._free.append(buffer)
            self._free.sort(key=lambda b: b.nbytes, reverse=True)  # keep the largest when over the limits
            while len(self._free) > self.max_free or sum(b.nbytes for b in self._free) > self.max_free_bytes:
                self._free.pop()


def _carve(buffer: np.ndarray, parts: list[tuple[int, np.dtype]]) -> list[np.ndarray]:
    """Consecutive 1-D arrays of ``(length, dtype)`` in ``buffer`` (uint8), each aligned to ALIGNMENT bytes.

    ``_carved_nbytes(parts)`` is the buffer size they need.
    """
    arrays = []
    address = buffer.ctypes.data
    start = 0
    for length, dtype in parts:
        dtype = np.dtype(dtype)
        start += (-(address + start)) % ALIGNMENT
        stop = start + length * dtype.itemsize
        arrays.append(buffer[start:stop].view(dtype))
        start = stop
    return arrays


def _carved_nbytes(parts: list[tuple[int, np.dtype]]) -> int:
    """The buffer size _carve() needs for ``parts`` wherever the buffer starts."""
    return ALIGNMENT + sum(-(-length * np.dtype(dtype).itemsize // ALIGNMENT) * ALIGNMENT for length, dtype in parts)
