"""Torch threading for the engine's loops."""
from __future__ import annotations

import contextlib
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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
