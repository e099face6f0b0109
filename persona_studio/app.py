"""The studio window: splat viewport, side panels, status bar. ``run_studio()`` is the entry point.

Threads: Dear PyGui, every callback (manual callback management) and all UI state live in the main
thread; the viewport's OpenGL context lives in its own render thread (``RenderThread``); a training
worker publishes scenes with ``studio.viewport.set_scene(...)`` from any thread. Nothing in the UI waits
for rendering or training.
"""
from __future__ import annotations

import ctypes
import inspect
import os
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Callable

import dearpygui.dearpygui as dpg
import numpy as np

from core.config import load_preset
from core.errors import UserError
from core.io.images import save_png
from persona_studio.camera import VIEW_PRESETS, Camera
from persona_studio.panels.project import PHOTO_SUFFIXES, ProjectPanel
from persona_studio.panels.view import ViewPanel
from persona_studio.viewport.controller import ViewportController
from persona_studio.viewport.demo_figure import DEMO_LABEL, demo_figure
from persona_studio.viewport.gl_renderer import SplatRenderer
from persona_studio.viewport.render_thread import RenderThread
from persona_studio.viewport.widget import ViewportWidget

WINDOW_TITLE = "persona-studio"
SIDE_PANEL_WIDTH = 340   # pixels
STATUS_BAR_HEIGHT = 28   # pixels
DEFAULT_BACKGROUND = (1.0, 1.0, 1.0)  # white, as the paper's evaluation renders
DEMO_SPLATS = 20000
SCREENSHOT_TIMEOUT = 60.0  # seconds a headless run waits for the viewport's first image
# UI frames are capped (without vsync, e.g. under Xvfb, DPG would spin a core and re-upload the viewport
# texture hundreds of times a second, taking CPU from the render thread and training).
MAX_UI_FPS = 60.0
ERROR_COLOR = (255, 110, 100)
INFO_COLOR = (200, 200, 200)


class StatusBar:
    """One line at the bottom of the window; errors show here (in red) instead of crashing the app."""

    def __init__(self, parent: int | str):
        self._text = dpg.add_text("Ready", parent=parent, color=INFO_COLOR)
        self.last_error: str | None = None

    def info(self, message: str) -> None:
        dpg.configure_item(self._text, color=INFO_COLOR)
        dpg.set_value(self._text, message)

    def error(self, message: str) -> None:
        self.last_error = message
        dpg.configure_item(self._text, color=ERROR_COLOR)
        dpg.set_value(self._text, f"Error: {message}")
        print(f"error: {message}", file=sys.stderr)


def _call_with_needed_args(fn: Callable, args: tuple):
    """Call ``fn`` with as many of DPG's (sender, app_data, user_data) as it accepts."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return fn(*args)
    return fn(*args[:len(params)])


def install_file_drop(on_drop: Callable[[list[str]], None]):
    """Route OS file drops on DPG's window to ``on_drop(paths)`` (GLFW's drop callback; DPG has no API).

    Must run in the UI thread after ``show_viewport`` (DPG's GLFW window is then the current context).
    Returns the ctypes callback, which the caller must keep alive, or None where it is unavailable.
    """
    import dearpygui._dearpygui as dpg_native

    try:
        lib = ctypes.CDLL(dpg_native.__file__)
        get_window, set_drop = lib.glfwGetCurrentContext, lib.glfwSetDropCallback
    except (OSError, AttributeError):
        return None
    get_window.restype = ctypes.c_void_p
    window = get_window()
    if not window:
        return None
    drop_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p))
    set_drop.restype = ctypes.c_void_p
    set_drop.argtypes = [ctypes.c_void_p, drop_type]
    callback = drop_type(lambda _window, count, paths: on_drop([os.fsdecode(paths[i]) for i in range(count)]))
    set_drop(ctypes.c_void_p(window), callback)
    return callback


def check_display() -> None:
    """Raise a UserError where a window cannot open (Linux without a reachable X or Wayland display),
    instead of letting GLFW abort the process."""
    if not sys.platform.startswith("linux"):
        return
    hint = "on a headless machine start a virtual one: `Xvfb :99 &` then `DISPLAY=:99 persona-studio ...`"
    x_display = os.environ.get("DISPLAY")
    if not x_display and not os.environ.get("WAYLAND_DISPLAY"):
        raise UserError(f"no display to open the studio window on ($DISPLAY is not set); {hint}")
    if x_display:
        try:
            xlib = ctypes.CDLL("libX11.so.6")
        except OSError:
            return  # no Xlib to ask; GLFW will try
        xlib.XOpenDisplay.restype = ctypes.c_void_p
        connection = xlib.XOpenDisplay(x_display.encode())
        if not connection:
            raise UserError(f"cannot connect to the X display {x_display!r}; {hint}")
        xlib.XCloseDisplay(ctypes.c_void_p(connection))


class Studio:
    """The studio application. Build it, then ``run()``; integrations use ``viewport.set_scene(...)``."""

    def __init__(self, photo: str | Path | None = None, preset: str = "preview", overrides: list[str] | None = None,
                 view: str = "front", width: int = 1280, height: int = 800, output_dir: str | Path = "persona-output",
                 demo_splats: int = DEMO_SPLATS):
        # User errors are reported before any window opens or thread starts.
        if view not in VIEW_PRESETS:
            raise UserError(f"unknown view '{view}'; choose one of: {', '.join(VIEW_PRESETS)}")
        self.config = load_preset(preset, overrides)
        check_display()
        self.photo = photo
        self.output_dir = Path(output_dir)
        self.window_size = (int(width), int(height))
        camera = Camera()
        camera.view_preset(view)
        self.render_thread = RenderThread(lambda: SplatRenderer(background=DEFAULT_BACKGROUND))
        self.viewport = ViewportController(self.render_thread, camera, DEFAULT_BACKGROUND)
        self.demo_splats = demo_splats
        self.panels = [ProjectPanel(self), ViewPanel(self)]
        self.status: StatusBar | None = None
        self.widget: ViewportWidget | None = None
        self._dropped_paths: list[str] = []
        self._drop_callback = None
        self._overlay = None
        self._window_shot: tuple[Path, bool] | None = None  # (path, saved) of a pending window screenshot
        self._last_step = 0.0  # perf_counter() at the start of the last UI frame

    @property
    def project(self) -> ProjectPanel:
        return self.panels[0]

    # -- building ---------------------------------------------------------------------------------------
    def build(self) -> None:
        """Create the DPG context, window and panels, and show the window."""
        dpg.create_context()
        # Callbacks run in our loop (the main thread), so they never race the per-frame update.
        dpg.configure_app(manual_callback_management=True)
        dpg.create_viewport(title=WINDOW_TITLE, width=self.window_size[0], height=self.window_size[1])
        with dpg.theme() as no_padding:
            with dpg.theme_component(dpg.mvAll):
                dpg.add_theme_style(dpg.mvStyleVar_WindowPadding, 0, 0, category=dpg.mvThemeCat_Core)
        with dpg.window(tag="studio-main") as main:
            with dpg.group(horizontal=True):
                side = dpg.add_child_window(width=SIDE_PANEL_WIDTH, height=-STATUS_BAR_HEIGHT)
                view_area = dpg.add_child_window(width=-1, height=-STATUS_BAR_HEIGHT, no_scrollbar=True, border=False)
                dpg.bind_item_theme(view_area, no_padding)
            self.status = StatusBar(main)
        self.widget = ViewportWidget(self.viewport, view_area)
        self._overlay = dpg.add_text("", parent=view_area, pos=(10, 8), color=(200, 60, 40))
        for panel in self.panels:
            panel.build(side)
        dpg.set_primary_window(main, True)
        dpg.setup_dearpygui()
        dpg.show_viewport()
        self._drop_callback = install_file_drop(self.queue_dropped_files)
        demo = demo_figure(self.demo_splats)
        self.viewport.set_scene(demo.means, demo.colors, demo.scales, label=DEMO_LABEL)
        if self.photo is not None:
            self._run_guarded(self.project.set_photo, self.photo)

    # -- callbacks and errors ---------------------------------------------------------------------------
    def guard(self, fn: Callable) -> Callable:
        """Wrap a DPG callback so a user error (or a bug) lands in the status bar instead of the console."""
        def callback(sender, app_data, user_data):
            self._run_guarded(_call_with_needed_args, fn, (sender, app_data, user_data))
        return callback

    def _run_guarded(self, fn: Callable, *args) -> None:
        try:
            fn(*args)
        except UserError as err:
            self.status.error(str(err))
        except Exception as err:  # noqa: BLE001  (a bug: keep the app alive, show it, log the traceback)
            traceback.print_exc()
            self.status.error(f"internal error: {type(err).__name__}: {err} (details in the terminal)")

    def _run_callbacks(self) -> None:
        for job in dpg.get_callback_queue() or []:
            if job[0] is not None:
                self._run_guarded(_call_with_needed_args, job[0], tuple(job[1:4]))

    # -- actions ----------------------------------------------------------------------------------------
    def queue_dropped_files(self, paths: list[str]) -> None:
        """Hand files to ``on_files_dropped`` at the start of the next UI frame (safe from any thread)."""
        self._dropped_paths.extend(paths)  # one list.extend: atomic under the GIL

    def on_files_dropped(self, paths: list[str]) -> None:
        """Files dropped on the window (or passed in by a script): a photo becomes the project's photo."""
        for path in map(Path, paths):
            if path.suffix.lower() in PHOTO_SUFFIXES:
                self.project.set_photo(path)
                self.status.info(f"Photo: {path}")
            else:
                raise UserError(f"cannot open this here; drop a photo ({', '.join(PHOTO_SUFFIXES)})", path)

    def save_viewport_screenshot(self, path: str | Path | None = None) -> Path:
        """Save the viewport image as PNG (default: <output folder>/screenshots/viewport-<time>.png)."""
        if path is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            path = self.project.output_dir / "screenshots" / f"viewport-{stamp}.png"
        saved = self.widget.save_png(path)
        self.status.info(f"Saved {saved}")
        return saved

    def request_window_screenshot(self, path: str | Path) -> None:
        """Save the whole window as PNG after the next rendered frame (``window_screenshot_done`` tells when)."""
        target = Path(path)
        self._window_shot = (target, False)

        def save(sender, buffer):
            image = np.frombuffer(buffer, dtype=np.float32).reshape(buffer.get_height(), buffer.get_width(), 4)
            save_png(target, image[..., :3])
            self._window_shot = (target, True)

        dpg.output_frame_buffer(callback=save)

    @property
    def window_screenshot_done(self) -> bool:
        return self._window_shot is not None and self._window_shot[1]

    # -- the loop ---------------------------------------------------------------------------------------
    def step(self) -> None:
        """One UI frame: callbacks, dropped files, viewport update, panel read-outs, draw (at most
        ``MAX_UI_FPS`` a second)."""
        wait = self._last_step + 1.0 / MAX_UI_FPS - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        self._last_step = time.perf_counter()
        self._run_callbacks()
        if self._dropped_paths:
            count = len(self._dropped_paths)
            paths, self._dropped_paths[:count] = self._dropped_paths[:count], []
            self._run_guarded(self.on_files_dropped, paths)
        self._run_guarded(self.widget.update)
        if self.render_thread.error and self.status.last_error != self.render_thread.error:
            self.status.error(self.render_thread.error)
        scene = self.viewport.scene
        dpg.set_value(self._overlay, "DEMO PLACEHOLDER - no avatar loaded" if scene and scene.label == DEMO_LABEL else "")
        for panel in self.panels:
            self._run_guarded(panel.refresh)
        dpg.render_dearpygui_frame()

    def run(self, frames: int = 0, screenshot: str | Path | None = None) -> int:
        """Run until the window closes, or for ``frames`` UI frames (headless scripts and tests).

        With ``screenshot``, after those frames it keeps stepping until the viewport shows its latest image
        (at most ``SCREENSHOT_TIMEOUT`` seconds), then saves the whole window as a PNG. Returns 0, or 1
        if the viewport could not render.
        """
        count = 0
        while dpg.is_dearpygui_running() and (frames <= 0 or count < frames):
            self.step()
            count += 1
        if screenshot is None:
            return 0 if self.render_thread.error is None else 1
        deadline = time.monotonic() + SCREENSHOT_TIMEOUT
        while not self.viewport.up_to_date and self.render_thread.error is None and time.monotonic() < deadline:
            self.step()
        if not self.viewport.up_to_date and self.render_thread.error is None:
            self.status.error(f"the viewport did not finish its image within {SCREENSHOT_TIMEOUT:.0f} s")
        for _ in range(2):  # the new texture is drawn on the next frame
            self.step()
        self.request_window_screenshot(screenshot)
        for _ in range(100):
            self.step()
            if self.window_screenshot_done:
                break
        if not self.window_screenshot_done:
            self.status.error(f"could not save the window screenshot to {screenshot}")
            return 1
        return 0 if self.render_thread.error is None and self.viewport.up_to_date else 1

    def close(self) -> None:
        self.render_thread.close()
        dpg.destroy_context()


def run_studio(photo: str | None = None, frames: int = 0, screenshot: str | None = None, preset: str = "preview",
               overrides: list[str] | None = None, view: str = "front", width: int = 1280, height: int = 800) -> int:
    """Open the studio; with ``frames`` > 0 run that many UI frames (then save ``screenshot``) and return.

    Returns the process exit status (0 = fine, 1 = the viewport could not render or the screenshot
    failed). User errors (bad preset or override, bad view name, no display) raise UserError before any
    window opens; once it is open, errors go to the status bar.
    """
    studio = Studio(photo=photo, preset=preset, overrides=overrides, view=view, width=width, height=height)
    studio.build()
    try:
        return studio.run(frames=frames, screenshot=screenshot)
    finally:
        studio.close()
