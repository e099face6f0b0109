"""Shared timing helper for the benchmark scripts (run as ``python benchmarks/NAME.py``)."""
from __future__ import annotations

import time
from typing import Callable


def call_times(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def memory_kib() -> dict[str, int]:
    """This process's resident memory now (``VmRSS``) and at its peak (``VmHWM``), KiB (Linux only)."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values


def reset_peak_rss() -> None:
    """Start ``VmHWM`` again from the current resident size (Linux only)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
