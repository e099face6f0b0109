"""Keep native libraries' routine log lines off the terminal.

mediapipe's C++ graph (absl logging, TensorFlow Lite) writes a dozen INFO / WARNING lines straight to file
descriptor 2 each time a model starts ("Created TensorFlow Lite XNNPACK delegate", "Feedback manager requires a
model with a single signature inference", ...), in the middle of our progress bars. Python cannot set absl's C++
log level, so ``quiet_native_logs`` points descriptor 2 at a temporary file while the block runs and then writes
back to stderr everything that is not such a routine line: errors, fatal messages and anything else (our own
output included) still appear, after the block.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import Iterator

# absl's "I/W<mmdd> <time> <thread> <file>:<line>] message" (info and warnings, not E errors or F fatal), and the
# two lines TensorFlow Lite and absl print before their loggers are set up.
ROUTINE_LINE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-/]+:\d+\] "
    r"|INFO: Created TensorFlow Lite XNNPACK delegate"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)")

_LOCK = threading.Lock()
_state = {"depth": 0, "saved": -1, "capture": None}


def routine_lines_removed(text: str) -> str:
    """``text`` without the native libraries' routine log lines (``ROUTINE_LINE``)."""
    return "".join(line for line in text.splitlines(keepends=True) if not ROUTINE_LINE.match(line))


def _begin() -> None:
    with _LOCK:
        _state["depth"] += 1
        if _state["depth"] > 1:
            return
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 (a detached process): nothing to quieten
            return
        capture = tempfile.TemporaryFile()
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        _state["saved"], _state["capture"] = saved, capture


def _end() -> None:
    with _LOCK:
        _state["depth"] -= 1
        capture, saved = _state["capture"], _state["saved"]
        if _state["depth"] > 0 or capture is None:
            return
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        _state["saved"], _state["capture"] = -1, None
        with capture:
            capture.seek(0)
            kept = routine_lines_removed(capture.read().decode("utf-8", errors="replace"))
    if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Hold back descriptor 2 inside the block and write back all but the routine native log lines after it.

    Process-wide (a descriptor is shared by all threads): blocks entered from several threads at once share one
    capture, replayed when the last one leaves.
    """
    _begin()
    try:
        yield
    finally:
        _end()
