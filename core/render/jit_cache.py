"""Where numba keeps the CPU rasterizer's compiled kernels, so only the first run pays for the JIT.

numba's ``cache=True`` writes beside the source file, which fails for a read-only install and leaves
files in a source tree. We point numba at a per-user cache directory instead, unless the user already
chose one with ``NUMBA_CACHE_DIR``. This must run before the kernels are decorated: numba fixes a
function's cache location when ``@njit(cache=True)`` is applied.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

APP_CACHE_NAME = "persona-studio"


def user_cache_root() -> Path:
    """The platform's per-user cache directory (XDG on Linux, Library/Caches on macOS, LOCALAPPDATA on Windows)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def default_numba_cache_dir() -> Path:
    """Our numba cache directory: under the user cache, or the temp dir when HOME is read-only (CI)."""
    preferred = user_cache_root() / APP_CACHE_NAME / "numba"
    if _writable_dir(preferred):
        return preferred
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"{APP_CACHE_NAME}-{uid}" / "numba"


def numba_cache_dir() -> Path:
    """The directory numba caches to: the user's ``NUMBA_CACHE_DIR`` if set, else ours. No side effects."""
    return Path(os.environ.get("NUMBA_CACHE_DIR") or default_numba_cache_dir())


def configure_numba_cache() -> Path:
    """Make numba cache to a writable per-user directory; a user's ``NUMBA_CACHE_DIR`` always wins.

    Returns the directory numba will use. Safe to call many times.
    """
    chosen = str(numba_cache_dir())
    if not os.environ.get("NUMBA_CACHE_DIR"):
        # Set the environment (not just numba.config) so that numba's own config reloads and child
        # processes (benchmarks, workers) agree on the same directory.
        os.environ["NUMBA_CACHE_DIR"] = chosen
    if "numba" in sys.modules:
        import numba.core.config as numba_config

        numba_config.reload_config()
        numba_config.CACHE_DIR = chosen
    return Path(chosen)
