"""Torch threading for the engine's loops."""
from __future__ import annotations

import contextlib
import os
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
    so a run and its resume stay bit-identical as long as the count is the same.
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
