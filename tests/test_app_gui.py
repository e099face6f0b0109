"""The studio window for real: launched in a subprocess on an X display (Xvfb started here if needed).

Screenshots land in ``artifacts/test_app_gui/`` for a person to look at.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from core.body.model_file import rest_joints
from core.frames.frameset import FrameSet
from core.motion import load_builtin
from core.motion.bvh import save_bvh
from core.paths import REPO_ROOT
from persona_studio.app import SIDE_PANEL_WIDTH, STATUS_BAR_HEIGHT
from persona_studio.viewport.demo_figure import LIPS, SHIRT

pytestmark = pytest.mark.gui

ARTIFACTS = REPO_ROOT / "artifacts" / "test_app_gui"
WINDOW = (1024, 640)
BACKGROUND = np.array([1.0, 1.0, 1.0])


@pytest.fixture(scope="module", autouse=True)
def private_config_home(tmp_path_factory):
    """App runs keep their recent-projects list in a temporary config folder, not the user's."""
    home = tmp_path_factory.mktemp("config-home")
    previous = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = previous


@pytest.fixture(scope="module")
def display():
    """An X display: $DISPLAY if set, else a private Xvfb; skip only when neither exists."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no $DISPLAY and no Xvfb binary")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                              pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()  # Xvfb writes its display number once it accepts clients
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def run_python(code: str, display: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, DISPLAY=display)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_studio_screenshot(display: str, path, view: str) -> subprocess.Popen:
    """Start the real app headless for a few frames in ``view``, saving a window screenshot to ``path``."""
    path.unlink(missing_ok=True)
    code = f"""
import sys
from persona_studio.app import run_studio
sys.exit(run_studio(frames=5, screenshot={str(path)!r}, view={view!r}, width={WINDOW[0]}, height={WINDOW[1]}))
"""
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=dict(os.environ, DISPLAY=display),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def load_screenshot(process: subprocess.Popen, path) -> np.ndarray:
    """Wait for a ``start_studio_screenshot`` run; its screenshot as float RGB ``[H, W, 3]``."""
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    assert path.exists()
    with Image.open(path) as image:
        assert image.size == WINDOW
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def viewport_region(window: np.ndarray) -> np.ndarray:
    """The part of the window the viewport image fills (right of the side panel, above the status bar)."""
    return window[40:-STATUS_BAR_HEIGHT - 10, SIDE_PANEL_WIDTH + 30:-10]


def near_colour(image: np.ndarray, colour, tolerance: float) -> np.ndarray:
    return np.abs(image - np.asarray(colour)).max(axis=-1) < tolerance


def silhouette_width(region: np.ndarray) -> int:
    columns = np.flatnonzero((np.abs(region - BACKGROUND).max(axis=-1) > 0.15).any(axis=0))
    return int(columns[-1] - columns[0] + 1)


@pytest.fixture(scope="module")
def screenshots(display):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    paths = {view: ARTIFACTS / f"studio_{view}.png" for view in ("front", "side", "back")}
    # Three separate app processes at once: each mostly waits (frame cap, render thread), so this is faster.
    runs = {view: start_studio_screenshot(display, path, view) for view, path in paths.items()}
    return {view: load_screenshot(runs[view], paths[view]) for view in runs}


def test_window_shows_the_demo_figure(screenshots):
    region = viewport_region(screenshots["front"])
    figure = np.abs(region - BACKGROUND).max(axis=-1) > 0.15
    assert 0.03 < figure.mean() < 0.6  # a figure on the background, neither empty nor a blank fill
    assert near_colour(region, SHIRT, 0.1).sum() > 1000  # the shirt is drawn in its colour
    # The side panel is drawn too (dark UI), so this is the whole window, not just the viewport.
    assert screenshots["front"][:, :SIDE_PANEL_WIDTH].mean() < 0.4


def test_camera_presets_change_the_image(screenshots):
    front, side, back = (viewport_region(screenshots[v]) for v in ("front", "side", "back"))
    changed = np.abs(front - back).max(axis=-1) > 0.1
    assert changed.mean() > 0.01  # the figure is nearly symmetric, yet over 1 % of the view changes
    # Arms spread sideways: the figure is much wider from the front than from the side.
    assert silhouette_width(front) > 1.5 * silhouette_width(side)
    # The face is only seen from the front.
    assert near_colour(front, LIPS, 0.12).sum() > 10
    assert near_colour(back, LIPS, 0.12).sum() == 0


def tiny_frameset() -> FrameSet:
    """Two 8x8 frames in the FrameSet format (what `persona-studio frames import` writes)."""
    frame = {"rgb": np.full((8, 8, 3), 0.5, np.float32), "mask": np.ones((8, 8, 1), np.float32),
             "depth": np.full((8, 8, 1), 3.0, np.float32), "normal": np.zeros((8, 8, 3), np.float32),
             "part_seg": np.zeros((8, 8, 3), np.float32), "K": np.eye(3, dtype=np.float32),
             "viewmat": np.eye(4, dtype=np.float32), "params": {"body_pose": np.zeros(63, np.float32)}}
    return FrameSet.from_frames([frame, frame], "imported", ["clip.mp4:0", "clip.mp4:1"])


def test_actions_and_errors_in_a_live_window(display, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((300, 200, 3), 180, np.uint8)).save(photo)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    not_frames = tmp_path / "other.npz"
    np.savez(not_frames, x=np.zeros(3))
    frames = tmp_path / "imported.npz"
    tiny_frameset().save(frames)
    motion = tmp_path / "wave.bvh"
    save_bvh(load_builtin("wave").slice(0, 40), motion, rest_joints())
    bad_motion = tmp_path / "broken.bvh"
    bad_motion.write_text("HIERARCHY ROOT Hips {")
    shot = tmp_path / "viewport.png"
    result = run_python(f"""
        import json
        from persona_studio.app import Studio
        studio = Studio(photo={str(tmp_path / 'missing.png')!r}, width=900, height=600, output_dir={str(tmp_path)!r})
        studio.build()
        studio.run(frames=3)
        missing_photo_error = studio.status.last_error
        studio.queue_dropped_files([{str(notes)!r}])
        studio.run(frames=2)
        drop_error = studio.status.last_error
        studio.queue_dropped_files([{str(not_frames)!r}])
        studio.run(frames=2)
        frames_error = studio.status.last_error
        for _ in range(2):  # the same file twice: listed once
            studio.queue_dropped_files([{str(frames)!r}])
            studio.run(frames=2)
        imported, frames_info = [str(p) for p in studio.imported_frames], studio.status.message
        studio.queue_dropped_files([{str(bad_motion)!r}])
        studio.run(frames=2)
        motion_error = studio.status.last_error
        studio.queue_dropped_files([{str(motion)!r}])  # onto the Pose tab's timeline
        studio.run(frames=2)
        timeline = [studio.pose_panel.motion.name, studio.pose_panel.motion.num_frames, studio.status.message]
        studio.queue_dropped_files([{str(photo)!r}])
        studio.run(frames=2)
        studio.run(frames=1, screenshot={str(tmp_path / 'window.png')!r})
        saved = studio.save_viewport_screenshot({str(shot)!r})
        camera = studio.viewport.camera
        print(json.dumps(dict(missing=missing_photo_error, drop=drop_error, photo=str(studio.project.photo),
                              frames_error=frames_error, imported=imported, frames_info=frames_info,
                              motion_error=motion_error, timeline=timeline,
                              size=[camera.width, camera.height], saved=str(saved))))
        studio.close()
    """, display)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["missing"] == f"{tmp_path / 'missing.png'}: file not found"
    assert report["drop"].startswith(f"{notes}: cannot open this here")
    assert report["photo"] == str(photo)
    # A dropped .npz that is not a frame set is refused by name; a frame set joins the next runs, once.
    assert report["frames_error"].startswith(f"{not_frames}:") and "\n" not in report["frames_error"]
    assert report["imported"] == [str(frames)]
    assert "2 imported frames from imported.npz" in report["frames_info"]
    # a dropped .bvh motion goes on the timeline, retargeted; a broken one is refused by name
    assert report["motion_error"].startswith(f"{bad_motion}: not a readable BVH file")
    assert report["timeline"][:2] == ["wave", 40] and "40 frames" in report["timeline"][2]
    with Image.open(shot) as image:
        assert list(image.size) == report["size"]  # the viewport image at its render size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    assert near_colour(pixels, SHIRT, 0.1).sum() > 500


def test_a_dropped_photo_runs_with_the_person_field_and_the_maps_beside_it(display, tmp_path):
    """The Project tab's Person field (started by ``studio --person``) and a mask beside the photo
    (``<name>.mask.png``) reach photo prep; the status bar says the mask is used, and shows prep's warnings."""
    photo = tmp_path / "group.png"
    Image.fromarray(np.full((300, 200, 3), 180, np.uint8)).save(photo)
    Image.fromarray(np.full((300, 200), 255, np.uint8)).save(tmp_path / "group.mask.png")
    albedo, squashed = tmp_path / "my albedo.png", tmp_path / "squashed.png"
    Image.fromarray(np.full((150, 100, 3), 90, np.uint8)).save(albedo)  # half size: the same aspect ratio
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(squashed)
    result = run_python(f"""
        import json, threading
        import dearpygui.dearpygui as dpg
        from core.errors import UserError
        from persona_studio.app import Studio
        studio = Studio(width=900, height=600, output_dir={str(tmp_path)!r}, person=2)
        asked, go_on = [], threading.Event()

        def prepare(*args, **kwargs):  # no photo prep: the run ends here
            asked.append(kwargs)
            go_on.wait(60)
            raise UserError("prep skipped by the test")

        studio.prepare = prepare
        studio.build()
        studio.run(frames=3)
        shown = dpg.get_value(studio.project._person)
        studio.queue_dropped_files([{str(photo)!r}])
        studio.step_until(lambda: asked, 20)
        first, status = list(asked), studio.status.message
        maps = dpg.get_value(studio.project._maps_text)
        go_on.set()
        dpg.set_value(studio.project._person, 0)  # auto: the pose detector's pick
        choose = studio.guard(studio.project.on_map_dialog)  # as the Albedo image dialog calls it
        choose(None, {{"file_path_name": {str(squashed)!r}}}, "albedo")
        refused = studio.status.message
        choose(None, {{"file_path_name": {str(albedo)!r}}}, "albedo")
        chosen = dpg.get_value(studio.project._maps_text)
        studio.restart_reconstruction()
        studio.step_until(lambda: len(asked) > 1, 20)
        from types import SimpleNamespace
        from persona_studio.session import SessionStatus
        running = SimpleNamespace(status=lambda: SessionStatus(state="running", warnings=("2 person-like regions",)))
        studio._report_session(running)
        warned = studio.status.message
        studio.status.info("something else")
        studio._report_session(running)  # said once per run
        print(json.dumps(dict(shown=shown, first=first, status=status, second=asked[1:], maps=maps, warned=warned,
                              again=studio.status.message, refused=refused, chosen=chosen), default=str))
        studio.close()
    """, display)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shown"] == 2
    from core.prep.supplied import SuppliedMaps

    mask = tmp_path / "group.mask.png"
    (first,), (second,) = report["first"], report["second"]
    assert first["person"] == 2 and second["person"] is None
    assert first["supplied"] == str(SuppliedMaps(mask, None))  # the mask found beside the photo
    assert second["supplied"] == str(SuppliedMaps(mask, albedo))  # and the albedo chosen on the Project tab
    assert report["refused"].startswith("Error: ") and "same aspect ratio" in report["refused"]
    assert report["chosen"] == "Using your mask group.mask.png and albedo my albedo.png"
    assert report["status"].startswith("Reconstructing group.png")
    assert "with your mask group.mask.png" in report["status"]
    assert report["maps"] == "Using your mask group.mask.png"  # the Project tab says so too
    assert report["warned"] == "Warning: 2 person-like regions" and report["again"] == "something else"


def test_a_bad_dropped_photo_opens_an_error_dialog_that_ok_closes(display, tmp_path):
    xdotool = shutil.which("xdotool")
    if xdotool is None:
        pytest.skip("xdotool is not installed (apt-get install -y xdotool)")
    bad = tmp_path / "broken photo.png"
    bad.write_text("this is not a PNG")
    good = tmp_path / "good.png"
    Image.fromarray(np.full((300, 200, 3), 180, np.uint8)).save(good)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "studio_error_dialog.png"
    result = run_python(f"""
        import json, subprocess, threading
        import dearpygui.dearpygui as dpg
        from persona_studio.app import Studio
        studio = Studio(width=900, height=600, output_dir={str(tmp_path)!r})
        released = threading.Event()
        studio.prepare = lambda *args, **kwargs: released.wait(60)  # no photo prep: this test is about the window
        studio.build()
        studio.run(frames=3)
        before = studio.error_dialog.visible
        studio.queue_dropped_files([{str(bad)!r}])
        studio.run(frames=3)
        dialog = dict(visible=studio.error_dialog.visible, text=dpg.get_value(studio.error_dialog._text),
                      status=studio.status.message)
        studio.run(frames=1, screenshot={str(shot)!r})
        # Click OK with the real mouse (the dialog is modal: DPG only lets that click through to it).
        x, y = dpg.get_item_rect_min(studio.error_dialog.ok_button)
        w, h = dpg.get_item_rect_size(studio.error_dialog.ok_button)
        window = subprocess.run(["xdotool", "search", "--name", "persona-studio"], capture_output=True,
                                text=True, check=True).stdout.split()[0]
        subprocess.run(["xdotool", "mousemove", "--window", window, str(x + w // 2), str(y + h // 2)], check=True)
        studio.run(frames=3)
        subprocess.run(["xdotool", "click", "1"], check=True)
        closed = studio.step_until(lambda: not studio.error_dialog.visible, 10)
        studio.run(frames=2)
        after_ok = dict(closed=closed, status=studio.status.message)
        studio.queue_dropped_files([{str(good)!r}])
        studio.run(frames=3)
        print(json.dumps(dict(before=before, dialog=dialog, after_ok=after_ok, photo=str(studio.project.photo),
                              visible_after_good=studio.error_dialog.visible, last_error=studio.status.last_error,
                              status=studio.status.message)))
        studio.session.stop()
        released.set()
        studio.close()
    """, display)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["before"] is False
    # The dialog shows the one-line error naming the file; the status bar says the same.
    assert report["dialog"]["visible"]
    assert report["dialog"]["text"].startswith(f"{bad}: cannot read the image")
    assert "\n" not in report["dialog"]["text"]
    assert report["dialog"]["status"] == "Error: " + report["dialog"]["text"]
    # OK closes it; the message stays in the status bar.
    assert report["after_ok"]["closed"]
    assert report["after_ok"]["status"] == report["dialog"]["status"]
    # The app kept running: the good photo loads and no new dialog opens.
    assert report["photo"] == str(good)
    assert not report["visible_after_good"]
    assert report["status"].startswith("Reconstructing good.png")
    with Image.open(shot) as image:  # the dialog is drawn in the window, over the viewport
        assert image.size == (900, 600)


def test_an_avatar_bundle_opened_at_start_replaces_the_demo_figure(display, tmp_path):
    from core.avatar.build import build_avatar
    from core.avatar.bundle import save_bundle
    from core.body import BodyModel
    from core.config import load_preset

    body = BodyModel.load()
    avatar = build_avatar(body, np.zeros(body.num_betas), load_preset("preview", ["avatar.skinning_grid=32", "avatar.num_gaussians=14000"]).avatar)
    save_bundle(tmp_path / "grey", avatar, body, {"betas": np.zeros(body.num_betas, np.float32)})  # mid-grey colours
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "studio_bundle.png"
    result = run_python(f"""
        import sys
        from persona_studio.app import run_studio
        sys.exit(run_studio(avatar={str(tmp_path / 'grey')!r}, frames=3, screenshot={str(shot)!r},
                            width={WINDOW[0]}, height={WINDOW[1]}))
    """, display)
    assert result.returncode == 0, result.stderr
    with Image.open(shot) as image:
        region = viewport_region(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    assert near_colour(region, (0.5, 0.5, 0.5), 0.08).sum() > 2000  # the grey avatar
    assert near_colour(region, SHIRT, 0.1).sum() == 0  # no demo figure


class DrivenStudio:
    """A studio driver script (``INTERACTIVE_DRIVER``) in a subprocess on the test display: it
    prints READY, then answers one line on stdout per command line on stdin; xdotool acts on its real window."""

    def __init__(self, source: str, display: str):
        self.xdotool = shutil.which("xdotool")
        if self.xdotool is None:
            pytest.skip("xdotool is not installed (apt-get install -y xdotool)")
        self.env = dict(os.environ, DISPLAY=display)
        self.app = subprocess.Popen([sys.executable, "-c", source], cwd=REPO_ROOT, env=self.env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.app.stdout.readline().strip() == "READY", self.app.stderr.read()
        self.window = self.run("search", "--name", "persona-studio").split()[0]

    def run(self, *args: str, pause: float = 0.0) -> str:
        """xdotool with ``args``; its output."""
        out = subprocess.run([self.xdotool, *args], env=self.env, check=True, capture_output=True, text=True).stdout
        time.sleep(pause)
        return out

    def ask(self, command: str) -> str:
        self.app.stdin.write(command + "\n")
        self.app.stdin.flush()
        return self.app.stdout.readline().strip()

    def report_when(self, condition, timeout: float = 20.0) -> dict:
        """The driver's "report" once ``condition(report)`` holds (a loaded machine may take several UI frames),
        else the last one after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            report = json.loads(self.ask("report"))
            if condition(report) or time.monotonic() > deadline:
                return report
            time.sleep(0.1)

    def close(self) -> None:
        if self.app.poll() is None:
            self.app.stdin.write("quit\n")
            self.app.stdin.flush()
        try:
            self.app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.app.kill()


# A driver around the real Studio: it steps the UI loop and answers "report" (camera and two joints as JSON),
# "shot PATH" (whole-window screenshot), "bend JOINT ANGLE" and "quit" on stdin, so the test can move the real
# mouse and press real keys.
INTERACTIVE_DRIVER = """
import json, select, sys, time
from persona_studio.app import Studio
studio = Studio(width=900, height=600)
studio.build()
studio.run(frames=3, screenshot=None)
deadline = time.monotonic() + 60
while not studio.viewport.up_to_date and time.monotonic() < deadline:
    studio.step()
print("READY", flush=True)
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    studio.step()
    if not select.select([sys.stdin], [], [], 0.005)[0]:
        continue
    command = sys.stdin.readline().split()
    if command[0] == "report":
        cam = studio.viewport.camera
        print(json.dumps(dict(azimuth=cam.azimuth, elevation=cam.elevation, distance=cam.distance,
                              target=cam.target.tolist(), size=[cam.width, cam.height],
                              elbow=float(studio.pose.joint("left_elbow")[1]),
                              knee=float(studio.pose.joint("left_knee")[1]))), flush=True)
    elif command[0] == "bend":  # an edit as the Pose tab's slider makes it
        studio.pose_panel.set_joint(command[1], 1, float(command[2]))
        print("OK", flush=True)
    elif command[0] == "shot":
        studio.run(frames=1, screenshot=command[1])
        print("SAVED", flush=True)
    else:
        break
studio.close()
"""


def test_mouse_orbit_zoom_pan_and_resize_in_the_real_window(display):
    studio = DrivenStudio(INTERACTIVE_DRIVER, display)
    window = studio.window

    def mouse(*args: str, pause: float = 0.3) -> None:
        studio.run(*args, pause=pause)

    try:
        start = json.loads(studio.ask("report"))
        # Left drag 90 px to the right over the viewport image: orbit (0.008 rad per pixel).
        mouse("mousemove", "--window", window, "600", "300")
        mouse("mousedown", "1")
        for step in range(1, 10):
            mouse("mousemove", "--window", window, str(600 + 10 * step), "300", pause=0.05)
        mouse("mousemove", "--window", window, "690", "300")
        mouse("mouseup", "1")
        orbited = studio.report_when(lambda cam: abs(cam["azimuth"] - (start["azimuth"] - 0.72)) < 0.1)
        assert orbited["azimuth"] == pytest.approx(start["azimuth"] - 0.72, abs=0.1)
        assert orbited["distance"] == pytest.approx(start["distance"]) and orbited["target"] == start["target"]
        # Two wheel notches towards the screen: zoom in by 0.9 per notch.
        mouse("click", "4")
        mouse("click", "4")
        zoomed = studio.report_when(lambda cam: cam["distance"] < start["distance"] * 0.85)
        assert zoomed["distance"] == pytest.approx(start["distance"] * 0.81, rel=1e-6)
        # Right drag downwards: the scene follows the mouse down, so the target moves up.
        mouse("mousedown", "3")
        mouse("mousemove", "--window", window, "690", "350")
        mouse("mouseup", "3")
        panned = studio.report_when(lambda cam: cam["target"][1] > zoomed["target"][1] + 0.05)
        assert panned["target"][1] > zoomed["target"][1] + 0.05
        assert panned["azimuth"] == zoomed["azimuth"] and panned["distance"] == zoomed["distance"]
        assert studio.ask(f"shot {ARTIFACTS / 'studio_after_mouse.png'}") == "SAVED"
        # A bigger window gives the viewport (and its renders) 200 x 100 more pixels.
        mouse("windowsize", window, "1100", "700")
        grown = [panned["size"][0] + 200, panned["size"][1] + 100]
        assert studio.report_when(lambda cam: cam["size"] == grown)["size"] == grown
    finally:
        studio.close()


def test_bad_preset_view_or_display_are_user_errors_before_any_window(monkeypatch):
    from core.errors import UserError
    from persona_studio.app import Studio

    with pytest.raises(UserError, match="unknown preset 'nope'"):
        Studio(preset="nope")
    with pytest.raises(UserError, match="unknown view 'sideways'"):
        Studio(view="sideways")
    if sys.platform.startswith("linux"):
        monkeypatch.delenv("DISPLAY", raising=False)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        with pytest.raises(UserError, match=r"no display .* `Xvfb :99 &`"):
            Studio()
        monkeypatch.setenv("DISPLAY", ":987")  # nothing listens there
        with pytest.raises(UserError, match="cannot connect to the X display ':987'"):
            Studio()


# ---------------------------------------------------------------------------------------------------
# End to end: a real photo through the whole studio
# ---------------------------------------------------------------------------------------------------
MESSI = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"  # Debian's opencv-doc
TINY = ["train.iterations=6", "frames.num_generated=4", "train.render_size=96", "frames.resolution=96",
        "prep.crop_size=256", "train.snapshot_every=2", "export.frames=4", "export.resolution=64",
        "frames.warmup_iterations=3", "avatar.num_gaussians=14000"]
E2E_WINDOW = (1100, 700)

# The driver runs the real app, acts the way the panels' callbacks do, and prints a JSON report.
E2E_DRIVER = """
import json, sys, time
import numpy as np
from pathlib import Path
from persona_studio.app import Studio

photo, out, art, overrides = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
report = {}
studio = Studio(width=%d, height=%d, overrides=overrides, output_dir=out)
studio.build()
studio.run(frames=2)

# 1. The photo through the file dialog's callback: the whole reconstruction runs in the worker.
studio.project.on_photo_dialog(None, {"file_path_name": photo, "selections": {Path(photo).name: photo}})
first = studio.session
report["dialog_ok"] = studio.wait_for_training(6, timeout=420)
status = first.status()
report["first"] = dict(state=status.state, step=status.step, bundle=str(status.bundle), error=status.error,
                       fractions=status.fractions)
studio.settle()
studio.run(frames=2, screenshot=art / "e2e_trained.png")
report["scene_label"] = studio.viewport.scene.label
report["status_after_run"] = studio.status.last_error

# 2. The same photo dropped on the window: a second run (prep and frames come from the cache).
studio.queue_dropped_files([photo])
studio.run(frames=2)
report["drop_started_new_run"] = studio.session is not None and studio.session is not first
studio.show_tab("Train")
studio.weights.set_weight("generated", "normal", 2.5)  # the slider's callback
report["weight_in_run"] = studio.session.config.loss.generated.normal
report["drop_ok"] = studio.wait_for_training(6, timeout=300)
report["second_history"] = len(studio.session.history())
studio.run(frames=12)  # the plots update twice a second
studio.run(frames=2, screenshot=art / "e2e_train_tab.png")

# 3. The inspector: frame 1's targets next to the current render.
studio.inspector.show()
studio.inspector.select(1)
studio.step_until(lambda: studio.inspector.last_inspection is not None
                  and studio.inspector.last_inspection.frame == 1, 60)
inspection = studio.inspector.last_inspection
report["inspection"] = None if inspection is None else dict(
    frame=inspection.frame, kind=inspection.kind, counts=inspection.draw_counts.tolist(),
    mask_overlap=float(((inspection.targets["mask"][..., 0] > 0.5) & (inspection.render["mask"][..., 0] > 0.5)).sum()
                       / max(1, (inspection.targets["mask"][..., 0] > 0.5).sum())))
studio.run(frames=3, screenshot=art / "e2e_inspector.png")
studio.inspector.hide()

# 4. A pose slider: the left arm goes down.
studio.show_tab("Pose")
studio.settle()
studio.run(frames=2, screenshot=art / "e2e_pose_before.png")
camera = studio.viewport.camera
def left_hand_pixels():
    scene = studio.viewport.scene
    hand = scene.means[studio.display.avatar.weights.argmax(1).numpy() == 20]  # left_wrist
    return camera.project(hand).mean(0).tolist()
report["hand_before"] = left_hand_pixels()
studio.pose_panel.set_joint("left_shoulder", 2, -1.2)  # the slider's callback
report["pose_settled"] = studio.settle()
studio.run(frames=2, screenshot=art / "e2e_pose_after.png")
report["hand_after"] = left_hand_pixels()
report["latency"] = dict(first=list(studio.latency.first), refined=list(studio.latency.refined))
report["viewport_origin"] = [int(v) for v in __import__("dearpygui.dearpygui", fromlist=["x"]).get_item_rect_min(
    studio.widget.image)]

# 5. A short turntable export of the trained avatar.
studio.show_tab("Export")
task = studio.export_panel.export("turntable", out / "turntable.gif")
studio.step_until(lambda: task.status().state != "running", 180)
studio.run(frames=3, screenshot=art / "e2e_export.png")
report["export"] = dict(state=task.status().state, message=task.status().message, path=str(task.status().path))
report["status_line"] = studio.status.last_error

# 6. The bundle folder through the open-avatar dialog's callback.
studio.project.on_bundle_dialog(None, {"file_path_name": str(out / "messi5")})
report["bundle_opened"] = studio.step_until(lambda: studio.display_source == "bundle" and studio.display is not None, 60)
report["recent"] = [(e.kind, e.path) for e in studio.recent.entries]
studio.close()
print("REPORT " + json.dumps(report))
""" % E2E_WINDOW


@pytest.mark.slow
def test_a_real_photo_through_the_whole_studio(display, tmp_path):
    if not os.path.exists(MESSI):
        pytest.skip(f"{MESSI} is missing (Debian package opencv-doc)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DISPLAY=display)
    result = subprocess.run([sys.executable, "-c", E2E_DRIVER, MESSI, str(tmp_path), str(ARTIFACTS), json.dumps(TINY)],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])

    # The dialog run went through every stage and saved a bundle.
    assert report["dialog_ok"], report["first"]
    assert report["first"]["state"] == "finished" and report["first"]["step"] == 6
    assert all(value == 1.0 for value in report["first"]["fractions"].values())
    assert report["first"]["bundle"] == str(tmp_path / "messi5")
    assert (tmp_path / "messi5" / "manifest.json").exists() and (tmp_path / "messi5" / "preview.png").exists()
    assert report["scene_label"] == "messi5: training step 6/6"
    # The drop started a second run that trained too, with the live weight.
    assert report["drop_started_new_run"] and report["drop_ok"] and report["second_history"] == 6
    assert report["weight_in_run"] == 2.5
    # The inspector got frame 1 and the current render overlaps its target silhouette.
    assert report["inspection"]["frame"] == 1 and report["inspection"]["kind"] == "generated"
    assert sum(report["inspection"]["counts"]) == 6 and report["inspection"]["mask_overlap"] > 0.5

    # The pose slider changed the image where the arm was and where it went.
    assert report["pose_settled"]
    before = load_window(ARTIFACTS / "e2e_pose_before.png")
    after = load_window(ARTIFACTS / "e2e_pose_after.png")
    x0, y0 = report["viewport_origin"]
    hand_before = np.add(report["hand_before"], (x0, y0))
    hand_after = np.add(report["hand_after"], (x0, y0))
    assert hand_after[1] > hand_before[1] + 40  # pixels: the hand went down on screen
    for (x, y), was_there in ((hand_before, True), (hand_after, False)):
        patch = (slice(int(y) - 6, int(y) + 7), slice(int(x) - 6, int(x) + 7))
        filled_before = (np.abs(before[patch] - BACKGROUND).max(axis=-1) > 0.15).mean()
        filled_after = (np.abs(after[patch] - BACKGROUND).max(axis=-1) > 0.15).mean()
        if was_there:  # where the hand was: covered before, background now
            assert filled_before > 0.5 and filled_after < 0.2, (filled_before, filled_after)
        else:  # where the hand went: background before, covered now
            assert filled_before < 0.2 and filled_after > 0.5, (filled_before, filled_after)
    changed = np.abs(before - after).max(axis=-1) > 0.1
    assert changed[:, SIDE_PANEL_WIDTH:].mean() > 0.003  # the arm region of the viewport changed
    assert report["latency"]["first"]  # the pose-to-screen latency was measured

    # The turntable export wrote a 4-frame GIF and the status bar names it.
    assert report["export"]["state"] == "done", report["export"]["message"]
    assert report["export"]["path"] == str(tmp_path / "turntable.gif")
    with Image.open(tmp_path / "turntable.gif") as gif:
        assert gif.n_frames == 4
    # The bundle opened through the dialog; recent projects list it and the photo.
    assert report["bundle_opened"]
    assert ("bundle", str(tmp_path / "messi5")) in [tuple(e) for e in report["recent"]]
    assert ("photo", MESSI) in [tuple(e) for e in report["recent"]]


def load_window(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.size == E2E_WINDOW
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def test_the_pose_tab_pose_is_saved_and_exported(display, tmp_path):
    """A pose made on the Pose tab (a bent elbow, a raised hand, an expression) is what "Pose tab" exports in, and
    Save pose... writes it as a one-frame motion that the Pose tab and the command line read back."""
    from plyfile import PlyData

    from core.avatar.bundle import load_bundle, save_bundle
    from core.avatar.build import build_avatar
    from core.avatar.render import pose_avatar
    from core.body import BodyModel
    from core.config import load_preset
    from core.export.poses import pose_params

    body = BodyModel.load()
    avatar = build_avatar(body, np.zeros(body.num_betas), load_preset("preview", ["avatar.skinning_grid=32",
                                                                                  "avatar.num_gaussians=6000"]).avatar)
    save_bundle(tmp_path / "me", avatar, body, {"betas": np.zeros(body.num_betas, np.float32)})
    saved, exported = tmp_path / "bent", tmp_path / "bent.ply"
    result = run_python(f"""
        import json, time
        import dearpygui.dearpygui as dpg
        from persona_studio.app import Studio
        from persona_studio.panels.export import POSE_TAB
        studio = Studio(avatar={str(tmp_path / 'me')!r}, width=900, height=600, output_dir={str(tmp_path)!r})
        studio.build()
        deadline = time.monotonic() + 60
        while studio.display is None and time.monotonic() < deadline:
            studio.run(frames=1)
        studio.pose_panel.set_joint("left_elbow", 1, -1.2)
        studio.pose_panel.set_joint("right_shoulder", 2, 0.8)
        written = studio.pose_panel.save_pose({str(saved)!r})
        message = studio.status.message
        dpg.set_value(studio.export_panel._pose, POSE_TAB)
        task = studio.export_panel.export("ply", {str(exported)!r})
        task.join(120)
        studio.pose_panel.reset()
        studio.pose_panel.set_motion(__import__("core.motion", fromlist=["load_motion"]).load_motion(written))
        studio.run(frames=2)
        elbow = studio.pose.joint("left_elbow").tolist()
        print(json.dumps(dict(written=str(written), message=message, state=task.status().state,
                              status=task.status().message, elbow=elbow)))
        studio.close()
    """, display)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["written"] == str(saved) + ".npz" and f"--pose motion:{saved}.npz:0" in report["message"]
    assert report["state"] == "done", report["status"]
    assert report["elbow"] == pytest.approx([0.0, -1.2, 0.0])  # read back onto the Pose tab
    # the .ply holds the avatar in that pose: the same as the command line's --pose motion:FILE:0
    loaded, _, manifest = load_bundle(tmp_path / "me", body)
    vertex = PlyData.read(str(exported))["vertex"]
    means = np.stack([np.asarray(vertex[k]) for k in ("x", "y", "z")], 1)
    import torch

    with torch.no_grad():
        expected = pose_avatar(loaded, body, pose_params(f"motion:{saved}.npz:0", manifest, body), refined=True)
        rest = pose_avatar(loaded, body, pose_params("apose", manifest, body), refined=True)
    assert np.abs(means - expected.means.numpy()).max() < 1e-5
    assert np.abs(means - rest.means.numpy()).max() > 0.1  # the bent arm, not the default A-pose





def test_keyboard_shortcuts_undo_and_redo_pose_edits_in_the_real_window(display):
    """Ctrl+Z / Ctrl+Y pressed on the real window (xdotool, through X and GLFW) undo and redo Pose tab edits; a drag
    of one slider is one step; Home resets the view."""
    studio = DrivenStudio(INTERACTIVE_DRIVER, display)

    def press(*keys: str) -> None:
        studio.run("key", *keys, pause=0.3)

    try:
        studio.run("windowfocus", "--sync", studio.window)
        for value in (-0.3, -0.6, -0.9):  # one drag of the elbow slider: one step
            assert studio.ask(f"bend left_elbow {value}") == "OK"
        time.sleep(1.2)  # a pause ends the step
        assert studio.ask("bend left_knee 0.7") == "OK"
        press("ctrl+z")
        undone = studio.report_when(lambda r: r["knee"] == 0.0)
        assert undone["knee"] == 0.0 and undone["elbow"] == pytest.approx(-0.9)
        press("ctrl+z")
        assert studio.report_when(lambda r: r["elbow"] == 0.0)["elbow"] == 0.0  # the whole drag at once
        press("ctrl+y")
        press("ctrl+shift+z")
        redone = studio.report_when(lambda r: r["knee"] == pytest.approx(0.7))
        assert redone["elbow"] == pytest.approx(-0.9) and redone["knee"] == pytest.approx(0.7)
        start = redone["distance"]
        studio.run("mousemove", "--window", studio.window, "600", "300")
        studio.run("click", "4")  # zoom in
        assert studio.report_when(lambda r: r["distance"] < start * 0.95)["distance"] < start * 0.95
        press("Home")
        assert studio.report_when(lambda r: r["distance"] == pytest.approx(start))["distance"] == pytest.approx(start)
    finally:
        studio.close()
