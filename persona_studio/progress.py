"""A terminal progress bar with rate and ETA (one line redrawn on a TTY, sparse lines otherwise)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """``83.4`` -> ``'1:23'``; hours shown when needed."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """``bar.update(done, info)`` redraws ``label [####    ] done/total  rate/s  ETA  info``."""

    def __init__(self, total: int, label: str = "", unit: str = "it", stream: TextIO | None = None,
                 width: int = 24, min_interval: float = 0.1):
        self.total = max(1, int(total))
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_percent = -1
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._start_done: int | None = None

    def line(self, done: int, info: str = "") -> str:
        """The text of the bar at ``done`` units (rate counts only units done since the bar started)."""
        if self._start_done is None:
            self._start_done = done
        elapsed = time.perf_counter() - self.start
        rate = (done - self._start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        filled = int(self.width * min(done, self.total) / self.total)
        eta_text = format_duration(eta) if eta == eta else "?"
        parts = [f"{self.label} [{'#' * filled}{' ' * (self.width - filled)}] {done}/{self.total}",
                 f"{rate:.1f} {self.unit}/s", f"ETA {eta_text}"]
        if info:
            parts.append(info)
        return "  ".join(p for p in parts if p).strip()

    def update(self, done: int, info: str = "", force: bool = False) -> None:
        now = time.perf_counter()
        percent = int(100 * done / self.total)
        text = self.line(done, info)
        if self._tty:
            if force or now - self._last_draw >= self.min_interval or done >= self.total:
                self.stream.write("\r" + text + "\033[K")
                self.stream.flush()
                self._last_draw = now
        elif force or percent // 10 != self._last_percent // 10 or done >= self.total:
            self.stream.write(text + "\n")
            self.stream.flush()
        self._last_percent = percent

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
