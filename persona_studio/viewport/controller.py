"""The viewport's logic without any GUI: camera, current scene, background, and when to render.

``ViewportController.tick()`` runs once per UI frame: it picks up a newly published scene, submits a
render request only when something the image depends on changed (the dirty check), and returns a
finished frame when one is ready.
"""
from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

from persona_studio.camera import Camera
from persona_studio.viewport.render_thread import RenderedFrame, RenderRequest
from persona_studio.viewport.scene import SceneSource, SplatScene, make_scene


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


class ViewportController:
    """Camera + scene + background -> render requests to a backend (``RenderThread`` or ``InlineRenderer``).

    Only the UI thread calls ``tick`` and changes the camera or background; any thread may call
    ``set_scene`` (it goes through ``scene_source``).

    While the camera moves (and for ``settle_seconds`` after), images are rendered at ``moving_scale``
    times the resolution and shown stretched, so orbiting stays fluid on a software GL; once the camera
    rests, one full-resolution frame follows. A preview scene (``set_scene(..., moving=True)``: a pose
    slider being dragged, with the final scene to follow) is drawn at reduced resolution too, and gets
    no full-resolution frame of its own unless the final scene is more than ``preview_seconds`` late.
    """

    def __init__(self, backend, camera: Camera | None = None, background=(1.0, 1.0, 1.0),
                 moving_scale: float = 0.5, settle_seconds: float = 0.3, preview_seconds: float = 2.0,
                 clock=time.monotonic):
        self.backend = backend
        self.camera = camera or Camera()
        self.background = tuple(float(c) for c in background)[:3]
        self.scene_source = SceneSource()
        self.scene: SplatScene | None = None
        self.scene_version = 0
        self.latest_frame: RenderedFrame | None = None
        self.shown_scene_version = 0  # the scene version in ``latest_frame``
        self._request_versions: dict[int, int] = {}  # request serial -> scene version, until its frame comes
        self.frame_rate = RateMeter()
        self.requests = 0  # render requests submitted (the dirty check keeps this from growing while idle)
        self._submitted_key: tuple | None = None
        self._framed_once = False
        self.moving_scale = float(moving_scale)
        self.settle_seconds = float(settle_seconds)
        self.preview_seconds = float(preview_seconds)
        self._preview_at = -math.inf  # when the current scene arrived, if it is a preview
        self._clock = clock
        self._camera_state = self.camera.state()
        self._camera_moved_at = -math.inf  # the last camera movement or interactive scene change

    # -- inputs ---------------------------------------------------------------------------------------
    def set_scene(self, means, colors, scales, opacities=None, label: str = "", frame_camera: bool = False,
                  moving: bool = False) -> int:
        """Show new splats: ``means [N, 3]`` metres, ``colors [N, 3]`` RGB [0, 1], ``scales [N]`` std-dev metres,
        ``opacities [N]`` (default 1). Thread-safe (numpy or CPU torch inputs are copied); returns the
        scene's version. ``frame_camera`` re-aims the camera at it; the very first scene is always framed.
        ``moving``: a preview during an interactive change, drawn at reduced resolution; the caller promises
        a final (``moving=False``) scene soon.

        Raises:
            ValueError: wrong shapes, NaN/inf, negative scales.
        """
        return self.scene_source.publish(make_scene(means, colors, scales, opacities, label), frame_camera, moving)

    def set_background(self, rgb) -> None:
        """Background colour, RGB in [0, 1] (UI thread)."""
        self.background = tuple(float(np.clip(c, 0.0, 1.0)) for c in rgb[:3])

    def frame_scene(self) -> None:
        """Aim the camera at the current scene and make that the reset view."""
        if self.scene is not None:
            self.camera.frame(*self.scene.bounds())

    # -- per frame ------------------------------------------------------------------------------------
    def render_scale(self) -> float:
        """Resolution factor for the next render: ``moving_scale`` while the camera moves or a preview scene
        shows, else 1."""
        now = self._clock()
        moving = now - self._camera_moved_at < self.settle_seconds or now - self._preview_at < self.preview_seconds
        return self.moving_scale if moving else 1.0

    def view_key(self) -> tuple:
        """Everything the image depends on; the view is dirty when this differs from the last request."""
        return (self.scene_version, self.camera.state(), self.background, self.render_scale())

    @property
    def dirty(self) -> bool:
        """True when the next ``tick`` will request a render (including for a scene not yet picked up)."""
        return self.scene_source.version != self.scene_version or self.view_key() != self._submitted_key

    def tick(self) -> RenderedFrame | None:
        """Adopt a newly published scene, request a render if dirty, return a newly finished frame (or None)."""
        entry = self.scene_source.poll(self.scene_version)
        if entry is not None:
            self.scene, self.scene_version = entry.scene, entry.version
            if entry.frame_camera or not self._framed_once:
                self.frame_scene()
                self._framed_once = True
                self._camera_state = self.camera.state()  # a jump, not a movement: no low-res frames
            self._preview_at = self._clock() if entry.moving else -math.inf
        if self.camera.state() != self._camera_state:
            self._camera_state, self._camera_moved_at = self.camera.state(), self._clock()
        if self.dirty:
            key = self.view_key()
            self.requests += 1
            self._request_versions[self.requests] = self.scene_version
            self.backend.submit(self._request(key[-1]))
            self._submitted_key = key
        frame = self.backend.take_frame()
        if frame is not None:
            self.latest_frame = frame
            self.shown_scene_version = self._request_versions.get(frame.serial, self.shown_scene_version)
            # Requests up to this one are answered or were skipped (latest wins): forget them.
            self._request_versions = {k: v for k, v in self._request_versions.items() if k > frame.serial}
            self.frame_rate.tick()
        return frame

    def _request(self, scale: float) -> RenderRequest:
        """A render request for the current view at ``scale`` times the camera's resolution."""
        width = max(1, round(self.camera.width * scale))
        height = max(1, round(self.camera.height * scale))
        K = self.camera.K()
        K[0] *= width / self.camera.width   # scaling the image scales focal length and principal point
        K[1] *= height / self.camera.height
        return RenderRequest(self.scene, self.camera.viewmat(), K, width, height, self.background, self.requests)

    @property
    def up_to_date(self) -> bool:
        """True when the shown frame is the final image of the current view: it answers the latest request,
        nothing is dirty, and it is full resolution (the camera has settled)."""
        return (not self.dirty and self.render_scale() == 1.0 and self.latest_frame is not None
                and self.latest_frame.serial == self.requests)
