"""Pose-change-to-screen latency: from a pose request to the first viewport frame that shows it, and
where that time goes.

The poser reports each scene it hands over (``PosedScene``: scene version, request time, refined or
not, its posing stages); once per UI frame, after the frame is drawn, ``update`` is told which scene
version the shown frame holds and the stages that frame went through (hand-off to the viewport, render
wake-up, sort, composite, frame taken, texture upload). A scene the viewport skipped (latest wins) counts as
shown with the newer one that replaced it.

Stages are timestamps (``time.perf_counter()``) in path order; a stage's duration is the time from the
previous stamp to its own, so the durations of one sample add up to its latency:
slider callback -> poser wake-up -> body model -> (pose offsets +) skinning -> hand-off to the viewport
(the scene copied and adopted: by the posing thread itself, or by the UI's next tick) -> render wake-up
-> sort -> composite -> frame taken (UI tick) -> texture upload -> shown (the UI frame drawn).
"""
from __future__ import annotations

import statistics
import time
from collections import deque

from persona_studio.posing import PosedScene, Stamps

SHOWN = "shown (UI frame drawn)"


def stage_seconds(requested_at: float, stamps: Stamps) -> dict[str, float]:
    """Seconds spent in each stage: from the previous stamp (the first: from ``requested_at``) to its own.
    A stage name that occurs twice adds up."""
    durations: dict[str, float] = {}
    last = requested_at
    for name, at in stamps:
        durations[name] = durations.get(name, 0.0) + (at - last)
        last = at
    return durations


class ScreenLatency:
    """Latency samples in seconds: ``first`` (the first image of a new pose, maybe the quick base pose,
    maybe at reduced resolution), ``refined`` (the first image with pose offsets) and ``full`` (the first
    full-resolution image with pose offsets), the last ``keep`` of each; ``first_stages`` and
    ``refined_stages`` hold each sample's ``stage_seconds``."""

    def __init__(self, keep: int = 100):
        self._watched: list[PosedScene] = []
        self._first_seen: deque[float] = deque(maxlen=4 * keep)  # request times already counted in ``first``
        self.first: deque[float] = deque(maxlen=keep)
        self.refined: deque[float] = deque(maxlen=keep)
        self.full: deque[float] = deque(maxlen=keep)
        self._awaiting_full: list[PosedScene] = []  # refined scenes shown at reduced resolution only
        self.first_stages: deque[dict[str, float]] = deque(maxlen=keep)
        self.refined_stages: deque[dict[str, float]] = deque(maxlen=keep)

    def watch(self, scene: PosedScene) -> None:
        self._watched.append(scene)

    @property
    def waiting(self) -> bool:
        """A watched scene is not on screen yet."""
        return bool(self._watched)

    def clear(self) -> None:
        """Forget the samples (not the scenes still waiting to be shown)."""
        for samples in (self.first, self.refined, self.full, self.first_stages, self.refined_stages):
            samples.clear()

    def update(self, shown_version: int, now: float | None = None, frame_stamps: Stamps = (),
               full_resolution: bool = True) -> None:
        """Call once per UI frame, after it is drawn, with the scene version it shows, the stages of the
        frame that brought that version (``ViewportWidget.frame_stamps``) and whether that frame is full
        resolution."""
        now = time.perf_counter() if now is None else now
        waiting = []
        for scene in self._watched:
            if scene.scene_version <= shown_version:
                self._record(scene, now, frame_stamps)
                if scene.refined:
                    self._awaiting_full.append(scene)
            else:
                waiting.append(scene)
        self._watched = waiting
        if full_resolution:
            # Only the newest refined scene counts: older ones were replaced before they got a full frame.
            shown = [scene for scene in self._awaiting_full if scene.scene_version <= shown_version]
            if shown:
                self.full.append(now - shown[-1].requested_at)
            self._awaiting_full = [scene for scene in self._awaiting_full if scene.scene_version > shown_version]

    def _record(self, scene: PosedScene, now: float, frame_stamps: Stamps) -> None:
        seconds = now - scene.requested_at
        stages = stage_seconds(scene.requested_at, (*scene.stamps, *frame_stamps, (SHOWN, now)))
        if scene.requested_at not in self._first_seen:
            self._first_seen.append(scene.requested_at)
            self.first.append(seconds)
            self.first_stages.append(stages)
        if scene.refined:
            self.refined.append(seconds)
            self.refined_stages.append(stages)

    @staticmethod
    def median_ms(samples) -> float | None:
        return 1000.0 * statistics.median(samples) if samples else None

    @staticmethod
    def stage_medians_ms(samples) -> list[tuple[str, float]]:
        """(stage, median milliseconds) over ``samples`` (``first_stages`` or ``refined_stages``), in path
        order; a stage missing from a sample counts as 0 there."""
        names: dict[str, None] = {}
        for stages in samples:
            names.update(dict.fromkeys(stages))
        return [(name, 1000.0 * statistics.median([stages.get(name, 0.0) for stages in samples])) for name in names]

    def summary(self) -> str:
        """e.g. "pose -> screen: 42 ms first image, 61 ms with pose offsets, 410 ms full resolution (median)"."""
        first, refined, full = self.median_ms(self.first), self.median_ms(self.refined), self.median_ms(self.full)
        if first is None:
            return "pose -> screen: move a slider to measure"
        text = f"pose -> screen: {first:.0f} ms first image"
        if refined is not None:
            text += f", {refined:.0f} ms with pose offsets"
        if full is not None and full != refined:
            text += f", {full:.0f} ms full resolution"
        return text + " (median)"
