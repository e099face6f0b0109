"""core.allocator: freed memory is kept for reuse, so re-allocating a block does not fault its pages in again."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from core.paths import REPO_ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")

# Allocate and touch six 8 MiB blocks (above glibc's default mmap threshold, below ours), then free them all, over
# and over, as a training step does with its activations; print the minor page faults of the last eight rounds.
# glibc's defaults give the freed heap top back to the system (above twice the largest block freed), so every
# round faults its pages in again.
SCRIPT = """
import resource, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from core.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[2] == "keep" else None
for round in range(12):
    if round == 4:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.empty(8 << 20, np.uint8) for _ in range(6)]
    for block in blocks:
        block[::4096] = 1
    del blocks, block
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO_ROOT), mode], capture_output=True, text=True,
                          timeout=120, check=True)
    applied, faults = done.stdout.split()
    return applied, int(faults)


def test_kept_memory_is_reused_without_page_faults():
    applied, kept = _faults("keep")
    assert applied == "True"
    applied, default = _faults("default")
    # glibc's defaults fault every block in again, at least once per block and round (once per 2 MiB where
    # transparent huge pages back them, once per 4 KiB page otherwise: 24,000 here); kept memory does not
    assert default >= 8 * 6, default
    assert kept <= default // 10, (kept, default)


def test_user_malloc_settings_win(monkeypatch):
    from core import allocator

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert allocator.keep_freed_memory() is False
    assert allocator.status() == (False, "your MALLOC_* environment settings")
