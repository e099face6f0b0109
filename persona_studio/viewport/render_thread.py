"""Where the viewport's GL work runs: in the caller's thread (``InlineRenderer``) or a thread of its own
(``RenderThread``, what the studio uses, so the GL context never meets Dear PyGui's and a slow frame
never stalls the UI).

Both take ``RenderRequest``s and hand back ``RenderedFrame``s; a newer request replaces one not yet started.
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np

from persona_studio.viewport.scene import SplatScene


@dataclass(frozen=True)
class RenderRequest:
    """Everything one viewport image depends on.

    Attributes:
        scene: the splats, or None for an empty view (compared by identity: a new scene is a new object).
        viewmat: world-to-camera, OpenCV axes. [4, 4]
        K: intrinsics, pixels. [3, 3]
        width, height: image size, pixels.
        background: RGB in [0, 1]. [3]
        serial: increasing number given by the submitter, echoed in the frame.
    """

    scene: SplatScene | None
    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int
    background: tuple[float, float, float]
    serial: int


@dataclass(frozen=True)
class RenderedFrame:
    """An opaque viewport image: float32 RGBA ``[H, W, 4]`` (alpha 1), row 0 at the top. ``stamps``: when
    each stage of making it ended (``time.perf_counter()``): render wake-up (the request taken), sort,
    composite. ``drawn_by``: the renderer's ``description`` (e.g. "CPU compositor")."""

    image: np.ndarray
    serial: int
    render_seconds: float
    stamps: tuple[tuple[str, float], ...] = ()
    drawn_by: str = ""


def _render_with(renderer, request: RenderRequest, current_scene: SplatScene | None,
                 taken_at: float) -> RenderedFrame:
    """Bring ``renderer`` up to ``request`` (re-uploading only a changed scene) and draw it; ``taken_at``:
    when the request was taken (``time.perf_counter()``)."""
    renderer.resize(request.width, request.height)
    renderer.set_background(request.background)
    if request.scene is not current_scene:
        renderer.set_scene(request.scene)
    image = renderer.render(request.viewmat, request.K, opaque=True)
    stamps = (("render wake-up", taken_at), ("sort", renderer.last_sorted_at), ("composite", time.perf_counter()))
    return RenderedFrame(image, request.serial, renderer.last_render_seconds, stamps,
                         getattr(renderer, "description", ""))


class InlineRenderer:
    """Renders each request immediately in the calling thread (tests, scripts). Not thread-safe."""

    def __init__(self, renderer) -> None:
        self.renderer = renderer
        self._frame: RenderedFrame | None = None
        self._scene: SplatScene | None = None

    def submit(self, request: RenderRequest) -> None:
        self._frame = _render_with(self.renderer, request, self._scene, time.perf_counter())
        self._scene = request.scene

    def take_frame(self) -> RenderedFrame | None:
        """The frame finished since the last call, if any."""
        frame, self._frame = self._frame, None
        return frame

    @property
    def error(self) -> str | None:
        return None

    def close(self) -> None:
        self.renderer.release()


class RenderThread:
    """A daemon thread that owns a ``SplatRenderer`` and its GL context for their whole life.

    ``submit`` and ``take_frame`` never block on rendering: requests and finished frames each sit in a
    latest-wins slot. A failure inside the thread (no GL, shader error) is kept in ``error`` as one line
    for the status bar, with the traceback printed once.
    """

    def __init__(self, make_renderer) -> None:
        """``make_renderer()`` builds the renderer; it is called inside the thread, which then owns it."""
        self._make_renderer = make_renderer
        self._cond = threading.Condition()
        self._request: RenderRequest | None = None
        self._frame: RenderedFrame | None = None
        self._closing = False
        self._busy = False  # a request was taken and is being drawn
        self._started = False  # the renderer exists
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="viewport-gl", daemon=True)
        self._thread.start()

    def submit(self, request: RenderRequest) -> None:
        with self._cond:
            self._request = request
            self._cond.notify()

    def take_frame(self) -> RenderedFrame | None:
        with self._cond:
            frame, self._frame = self._frame, None
            return frame

    def wait_frame(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a finished frame not yet taken; True if there is one."""
        with self._cond:
            return self._cond.wait_for(lambda: self._frame is not None or self.error is not None,
                                       max(0.0, timeout)) and self._frame is not None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the renderer is up, no request is pending and the last one finished; False on
        timeout or error."""
        with self._cond:
            self._cond.wait_for(lambda: self.error is not None or (
                self._started and self._request is None and not self._busy), timeout)
            return self.error is None and self._started and self._request is None and not self._busy

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            renderer = self._make_renderer()
        except Exception as err:  # noqa: BLE001  (reported in the UI instead of killing the app)
            traceback.print_exc()
            with self._cond:
                self.error = f"viewport renderer unavailable: {type(err).__name__}: {err}"
                self._cond.notify_all()
            return
        scene: SplatScene | None = None
        with self._cond:
            self._started = True
            self._cond.notify_all()
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._closing or self._request is not None)
                    if self._closing:
                        return
                    request, self._request = self._request, None
                    self._busy = True
                taken_at = time.perf_counter()
                try:
                    frame = _render_with(renderer, request, scene, taken_at)
                    scene = request.scene
                except Exception as err:  # noqa: BLE001
                    traceback.print_exc()
                    with self._cond:
                        self.error = f"viewport render failed: {type(err).__name__}: {err}"
                        self._busy = False
                        self._cond.notify_all()
                    return
                with self._cond:
                    self._frame = frame
                    self._busy = False
                    self._cond.notify_all()
        finally:
            renderer.release()
