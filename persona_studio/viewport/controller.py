"""The viewport's logic without any GUI: camera, current scene, background, and when to render.

``ViewportController.tick()`` runs once per UI frame: it picks up a newly published scene, submits a
render request only when something the image depends on changed (the dirty check), and returns a
finished frame when one is ready.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from persona_studio.camera import Camera
from persona_studio.viewport.render_thread import RenderedFrame, RenderRequest
from persona_studio.viewport.scene import SceneSource, SplatScene, make_scene, thinned_scene

# While the camera moves or a pose is dragged, scenes above MOVING_SPLATS splats are drawn from that many
# or half of theirs, whichever is more (fewer, larger splats blur the figure and widen its outline; at a
# half it is hard to see). benchmarks/viewport.py measures what it buys.
MOVING_SPLATS = 16_000


class RateMeter:
    """Events per second over the last ``window`` seconds (e.g. viewport frames rendered)."""

    def __init__(self, window: float = 1.0):
        self.window = window
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.perf_counter() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return len(self._times) / self.window


@dataclass(frozen=True)
class _View:
    """The camera's full-resolution view as of one UI tick: world-to-camera ``viewmat [4, 4]``, intrinsics
    ``K [3, 3]`` (pixels), size (pixels), background RGB."""

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int
    background: tuple[float, float, float]


class ViewportController:
    """Camera + scene + background -> render requests to a backend (``RenderThread`` or ``InlineRenderer``).

    Only the UI thread calls ``tick`` and changes the camera or background; any thread may call
    ``set_scene`` (it goes through ``scene_source``). With ``render_on_publish`` (a thread-safe backend
    such as ``RenderThread``) ``set_scene`` also submits the new scene at once with the view of the last
    tick, so a posed avatar goes straight to the renderer instead of waiting for the UI's next tick (a UI
    frame on a software GL takes tens of ms); a scene that reframes the camera waits for the tick.

    While the camera moves or an interactive change goes on (``set_scene(..., moving=True)``: a pose
    slider being dragged, a motion playing), and for ``settle_seconds`` after, images are rendered at
    ``moving_scale`` times the resolution and shown stretched, and a scene of more than ``moving_splats``
    splats from half of them or ``moving_splats``, whichever is more (``thinned_scene``: fewer, larger
    ones; the compositor's cost grows with the splat count far more than with the pixels), so orbiting
    and posing stay fluid on a software GL; once things rest, one full-resolution frame of every splat
    follows.
    """

    def __init__(self, backend, camera: Camera | None = None, background=(1.0, 1.0, 1.0),
                 moving_scale: float = 0.5, settle_seconds: float = 0.3, clock=time.monotonic,
                 render_on_publish: bool = False, moving_splats: int = MOVING_SPLATS):
        self.backend = backend
        self.render_on_publish = bool(render_on_publish)
        self._lock = threading.Lock()  # the UI's tick vs a publishing thread's set_scene
        self.camera = camera or Camera()
        self.background = tuple(float(c) for c in background)[:3]
        self.scene_source = SceneSource()
        self.scene: SplatScene | None = None
        self.scene_version = 0
        self.latest_frame: RenderedFrame | None = None
        self.shown_scene_version = 0  # the scene version in ``latest_frame``
        self.shown_full_resolution = False  # whether ``latest_frame`` was rendered at full resolution
        # (stage, time.perf_counter()) for ``latest_frame``: hand-off to the viewport, render stages, frame taken
        self.latest_stamps: tuple[tuple[str, float], ...] = ()
        # request serial -> (scene version, when that scene was picked up, scale), until its frame comes
        self._requested: dict[int, tuple[int, float, float]] = {}
        self._scene_picked_at = 0.0
        self._last_view: _View | None = None  # the view of the last request the tick made
        self.frame_rate = RateMeter()
        self.requests = 0  # render requests submitted (the dirty check keeps this from growing while idle)
        self._submitted_key: tuple | None = None
        self._framed_once = False
        self.moving_scale = float(moving_scale)
        self.moving_splats = int(moving_splats)
        self._thinned: tuple[SplatScene | None, SplatScene | None] = (None, None)  # (scene, its thinned copy)
        self.settle_seconds = float(settle_seconds)
        self._clock = clock
        self._camera_state = self.camera.state()
        self._moved_at = -math.inf  # the last camera movement or interactive scene change

    # -- inputs ---------------------------------------------------------------------------------------
    def set_scene(self, means, colors, scales, opacities=None, label: str = "", frame_camera: bool = False,
                  moving: bool = False) -> int:
        """Show new splats: ``means [N, 3]`` metres, ``colors [N, 3]`` RGB [0, 1], ``scales [N]`` std-dev metres,
        ``opacities [N]`` (default 1). Thread-safe (numpy or CPU torch inputs are copied); returns the
        scene's version. ``frame_camera`` re-aims the camera at it; the very first scene is always framed.
        ``moving``: one step of an interactive change, drawn at reduced resolution until things rest.

        Raises:
            ValueError: wrong shapes, NaN/inf, negative scales.
        """
        scene = make_scene(means, colors, scales, opacities, label)
        with self._lock:
            version = self.scene_source.publish(scene, frame_camera, moving)
            if self.render_on_publish:
                self._submit_published()
        return version

    def set_background(self, rgb) -> None:
        """Background colour, RGB in [0, 1] (UI thread)."""
        self.background = tuple(float(np.clip(c, 0.0, 1.0)) for c in rgb[:3])

    def frame_scene(self) -> None:
        """Aim the camera at the current scene and make that the reset view."""
        if self.scene is not None:
            self.camera.frame(*self.scene.bounds())

    # -- per frame ------------------------------------------------------------------------------------
    def render_scale(self) -> float:
        """Resolution factor for the next render: ``moving_scale`` while the camera moves or an interactive
        change goes on (and ``settle_seconds`` after), else 1."""
        return self.moving_scale if self._clock() - self._moved_at < self.settle_seconds else 1.0

    def view_key(self) -> tuple:
        """Everything the image depends on; the view is dirty when this differs from the last request."""
        return (self.scene_version, self.camera.state(), self.background, self.render_scale())

    @property
    def dirty(self) -> bool:
        """True when the next ``tick`` will request a render (including for a scene not yet picked up)."""
        return self.scene_source.version != self.scene_version or self.view_key() != self._submitted_key

    def tick(self) -> RenderedFrame | None:
        """Adopt a newly published scene, request a render if dirty, return a newly finished frame (or None)."""
        with self._lock:
            entry = self.scene_source.poll(self.scene_version)
            if entry is not None:
                self._adopt(entry)
                if entry.frame_camera or not self._framed_once:
                    self.frame_scene()
                    self._framed_once = True
                    self._camera_state = self.camera.state()  # a jump, not a movement: no low-res frames
            if self.camera.state() != self._camera_state:
                self._camera_state, self._moved_at = self.camera.state(), self._clock()
            if self.dirty:
                key = self.view_key()
                self._last_view = self._current_view()
                self._submit(self._last_view, key)
            frame = self.backend.take_frame()
            if frame is not None:
                self._took(frame)
            return frame

    def _adopt(self, entry) -> None:
        """Make a ``SceneSource`` entry the current scene."""
        self.scene, self.scene_version = entry.scene, entry.version
        self._scene_picked_at = time.perf_counter()
        if entry.moving:
            self._moved_at = self._clock()

    def _submit_published(self) -> None:
        """Adopt the newest scene and submit it with the last tick's view (at the scale it needs now),
        unless it must reframe the camera (left to ``tick``, the camera's owner)."""
        if self._last_view is None or not self._framed_once:  # the first scene is framed by the tick
            return
        entry = self.scene_source.poll(self.scene_version, keep_framing=True)
        if entry is None:
            return
        self._adopt(entry)
        self._submit(self._last_view, (self.scene_version, *self._submitted_key[1:-1], self.render_scale()))

    def _current_view(self) -> _View:
        return _View(self.camera.viewmat(), self.camera.K(), self.camera.width, self.camera.height, self.background)

    def _submit(self, view: _View, key: tuple) -> None:
        """Request the current scene in ``view`` at the scale ``key[-1]`` (a ``view_key``)."""
        self.requests += 1
        scale = key[-1]
        self._requested[self.requests] = (self.scene_version, self._scene_picked_at, scale)
        self.backend.submit(self._request(view, scale, self.requests))
        self._submitted_key = key

    def _took(self, frame: RenderedFrame) -> None:
        """Bookkeeping for a finished frame the UI takes."""
        self.latest_frame = frame
        picked_at = frame.stamps[0][1] if frame.stamps else time.perf_counter()
        self.shown_scene_version, picked_at, scale = self._requested.get(
            frame.serial, (self.shown_scene_version, picked_at, 1.0))
        self.shown_full_resolution = scale == 1.0
        self.latest_stamps = (("hand-off to the viewport", picked_at), *frame.stamps,
                              ("frame taken", time.perf_counter()))
        # Requests up to this one are answered or were skipped (latest wins): forget them.
        self._requested = {k: v for k, v in self._requested.items() if k > frame.serial}
        self.frame_rate.tick()

    def _request(self, view: _View, scale: float, serial: int) -> RenderRequest:
        """Render request ``serial`` of the current scene in ``view`` at ``scale`` times its resolution."""
        width = max(1, round(view.width * scale))
        height = max(1, round(view.height * scale))
        K = view.K.copy()
        K[0] *= width / view.width   # scaling the image scales focal length and principal point
        K[1] *= height / view.height
        scene = self.scene if scale == 1.0 else self._moving_scene()
        return RenderRequest(scene, view.viewmat, K, width, height, view.background, serial)

    def _moving_scene(self) -> SplatScene | None:
        """The current scene thinned to half its splats or ``moving_splats``, whichever is more (made once per
        scene: the renderer re-uploads a scene only when it is a different object)."""
        if self.scene is None:
            return None
        if self._thinned[0] is not self.scene:
            count = max(self.moving_splats, self.scene.count // 2)
            self._thinned = (self.scene, thinned_scene(self.scene, count))
        return self._thinned[1]

    @property
    def up_to_date(self) -> bool:
        """True when the shown frame is the final image of the current view: it answers the latest request,
        nothing is dirty, and it is full resolution (the camera has settled)."""
        return (not self.dirty and self.render_scale() == 1.0 and self.latest_frame is not None
                and self.latest_frame.serial == self.requests)
