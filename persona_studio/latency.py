"""Pose-change-to-screen latency: from a pose request to the first viewport frame that shows it.

The poser reports each scene it hands over (``PosedScene``: scene version, request time, refined or
not); once per UI frame, after the viewport's tick, ``update`` is told which scene version the
viewport has adopted, how many render requests it has submitted and which request the shown frame
answers. A scene is on screen when a frame answering a request made after its adoption is shown.
"""
from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass

from persona_studio.posing import PosedScene


@dataclass
class _Watched:
    scene: PosedScene
    request_serial: int | None = None  # the viewport's first render request that includes the scene


class ScreenLatency:
    """Latency samples in seconds: ``first`` (the first image of a new pose, maybe the quick base pose)
    and ``refined`` (the image with pose offsets), the last ``keep`` of each."""

    def __init__(self, keep: int = 100):
        self._watched: list[_Watched] = []
        self._first_seen: deque[float] = deque(maxlen=4 * keep)  # request times already counted in ``first``
        self.first: deque[float] = deque(maxlen=keep)
        self.refined: deque[float] = deque(maxlen=keep)

    def watch(self, scene: PosedScene) -> None:
        self._watched.append(_Watched(scene))

    def update(self, adopted_version: int, submitted_requests: int, shown_serial: int | None,
               now: float | None = None) -> None:
        """Call once per UI frame after the viewport's tick.

        ``adopted_version``: the scene version the viewport uses now; ``submitted_requests``: its render
        requests so far (the newest one includes the adopted scene); ``shown_serial``: the request the
        shown frame answers (None before the first frame).
        """
        now = time.perf_counter() if now is None else now
        waiting = []
        for item in self._watched:
            if item.request_serial is None and adopted_version >= item.scene.scene_version:
                item.request_serial = submitted_requests
            # A scene skipped by the viewport (latest wins) counts as shown with the newer one that replaced it.
            if item.request_serial is not None and shown_serial is not None and shown_serial >= item.request_serial:
                self._record(item.scene, now)
            else:
                waiting.append(item)
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
