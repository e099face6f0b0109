"""Threads for the engine: torch's thread count in its loops, and a pool that runs numba kernels in slices."""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import torch


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block (the previous count is restored after).

    The engine's loops alternate many small torch ops with the rasterizer's own numba threads.
    Torch's idle OpenMP workers spin and starve those threads: on the 2-core machines here a
    training step, a fit or an export frame runs several times faster with one torch thread, far
    faster still when other processes compete for the cores, and single-threaded reductions make
    training runs bit-reproducible (resume gives exactly the parameters of an uninterrupted run).
    """
    with torch_threads(1):
        yield


def training_threads() -> int:
    """Torch threads for a training loop: every usable core when OpenMP's idle workers sleep
    (``OMP_WAIT_POLICY=PASSIVE``, which the command line sets before torch loads), else 1.

    A training step's pose MLP and losses are large enough to share out: on the 2-core machine a preview
    step took 385 ms on two passive threads against 560 ms on one. Spinning workers would starve the
    rasterizer's threads instead. Torch's CPU kernels split work the same way for the same thread count,
    so a run and its resume stay bit-identical as long as the count is the same. (Within a process always; across
    processes rarely not: torch's float64 exp of 9000 values, split over two OpenMP threads, gave the worker's
    half other roundings in about one process of 60 started on a loaded machine, session 18.)
    """
    if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() != "PASSIVE":
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch with ``count`` threads inside the block (the previous count is restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0


def kernel_threads() -> int:
    """Threads per numba kernel launch (run_sliced): NUMBA_NUM_THREADS (defaults to the usable CPU cores)."""
    import numba

    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _pool() -> ThreadPoolExecutor:
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        # a forked child inherits the executor but not its threads: start a fresh one there
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL = ThreadPoolExecutor(max_workers=max(1, kernel_threads() - 1), thread_name_prefix="persona-render")
            _POOL_PID = os.getpid()
        return _POOL


def _run_calls(calls: list[tuple]) -> None:
    """Run each ``(function, *args)`` of ``calls`` at once: the first on the calling thread, the others on the
    pool; returns when all are done (raising the first one's error, else a pool call's)."""
    futures = [_pool().submit(*call) for call in calls[1:]]
    try:
        if calls:
            calls[0][0](*calls[0][1:])
    finally:
        for future in futures:
            future.result()


def run_sliced(kernel, bounds, *args) -> None:
    """Run ``kernel(bounds[i], bounds[i + 1], *args)`` for every slice i, in parallel (kernels that release
    the GIL: numba ``nogil``). bounds: [S + 1] increasing ints. The calling thread runs slice 0 itself."""
    _run_calls([(kernel, int(bounds[i]), int(bounds[i + 1]), *args) for i in range(len(bounds) - 1)])


def run_shared(kernel, *args) -> None:
    """Run ``kernel(*args)`` on every kernel thread at once (the calling thread too): kernels that take their
    work items from a queue they share (see ``core.render.kernels.take_task``), so a thread that finishes
    early takes more rather than waiting for a slower one."""
    _run_calls([(kernel, *args)] * kernel_threads())


def run_beside(call, kernel, n_items: int, *args) -> None:
    """Run ``call`` (``(function, *args)``) on the calling thread while ``kernel``'s slices of ``n_items`` run
    on the other kernel threads, as run_sliced would (both release the GIL); one after the other when there
    is a single kernel thread. For two independent steps of which one is serial."""
    others = kernel_threads() - 1
    if others < 1 or n_items == 0:
        call[0](*call[1:])
        run_sliced(kernel, even_bounds(n_items), *args)
        return
    bounds = even_bounds(n_items, others)
    _run_calls([call] + [(kernel, bounds[i], bounds[i + 1], *args) for i in range(len(bounds) - 1)])


def even_bounds(n_items: int, shares: int | None = None) -> list[int]:
    """Slice bounds splitting n_items into ``shares`` (default: one per kernel thread) equal parts."""
    shares = min(shares or kernel_threads(), max(n_items, 1))
    return [n_items * i // shares for i in range(shares + 1)]
