"""The studio window: splat viewport, side panels, status bar. ``run_studio()`` is the entry point.

Threads: Dear PyGui, every callback (manual callback management) and all UI state live in the main
thread; the viewport's OpenGL context lives in its own render thread (``RenderThread``); a training
worker publishes scenes with ``studio.viewport.set_scene(...)`` from any thread. Nothing in the UI waits
for rendering or training.
"""
from __future__ import annotations

import copy
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Callable

import dearpygui.dearpygui as dpg
import numpy as np
import torch

from core.config import LossConfig, load_preset
from core.errors import UserError
from core.reconstruct import load_imported_frames
from persona_studio.bundles import BundleLoader
from persona_studio.camera import VIEW_PRESETS, Camera
from persona_studio.exports import ExportSource, manifest_for
from persona_studio.latency import ScreenLatency
from persona_studio.panels.export import ExportPanel
from persona_studio.panels.inspector import InspectorPanel
from persona_studio.panels.pose import PosePanel
from persona_studio.panels.project import ProjectPanel
from persona_studio.panels.status import ErrorDialog, StatusBar
from persona_studio.panels.training import TrainingPanel
from persona_studio.panels.view import ViewPanel
from persona_studio.panels.weights import WeightsPanel
from persona_studio.posing import AvatarPoser, Pose, fit_length
from persona_studio.recent import RecentProjects
from persona_studio.session import ReconstructionSession, SessionAvatar, default_prepare
from persona_studio.viewport.controller import ViewportController
from persona_studio.viewport.demo_figure import DEMO_LABEL, demo_figure
from persona_studio.viewport.gl_renderer import SplatRenderer
from persona_studio.viewport.render_thread import RenderThread
from persona_studio.viewport.widget import ViewportWidget
from persona_studio.window import (GLFW_KEYS, GLFW_MOD_CONTROL, GLFW_MOD_SHIFT, call_with_needed_args, check_display,
                                   install_file_drop, install_key_listener, save_window_png)

WINDOW_TITLE = "persona-studio"
SIDE_PANEL_WIDTH = 340   # pixels
STATUS_BAR_HEIGHT = 28   # pixels
DEFAULT_BACKGROUND = (1.0, 1.0, 1.0)  # white, as the paper's evaluation renders
DEMO_SPLATS = 20000
SCREENSHOT_TIMEOUT = 60.0  # seconds a headless run waits for the viewport's first image
TRAIN_TIMEOUT = 900.0  # seconds a headless run waits for ``train_steps``
CLOSE_TIMEOUT = 60.0  # seconds closing waits for a stopped run to save its bundle
# UI frames are capped (without vsync, e.g. under Xvfb, DPG would spin a core and re-upload the viewport
# texture hundreds of times a second, taking CPU from the render thread and training).
MAX_UI_FPS = 60.0
# Without input for IDLE_AFTER seconds the UI draws at most IDLE_UI_FPS frames a second: under a software
# GL (Xvfb, a VM) a 1280 x 800 frame costs tens of ms of CPU, which a training run can use better.
IDLE_UI_FPS = 5.0
IDLE_AFTER = 2.0  # seconds
# While a pose the user asked for is on its way to the screen, the UI waits for its frame instead of
# redrawing the old one, down to MIN_UI_FPS: on a software GL each UI frame costs tens of ms of CPU that
# posing and compositing the new pose need more.
MIN_UI_FPS = 10.0


_TEXT_FIELDS = ("mvAppItemType::mvInputText", "mvAppItemType::mvInputInt", "mvAppItemType::mvInputFloat")


def _take_all(queue: list) -> list:
    """Empty ``queue`` (filled by other threads' single appends) and return what it held, oldest first."""
    count = len(queue)
    taken, queue[:count] = queue[:count], []
    return taken


def typing_in_a_field() -> bool:
    """Whether a text or number field has the keyboard (its keys are not shortcuts then)."""
    return any(dpg.get_item_type(item) in _TEXT_FIELDS and dpg.is_item_active(item) for item in dpg.get_all_items())


class Studio:
    """The studio application. Build it, then ``run()``; integrations use ``viewport.set_scene(...)``.

    Workers: a ``ReconstructionSession`` (prep + training), an ``AvatarPoser`` (posing for the
    viewport), bundle loading and exports each run in their own thread; ``step()`` polls their
    latest-wins slots once per UI frame.
    """

    def __init__(self, photo: str | Path | None = None, preset: str = "preview", overrides: list[str] | None = None,
                 view: str = "front", width: int = 1280, height: int = 800, output_dir: str | Path = "persona-output",
                 demo_splats: int = DEMO_SPLATS, recent_path: str | Path | None = None,
                 avatar: str | Path | None = None, imported_frames: list[str | Path] = (), person: int = 0):
        # User errors are reported before any window opens or thread starts.
        if view not in VIEW_PRESETS:
            raise UserError(f"unknown view '{view}'; choose one of: {', '.join(VIEW_PRESETS)}")
        self.overrides = list(overrides or [])
        # Every worker runs many small torch ops beside numba's and the GL renderer's threads: one torch
        # thread each is several times faster on the 2-core machines this runs on (see core.threads).
        torch.set_num_threads(1)
        self.config = load_preset(preset, self.overrides)
        check_display()
        self.photo = photo
        self.avatar_path = avatar  # a bundle folder or .persona file to open at start
        self.output_dir = Path(output_dir)
        self.window_size = (int(width), int(height))
        camera = Camera()
        camera.view_preset(view)
        self.render_thread = RenderThread(lambda: SplatRenderer(background=DEFAULT_BACKGROUND))
        self.viewport = ViewportController(self.render_thread, camera, DEFAULT_BACKGROUND, render_on_publish=True)
        self.demo_splats = demo_splats
        self.recent = RecentProjects(recent_path)
        self.session: ReconstructionSession | None = None
        self.prepare = default_prepare  # photo prep of new runs (benchmarks may put a synthetic subject here)
        self._retired: list[ReconstructionSession] = []  # replaced runs, saving their bundles
        self.poser = AvatarPoser(self._show_posed, preview_shown=self._scene_on_screen)
        self.pose = Pose.rest()
        self.display: SessionAvatar | None = None  # the avatar in the viewport
        self.display_source = ""  # "session" (the run's avatar, updated by snapshots) or "bundle"
        self.display_manifest: dict | None = None  # a loaded bundle's manifest
        self.latest_snapshot = None  # the run's newest TrainingSnapshot
        self.latency = ScreenLatency()
        self._pose_in_flight = False  # see pose_in_flight()
        self._seen = {"avatar": 0, "snapshot": 0}
        self._reported_state: tuple | None = None
        self._reported_warnings: tuple | None = None
        self._reported_poser_error: str | None = None
        self.bundles = BundleLoader(self.body_model)
        self._body = None
        self._body_lock = threading.Lock()
        self.project = ProjectPanel(self)
        for path in imported_frames:
            self.project.add_imported_frames(path)
        self.project.initial_person = person
        self.view_panel = ViewPanel(self)
        self.training = TrainingPanel(self)
        self.weights = WeightsPanel(self)
        self.pose_panel = PosePanel(self)
        self.export_panel = ExportPanel(self)
        self.inspector = InspectorPanel(self)
        self.tabs = {"Project": [self.project, self.view_panel], "Train": [self.training, self.weights],
                     "Pose": [self.pose_panel], "Export": [self.export_panel]}
        self.panels = [panel for panels in self.tabs.values() for panel in panels] + [self.inspector]
        self._tab_bar = None
        self._tab_ids: dict[str, int] = {}
        self.error_dialog = ErrorDialog()
        self.status: StatusBar | None = None
        self.widget: ViewportWidget | None = None
        self._dropped_paths: list[str] = []
        self._pressed_keys: list[tuple[int, int]] = []  # (GLFW key, modifiers) since the last UI frame
        self._drop_callback = None
        self._overlay = None
        self._window_shot: tuple[Path, bool] | None = None  # (path, saved) of a pending window screenshot
        self._last_step = 0.0  # perf_counter() at the start of the last UI frame
        self._last_input = time.perf_counter()  # the user's last mouse or keyboard event
        self.throttle_when_idle = True

    # -- building ---------------------------------------------------------------------------------------
    def build(self) -> None:
        """Create the DPG context, window and panels, and show the window."""
        dpg.create_context()
        # Callbacks run in our loop (the main thread), so they never race the per-frame update.
        dpg.configure_app(manual_callback_management=True)
        dpg.create_viewport(title=WINDOW_TITLE, width=self.window_size[0], height=self.window_size[1])
        # On a software GL every layer ImGui fills costs CPU per pixel, so the viewport's child window
        # draws no background under the opaque viewport image (~7 ms less per UI frame at 1280 x 800 here).
        with dpg.theme() as viewport_area:
            with dpg.theme_component(dpg.mvAll):
                dpg.add_theme_style(dpg.mvStyleVar_WindowPadding, 0, 0, category=dpg.mvThemeCat_Core)
                dpg.add_theme_color(dpg.mvThemeCol_ChildBg, (0, 0, 0, 0), category=dpg.mvThemeCat_Core)
        with dpg.window(tag="studio-main") as main:
            with dpg.group(horizontal=True):
                side = dpg.add_child_window(width=SIDE_PANEL_WIDTH, height=-STATUS_BAR_HEIGHT)
                view_area = dpg.add_child_window(width=-1, height=-STATUS_BAR_HEIGHT, no_scrollbar=True, border=False)
                dpg.bind_item_theme(view_area, viewport_area)
            self.status = StatusBar(main, self.error_dialog)
        self.widget = ViewportWidget(self.viewport, view_area)
        self._overlay = dpg.add_text("", parent=view_area, pos=(10, 8), color=(200, 60, 40))
        with dpg.tab_bar(parent=side) as self._tab_bar:
            for name, panels in self.tabs.items():
                with dpg.tab(label=name) as tab:
                    self._tab_ids[name] = tab
                    for panel in panels:
                        panel.build(tab)
        self.inspector.build(main)
        self.error_dialog.build()
        dpg.set_primary_window(main, True)
        dpg.setup_dearpygui()
        dpg.show_viewport()
        self._drop_callback = install_file_drop(self.queue_dropped_files)
        self._key_callback = install_key_listener(self.queue_key)
        with dpg.handler_registry():
            for add_handler in (dpg.add_mouse_move_handler, dpg.add_mouse_click_handler, dpg.add_mouse_wheel_handler,
                                dpg.add_key_press_handler):
                add_handler(callback=self.note_input)
        demo = demo_figure(self.demo_splats)
        self.viewport.set_scene(demo.means, demo.colors, demo.scales, label=DEMO_LABEL)
        if self.avatar_path is not None:
            self._run_guarded(self.open_bundle, self.avatar_path)
        if self.photo is not None:
            self._run_guarded(self.open_photo, self.photo)

    def queue_key(self, key: int, mods: int) -> None:
        """A key press (GLFW key code and modifier bits, ``install_key_listener``), for ``on_shortcut`` at the start
        of the next UI frame."""
        self._pressed_keys.append((key, mods))  # one list.append: atomic under the GIL

    def on_shortcut(self, key: int, mods: int) -> bool:
        """Keyboard shortcuts (none while a text field has the keyboard): Ctrl+Z undo and Ctrl+Y / Ctrl+Shift+Z
        redo on the Pose tab, Space plays or pauses the motion, F frames the scene, Home resets the view.
        ``key`` and ``mods`` are GLFW's; returns whether the press did something."""
        if typing_in_a_field():
            return False
        ctrl, shift = bool(mods & GLFW_MOD_CONTROL), bool(mods & GLFW_MOD_SHIFT)
        if ctrl and (key == GLFW_KEYS["y"] or (key == GLFW_KEYS["z"] and shift)):
            self.pose_panel.redo()
        elif ctrl and key == GLFW_KEYS["z"]:
            self.pose_panel.undo()
        elif ctrl:
            return False
        elif key == GLFW_KEYS["space"] and self.pose_panel.motion is not None:
            self.pose_panel.toggle_play()
        elif key == GLFW_KEYS["f"]:
            self.viewport.frame_scene()
        elif key == GLFW_KEYS["home"]:
            self.view_panel.reset_view()
        else:
            return False
        return True

    def note_input(self) -> None:
        """A mouse or keyboard event: draw at full rate for the next ``IDLE_AFTER`` seconds."""
        self._last_input = time.perf_counter()

    def frame_interval(self) -> float:
        """Seconds between UI frames now: ``1 / MAX_UI_FPS`` while the user acts or something moves,
        ``1 / IDLE_UI_FPS`` when nobody has touched the window for ``IDLE_AFTER`` seconds."""
        busy = (time.perf_counter() - self._last_input < IDLE_AFTER or self.pose_panel.playing
                or self.viewport.render_scale() != 1.0 or not self.throttle_when_idle)
        return 1.0 / (MAX_UI_FPS if busy else IDLE_UI_FPS)

    def show_tab(self, name: str) -> None:
        """Bring side-panel tab ``name`` (Project, Train, Pose, Export) to the front."""
        dpg.set_value(self._tab_bar, self._tab_ids[name])

    # -- callbacks and errors ---------------------------------------------------------------------------
    def guard(self, fn: Callable) -> Callable:
        """Wrap a DPG callback so a user error (or a bug) lands in the status bar instead of the console."""
        def callback(sender, app_data, user_data):
            self.note_input()
            self._run_guarded(call_with_needed_args, fn, (sender, app_data, user_data))
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
                self._run_guarded(call_with_needed_args, job[0], tuple(job[1:4]))

    # -- opening things -----------------------------------------------------------------------------------
    def queue_dropped_files(self, paths: list[str]) -> None:
        """Hand files to ``ProjectPanel.open_dropped`` at the start of the next UI frame (safe from any thread)."""
        self._dropped_paths.extend(paths)  # one list.extend: atomic under the GIL

    @property
    def imported_frames(self) -> list[Path]:
        """``frames import`` files that new runs train on (the Project panel keeps the list)."""
        return self.project.imported_frames

    def open_photo(self, path: str | Path) -> None:
        """Show ``path`` as the project's photo and reconstruct it. Raises UserError for a bad file."""
        path = Path(path)
        self.project.set_photo(path)
        self.start_reconstruction(path)

    def start_reconstruction(self, photo: Path) -> None:
        """Start a run for ``photo`` into ``<output folder>/<photo name>``; a running one is stopped (it
        still saves its bundle) and its avatar leaves the viewport."""
        previous = self._retire_session()
        out_dir = self.project.output_dir / photo.stem
        if previous is not None and previous.out_dir != out_dir:
            previous = None  # another folder: no need to wait for its bundle
        imported = load_imported_frames(self.project.imported_frames, self.config.frames.resolution)
        supplied = self.project.supplied_maps(photo)
        self.session = ReconstructionSession(photo, out_dir, self.config, prepare=self.prepare, body=self._body,
                                             previous=previous, imported=imported, person=self.project.person,
                                             supplied=supplied)
        self._seen["avatar"] = self._seen["snapshot"] = 0
        self.latest_snapshot = None
        self.display_source = "session"
        self.session.start()
        self.recent.add("photo", photo, out_dir)
        said = supplied.described()
        self.status.info(f"Reconstructing {photo.name} into {out_dir}" + (f" with your {said}" if said else ""))

    def restart_reconstruction(self) -> None:
        """The Start button: a new run of the current photo with the current preset and weights."""
        if self.project.photo is None:
            raise UserError("open a photo first (drop it on the window, or Open photo... on the Project tab)")
        self.start_reconstruction(self.project.photo)

    def stop_training(self) -> None:
        if self.session is None or not self.session.status().active:
            raise UserError("no training is running")
        self.session.stop()
        self.status.info("Stopping: the avatar so far is being saved")

    def _retire_session(self) -> ReconstructionSession | None:
        """Stop the current run (it still saves its bundle); returns it."""
        retired, self.session = self.session, None
        if retired is not None:
            retired.stop()
            self._retired.append(retired)
        return retired

    def open_bundle(self, folder: str | Path) -> None:
        """Load an avatar bundle folder (or a .persona file) in the background and show it; a UserError
        at once if it is neither."""
        folder = self.bundles.start(folder)
        self.status.info(f"Opening {folder} ...")

    def body_model(self):
        """The body model (loaded once, shared read-only by every worker)."""
        from core.body import BodyModel

        with self._body_lock:
            if self._body is None:
                self._body = BodyModel.load(self.config.body.model or None)
            return self._body

    # -- settings -----------------------------------------------------------------------------------------
    def set_preset(self, name: str) -> None:
        """Use preset ``name`` (with the command line's overrides) for the next run."""
        self.config = load_preset(name, self.overrides)
        self.weights.sync()
        self.status.info(f"Preset {self.config.name}: used by the next run (Start)")

    def set_loss_weights(self, loss: LossConfig) -> None:
        """New loss weights for the running trainer (next step) and for later runs."""
        self.config.loss = copy.deepcopy(loss)
        if self.session is not None and self.session.status().active:
            self.session.set_loss_weights(loss)

    # -- the avatar in the viewport -----------------------------------------------------------------------
    def subject_expression(self) -> np.ndarray:
        """The displayed subject's fitted expression, sized for its body model (empty without an avatar)."""
        if self.display is None:
            return np.zeros(0, np.float32)
        return fit_length(self.display.subject_params.get("expression"), self.display.body.num_expression)

    def show_avatar(self, shown: SessionAvatar, source: str, manifest: dict | None = None,
                    frame_camera: bool = True) -> None:
        """Put ``shown`` in the viewport in the current pose (with its own expression)."""
        self.display, self.display_source, self.display_manifest = shown, source, manifest
        if self._body is None:
            self._body = shown.body
        self.pose = Pose(self.pose.values, self.subject_expression())
        self.pose_panel.configure_for(shown.body, shown.subject_params)
        betas = fit_length(shown.subject_params.get("betas"), shown.body.num_betas)
        self.poser.set_avatar(shown.avatar, shown.body, betas, shown.label, frame_camera)
        self.poser.set_pose(self.pose, interactive=False)

    def set_pose(self, pose: Pose, interactive: bool = True) -> None:
        """Show the avatar in ``pose`` (the posing thread does the work; this returns at once)."""
        self.note_input()
        self.pose = pose
        self.poser.set_pose(pose, interactive)
        self._pose_in_flight = True

    def pose_in_flight(self) -> bool:
        """Whether the newest pose asked for is not on screen yet (posing, rendering or not yet drawn)."""
        if self._pose_in_flight:
            self._pose_in_flight = self.render_thread.error is None and not (
                self.poser.idle and self.poser.published.empty() and not self.latency.waiting)
        return self._pose_in_flight

    def _show_posed(self, posed, label: str, frame_camera: bool, moving: bool) -> int:
        """The poser's output -> the viewport (called in the posing thread)."""
        return self.viewport.set_scene(posed.means, posed.colors, posed.scales[:, 0], label=label,
                                       frame_camera=frame_camera, moving=moving)

    def _scene_on_screen(self, version: int) -> bool:
        """Whether the viewport shows scene ``version`` or a newer one (asked by the posing thread; one
        integer the UI thread writes)."""
        return self.viewport.shown_scene_version >= version

    def export_name(self) -> str:
        """A file-name stem for exports of the displayed avatar."""
        if self.display is None:
            return "avatar"
        if self.display_source == "session" and self.session is not None:
            return self.session.photo.stem
        return self.display.label

    def export_source(self) -> Callable[[], ExportSource]:
        """A function (run by the export thread) that copies the displayed avatar at its newest parameters."""
        if self.display is None:
            raise UserError("nothing to export yet: open a photo or an avatar bundle first")
        shown = self.display
        state = self.latest_snapshot.avatar_state if self.display_source == "session" and self.latest_snapshot else None
        manifest = self.display_manifest or manifest_for(shown.subject_params)
        name = self.export_name()

        def make() -> ExportSource:
            avatar = copy.deepcopy(shown.avatar)  # the poser keeps using its own
            if state is not None:
                avatar.load_state_dict(state)
            return ExportSource(avatar, shown.body, manifest, name)

        return make

    # -- polling the workers ----------------------------------------------------------------------------
    def _poll_workers(self) -> None:
        session = self.session
        if session is not None:
            if self.display_source == "session":
                self._poll_session_avatar(session)
            self._report_session(session)
        for loaded in self.bundles.take():
            if loaded.error is None:
                self.show_avatar(loaded.shown, "bundle", loaded.manifest)
                self.recent.add("bundle", loaded.path)
                self.status.info(f"Avatar {loaded.path} ({loaded.shown.avatar.num_gaussians:,} Gaussians)")
            else:
                self.status.error(loaded.error)
        if self.poser.error and self.poser.error != self._reported_poser_error:
            self._reported_poser_error = self.poser.error
            self.status.error(self.poser.error)
        while not self.poser.published.empty():
            self.latency.watch(self.poser.published.get_nowait())

    def _poll_session_avatar(self, session: ReconstructionSession) -> None:
        got = session.avatar.poll(self._seen["avatar"])
        if got is not None:
            self._seen["avatar"], shown = got
            self.show_avatar(shown, "session", frame_camera=shown.frame_camera)
        got = session.snapshots.poll(self._seen["snapshot"])
        if got is not None:
            self._seen["snapshot"], snapshot = got
            self.latest_snapshot = snapshot
            label = f"{session.photo.stem}: training step {snapshot.step}/{snapshot.total}"
            self.poser.set_state(snapshot.avatar_state, label)

    def _report_session(self, session: ReconstructionSession) -> None:
        """Status-bar lines when photo prep warns, and when a run finishes, stops or fails (once each)."""
        status = session.status()
        warned = (id(session), status.warnings)
        if status.warnings and warned != self._reported_warnings:
            self._reported_warnings = warned
            self.status.warn("; ".join(status.warnings))
        key = (id(session), status.state)
        if key == self._reported_state or status.active:
            return
        self._reported_state = key
        if status.state == "failed":
            self.status.error(status.error)
        elif status.bundle is not None:
            self.recent.add("bundle", status.bundle)
            psnr = f" (input-view PSNR {status.photo_psnr:.2f} dB)" if status.photo_psnr is not None else ""
            self.status.info(f"Avatar {'saved' if status.state == 'finished' else 'so far saved'} to "
                             f"{status.bundle}{psnr}")

    # -- screenshots ------------------------------------------------------------------------------------
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
        self._window_shot = (Path(path), False)
        save_window_png(path, lambda saved: setattr(self, "_window_shot", (saved, True)))

    @property
    def window_screenshot_done(self) -> bool:
        return self._window_shot is not None and self._window_shot[1]

    # -- the loop ---------------------------------------------------------------------------------------
    def step(self) -> None:
        """One UI frame: callbacks, dropped files, workers' results, viewport update, panel read-outs,
        draw (at most ``MAX_UI_FPS`` a second, ``IDLE_UI_FPS`` when nobody uses the window)."""
        wait = self._last_step + self.frame_interval() - time.perf_counter()
        if self.pose_in_flight():  # draw when its frame is ready, not before (unless that takes too long)
            self.render_thread.wait_frame(max(wait, self._last_step + 1.0 / MIN_UI_FPS - time.perf_counter()))
        elif wait > 0:
            time.sleep(wait)
        self._last_step = time.perf_counter()
        self._run_callbacks()
        paths = _take_all(self._dropped_paths)
        if paths:
            self._run_guarded(self.project.open_dropped, paths)
        for key, mods in _take_all(self._pressed_keys):
            self._run_guarded(self.on_shortcut, key, mods)
        self._run_guarded(self._poll_workers)
        self._run_guarded(self.widget.update)
        if self.render_thread.error and self.status.last_error != self.render_thread.error:
            self.status.error(self.render_thread.error)
        scene = self.viewport.scene
        dpg.set_value(self._overlay, "DEMO PLACEHOLDER - no avatar loaded" if scene and scene.label == DEMO_LABEL else "")
        for panel in self.panels:
            self._run_guarded(panel.refresh)
        self.error_dialog.show_pending()
        dpg.render_dearpygui_frame()
        # After the draw: a pose change counts as on screen once the frame holding it has been drawn.
        self.latency.update(self.viewport.shown_scene_version, frame_stamps=self.widget.frame_stamps,
                            full_resolution=self.viewport.shown_full_resolution)

    def step_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Run UI frames until ``done()`` (True) or ``timeout`` seconds pass (False) or the window closes."""
        deadline = time.monotonic() + timeout
        while dpg.is_dearpygui_running() and time.monotonic() < deadline:
            if done():
                return True
            self.step()
        return done()

    def wait_for_training(self, steps: int, timeout: float = TRAIN_TIMEOUT) -> bool:
        """Run the UI until the run has done ``steps`` training steps (all of them: until its bundle is
        saved) or has ended; False on timeout, on failure or without a run."""
        def reached() -> bool:
            if self.session is None:
                return True
            status = self.session.status()
            return not status.active or (status.stage == "train" and steps <= status.step < status.total)

        ok = self.step_until(reached, timeout)
        if not ok:
            self.status.error(f"training did not reach {steps} steps within {timeout:.0f} s", dialog=False)
        return ok and self.session is not None and self.session.status().state != "failed"

    def settle(self, timeout: float = SCREENSHOT_TIMEOUT) -> bool:
        """Run UI frames until the newest avatar pose is on screen at full resolution."""
        return self.step_until(lambda: not self.bundles.loading and self.poser.idle and self.poser.published.empty()
                               and self.viewport.up_to_date and self.render_thread.error is None, timeout)

    def run(self, frames: int = 0, screenshot: str | Path | None = None, train_steps: int = 0) -> int:
        """Run until the window closes, or for ``frames`` UI frames (headless scripts and tests).

        ``train_steps`` > 0 first waits until the run (``--photo``) has trained that many steps (or ended).
        With ``screenshot``, after those frames it keeps stepping until the viewport shows its latest image
        (at most ``SCREENSHOT_TIMEOUT`` seconds), then saves the whole window as a PNG. Returns 0, or 1
        if the viewport could not render, the screenshot failed or the run failed.
        """
        trained = self.wait_for_training(train_steps) if train_steps > 0 else True
        count = 0
        while dpg.is_dearpygui_running() and (frames <= 0 or count < frames):
            self.step()
            count += 1
        if screenshot is None:
            return 0 if self.render_thread.error is None and trained else 1
        if not self.settle() and self.render_thread.error is None:
            self.status.error(f"the viewport did not finish its image within {SCREENSHOT_TIMEOUT:.0f} s", dialog=False)
        for _ in range(2):  # the new texture is drawn on the next frame
            self.step()
        self.request_window_screenshot(screenshot)
        for _ in range(100):
            self.step()
            if self.window_screenshot_done:
                break
        if not self.window_screenshot_done:
            self.status.error(f"could not save the window screenshot to {screenshot}", dialog=False)
            return 1
        return 0 if self.render_thread.error is None and self.viewport.up_to_date and trained else 1

    def close(self) -> None:
        """Stop the workers (a run saves what it has), then the renderer and the window."""
        self.poser.close()
        for session in [*self._retired, self.session]:
            if session is not None:
                session.close(CLOSE_TIMEOUT)
        self.render_thread.close()
        dpg.destroy_context()


def run_studio(photo: str | None = None, frames: int = 0, screenshot: str | None = None, preset: str = "preview",
               overrides: list[str] | None = None, view: str = "front", width: int = 1280, height: int = 800,
               train_steps: int = 0, output_dir: str | Path = "persona-output", avatar: str | None = None,
               imported_frames: list[str] = (), person: int = 0) -> int:
    """Open the studio; with ``frames`` > 0 run that many UI frames (then save ``screenshot``) and return.

    ``photo`` starts its reconstruction at once; ``train_steps`` > 0 (headless, with ``photo``) first waits
    until that many training steps are done (or the run ends; with all steps, until its bundle is saved).
    ``avatar`` opens a bundle folder or .persona file at start; ``imported_frames`` (``frames import``
    files) are trained on by every run, besides the generated frames; ``person`` (K > 0) starts the Project
    tab's Person field at K.
    Returns the process exit status (0 = fine, 1 = the viewport could not render, the screenshot
    failed or the run failed). User errors (bad preset or override, bad view name, no display) raise
    UserError before any window opens; once it is open, errors go to the status bar.
    """
    studio = Studio(photo=photo, preset=preset, overrides=overrides, view=view, width=width, height=height,
                    output_dir=output_dir, avatar=avatar, imported_frames=imported_frames, person=person)
    studio.build()
    try:
        return studio.run(frames=frames, screenshot=screenshot, train_steps=train_steps)
    finally:
        studio.close()
