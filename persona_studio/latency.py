"""Pose-change-to-screen latency: from a pose request to the first viewport frame that shows it.

The poser reports each scene it hands over (``PosedScene``: scene version, request time, refined or
not); once per UI frame, after the viewport's tick, ``update`` is told which scene version the shown
frame holds. A scene the viewport skipped (latest wins) counts as shown with the newer one that
replaced it.
"""
from __future__ import annotations

import statistics
import time
from collections import deque

from persona_studio.posing import PosedScene


class ScreenLatency:
    """Latency samples in seconds: ``first`` (the first image of a new pose, maybe the quick base pose)
    and ``refined`` (the image with pose offsets), the last ``keep`` of each."""

    def __init__(self, keep: int = 100):
        self._watched: list[PosedScene] = []
        self._first_seen: deque[float] = deque(maxlen=4 * keep)  # request times already counted in ``first``
        self.first: deque[float] = deque(maxlen=keep)
        self.refined: deque[float] = deque(maxlen=keep)

    def watch(self, scene: PosedScene) -> None:
        self._watched.append(scene)

    def update(self, shown_version: int, now: float | None = None) -> None:
        """Call once per UI frame after the viewport's tick with the scene version it shows."""
        now = time.perf_counter() if now is None else now
        waiting = []
        for scene in self._watched:
            if scene.scene_version <= shown_version:
                self._record(scene, now)
            else:
                waiting.append(scene)
        self._watched = waiting
    def _record(self, scene: PosedScene, now: float) -> None:
        seconds = now - scene.requested_at
        if scene.requested_at not in self._first_seen:
            self._first_seen.append(scene.requested_at)
            self.first.append(seconds)
        if scene.refined:
            self.refined.append(seconds)

    @staticmethod
    def median_ms(samples) -> float | None:
        return 1000.0 * statistics.median(samples) if samples else None

    def summary(self) -> str:
        """e.g. "pose -> screen: 42 ms first image, 131 ms with pose offsets (median)"."""
        first, refined = self.median_ms(self.first), self.median_ms(self.refined)
        if first is None:
            return "pose -> screen: move a slider to measure"
        text = f"pose -> screen: {first:.0f} ms first image"
        if refined is not None:
            text += f", {refined:.0f} ms with pose offsets"
        return text + " (median)"
