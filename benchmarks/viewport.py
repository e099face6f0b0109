"""Viewport speed: the OpenGL splat renderer, and the studio app around it (pose-slider-to-screen
latency, UI frame rate while training), each against a baseline measured in the same run.

    python benchmarks/viewport.py                  # 20k and 50k splats at 512^2, a 55k avatar, the studio rows
    python benchmarks/viewport.py --size 1024 --counts 20000
    python benchmarks/viewport.py --engine         # also the engine's CPU rasterizer, same scene and camera
    python benchmarks/viewport.py --no-studio      # renderer rows only (the studio rows need X: $DISPLAY or Xvfb)

Scene: the studio's demo figure (splats on a 1.75 m human-like figure, sizes from the local spacing),
framed like the viewport frames it. Rows, each the median and the fastest of ``--frames`` frames after
warm-up; ``gl`` is the OpenGL backend (the baseline: what the studio drew with before the CPU compositor),
``cpu`` the CPU compositor (``cpu_splatter``, the studio's choice on a software GL such as llvmpipe):
  gl: readback only         an empty scene: clear the float32 framebuffer, read it into numpy
  gl: draw, unsorted        fixed order, no sort (a wrong image where splats overlap; the cost of pixels alone)
  gl: sort + quad indices   numpy argsort + the index buffer's contents, part of every GL orbit frame
  <backend>: draw, same view   what pan / zoom / FOV / background changes cost: the depth order is reused
  <backend>: orbit          the camera turns a little every frame: sort + draw
  <backend>: orbit, half    the same at half the image side, what the studio renders while the camera moves
  avatar rows               the same for a real avatar (the embedded body subdivided once: ~55k Gaussians,
                            A-pose); with an NVIDIA GPU also ``engine`` (gsplat, the frame read back
                            through pinned memory)

Studio rows (the real app in a window, 1280 x 800 unless --window; medians):
  pose slider -> screen   from a slider's callback to the UI frame drawn with the first viewport image
                          showing the new pose (a quick base-pose preview where the poser makes one), the
                          first image with pose offsets (both at half resolution while the pose changes),
                          and the full-resolution image (once the pose has rested 0.3 s); baseline: the
                          poser without quick previews, alternating with the measured case change by change
  - stage                 where the time to the first image with pose offsets goes (median ms per stage,
                          ``persona_studio.latency``): poser wake-up, body model, pose offsets + skinning,
                          hand-off to the viewport, render wake-up, sort, composite, frame taken by the UI,
                          texture upload, UI frame drawn
  viewport images/s while orbiting   the camera turns 2 degrees every UI frame (a mouse drag) for
                          ``--seconds``: new viewport images shown per second, as the studio draws them
                          while moving (half resolution, thinned); baseline: every image full resolution
                          with every splat, alternating quarter by quarter
  UI frame                the wall and CPU time of one UI frame with nothing changing (Pose tab shown)
  UI frames/s             while a training run steps (synthetic subject, so no photo prep), with the
                          window in use (full rate) and left alone (idle throttle); baseline: the app idle
  training it/s           with the app open (in use / left alone); baseline: the same run without a window

    python benchmarks/viewport.py --pose-only      # only the pose slider -> screen rows (about a minute)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI that starts the studio: before torch loads

import numpy as np  # noqa: E402

from timing import call_times  # noqa: E402
from core.allocator import keep_freed_memory  # noqa: E402
from persona_studio.camera import Camera  # noqa: E402
from persona_studio.viewport.demo_figure import demo_figure  # noqa: E402
from persona_studio.viewport.gl_renderer import SplatRenderer, back_to_front_order, quad_indices  # noqa: E402


def median_seconds(fn, frames: int, warmup: int = 2) -> tuple[float, float]:
    """(median, fastest) seconds of ``fn()`` over ``frames`` calls; on a shared CPU the fastest is the
    better estimate of the uncontended speed, the median of what a user sees."""
    times = call_times(fn, frames, warmup)
    return statistics.median(times), min(times)


def render_rows(scene, size: int, frames: int, backend: str) -> list[tuple[str, tuple[float, float]]]:
    """Still, orbiting and half-size orbiting frames of ``scene`` on one renderer backend."""
    camera = Camera(width=size, height=size)
    camera.frame(*scene.bounds())
    renderer = SplatRenderer(size, size, backend=backend)
    renderer.set_scene(scene)
    out = np.empty((size, size, 4), np.float32)
    rows = [(f"{backend}: draw, same view", median_seconds(lambda: renderer.render(camera.viewmat(), camera.K(), out=out),
                                                          frames))]

    def orbit_frame():
        camera.orbit(4, 0)
        renderer.render(camera.viewmat(), camera.K(), out=out)

    rows.append((f"{backend}: orbit (sort + draw)", median_seconds(orbit_frame, frames)))
    renderer.resize(size // 2, size // 2)
    half_out = np.empty((size // 2, size // 2, 4), np.float32)
    camera.set_size(size // 2, size // 2)

    def half_orbit_frame():
        camera.orbit(4, 0)
        renderer.render(camera.viewmat(), camera.K(), out=half_out)

    rows.append((f"{backend}: orbit at half size (UI while moving)", median_seconds(half_orbit_frame, frames)))
    renderer.release()
    return rows


def bench_case(count: int, size: int, frames: int, engine: bool) -> list[tuple[str, tuple[float, float]]]:
    scene = demo_figure(count)
    camera = Camera(width=size, height=size)
    camera.frame(*scene.bounds())
    out = np.empty((size, size, 4), np.float32)
    rows = []

    unsorted = SplatRenderer(size, size, sort=False, backend="gl")
    rows.append(("gl: readback only", median_seconds(lambda: unsorted.render(camera.viewmat(), camera.K(), out=out),
                                                     frames)))
    unsorted.set_scene(scene)
    rows.append(("gl: draw, unsorted", median_seconds(lambda: unsorted.render(camera.viewmat(), camera.K(), out=out),
                                                      frames)))
    unsorted.release()
    rows.append(("gl: sort + quad indices", median_seconds(
        lambda: quad_indices(back_to_front_order(scene.means, camera.viewmat())), frames)))
    for backend in ("gl", "cpu"):  # gl: the baseline (the only backend before the CPU compositor)
        rows += render_rows(scene, size, frames, backend)

    if engine:
        import torch

        from core.render.rasterize import rasterize

        n = scene.count
        args = (torch.from_numpy(scene.means), torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4).contiguous(),
                torch.from_numpy(scene.scales)[:, None].expand(n, 3).contiguous(), torch.from_numpy(scene.opacities),
                torch.from_numpy(scene.colors), torch.from_numpy(camera.viewmat()).float()[None],
                torch.from_numpy(camera.K()).float()[None], size, size)
        with torch.no_grad():
            rows.append(("engine CPU rasterize", median_seconds(lambda: rasterize(*args, backend="cpu"), max(3, frames // 4),
                                                                warmup=1)))
    return rows


def avatar_scene(gaussians: int = 50000):
    """A real avatar of the embedded body (subdivided to the level nearest ``gaussians``) in the A-pose,
    as a viewport scene, plus the avatar and body model."""
    import torch

    from core.avatar.build import build_avatar
    from core.avatar.render import pose_avatar
    from core.body import BodyModel
    from core.config import load_preset
    from core.export.poses import a_pose
    from persona_studio.posing import Pose
    from persona_studio.viewport.scene import make_scene

    body = BodyModel.load()
    config = load_preset("standard", [f"avatar.num_gaussians={gaussians}", "avatar.skinning_grid=32"])
    avatar = build_avatar(body, np.zeros(body.num_betas), config.avatar)
    pose = Pose.rest().with_values(**{k: v for k, v in a_pose().items() if k != "transl"})
    with torch.no_grad():
        posed = pose_avatar(avatar, body, pose.params(np.zeros(body.num_betas)), refined=True)
    return make_scene(posed.means, posed.colors, posed.scales[:, 0], label="avatar"), avatar, body


def bench_avatar(size: int, frames: int) -> list[tuple[str, int, tuple[float, float]]]:
    """Renderer rows for a real avatar, on the GL backend (baseline) and the CPU compositor (and gsplat on
    the GPU, the ``engine`` backend, where an NVIDIA GPU can)."""
    from persona_studio.viewport.engine_splatter import gpu_splatting_problem

    scene, _, _ = avatar_scene()
    rows = []
    for backend in ("gl", "cpu") + (("engine",) if gpu_splatting_problem() is None else ()):
        rows += [(f"avatar, {name}", scene.count, times) for name, times in render_rows(scene, size, frames, backend)]
    return rows


# -- the studio app ---------------------------------------------------------------------------------
def start_display() -> tuple[str, object]:
    """$DISPLAY, or a private Xvfb (returned so the caller can stop it)."""
    import shutil
    import subprocess

    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"], None
    if shutil.which("Xvfb") is None:
        raise SystemExit("the studio rows need $DISPLAY or Xvfb (or pass --no-studio)")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                              pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        return f":{pipe.readline().strip()}", server


def pose_latencies(studio, changes: int, switch) -> dict[bool, tuple[list[float], list[float], list[float], list[dict]]]:
    """For ``switch(True)`` and ``switch(False)`` (e.g. quick previews on / off), alternating change by change
    so both see the same machine load: (first image, first image with pose offsets, full-resolution image)
    seconds of left-shoulder slider moves, one at a time, and the stage durations of the images with pose
    offsets (``ScreenLatency.refined_stages``)."""
    results = {True: ([], [], [], []), False: ([], [], [], [])}
    for k in range(2 * changes):
        on = k % 2 == 0
        switch(on)
        studio.latency.clear()
        studio.pose_panel.set_joint("left_shoulder", 2, -0.15 * (k % 8 + 1))
        studio.settle()
        studio.step_until(lambda: False, 0.3)  # the final frame is counted on the frame it is shown
        results[on][0].extend(studio.latency.first)
        results[on][1].extend(studio.latency.refined)
        results[on][2].extend(studio.latency.full)
        results[on][3].extend(studio.latency.refined_stages)
    switch(True)
    return results


def stage_rows(measured: list[dict], baseline: list[dict], count: str) -> list[tuple[str, str, str]]:
    """One row per stage of the slider -> screen path: median ms of the final images' stages."""
    from persona_studio.latency import ScreenLatency

    base = dict(ScreenLatency.stage_medians_ms(baseline))
    rows = []
    for name, ms in ScreenLatency.stage_medians_ms(measured):
        rows.append((f"- stage ({count}): {name}", f"{ms:.1f} ms",
                     f"{base[name]:.1f} ms" if name in base else "-"))
    return rows


def ui_rate(studio, seconds: float) -> float:
    """UI frames drawn per second over ``seconds``."""
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        studio.step()
        count += 1
    return count / (time.perf_counter() - start)


def orbit_rate(studio, seconds: float, degrees: float = 2.0) -> tuple[float, float]:
    """(viewport images shown per second, UI frames per second) while the camera turns ``degrees`` every UI
    frame, as a mouse drag turns it: what a user sees while orbiting."""
    viewport = studio.viewport
    shown, frames, last = 0, 0, viewport.latest_frame
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        studio.note_input()
        viewport.camera.orbit(degrees, 0)
        studio.step()
        frames += 1
        if viewport.latest_frame is not last:
            shown, last = shown + 1, viewport.latest_frame
    elapsed = time.perf_counter() - start
    studio.settle()
    return shown / elapsed, frames / elapsed


def orbit_rows(studio, seconds: float, count: str) -> list[tuple[str, str, str]]:
    """Orbiting as the studio draws it (half resolution, thinned while moving) against every frame drawn in
    full (resolution and splats), alternating halves so that both see the same load."""
    viewport = studio.viewport
    normal = (viewport.moving_scale, viewport.moving_splats)
    rates = {True: [], False: []}
    for k in range(4):
        reduced = k % 2 == 0
        viewport.moving_scale, viewport.moving_splats = normal if reduced else (1.0, 10**9)
        rates[reduced].append(orbit_rate(studio, seconds / 4))
    viewport.moving_scale, viewport.moving_splats = normal
    size = f"{viewport.camera.width}x{viewport.camera.height}"

    def mean(values, k):
        return sum(v[k] for v in values) / len(values)

    return [(f"viewport images/s while orbiting ({count}, {size} viewport)",
             f"{mean(rates[True], 0):.1f} (UI {mean(rates[True], 1):.1f} frames/s)",
             f"{mean(rates[False], 0):.1f} every frame full (UI {mean(rates[False], 1):.1f})")]


def ui_frame_cost(studio, frames: int = 30) -> tuple[float, float]:
    """(median wall ms, mean CPU ms of the whole process) of one ``render_dearpygui_frame`` with nothing
    changing: the fixed cost of a UI frame (widgets and the viewport texture; on a software GL, pixels)."""
    import dearpygui.dearpygui as dpg

    walls, cpu = [], time.process_time()
    for _ in range(frames):
        start = time.perf_counter()
        dpg.render_dearpygui_frame()
        walls.append(time.perf_counter() - start)
    return 1000 * statistics.median(walls), 1000 * (time.process_time() - cpu) / frames


def training_setup(tmp):
    """A preview-sized run on a synthetic subject: (config overrides, prepare function, photo path)."""
    from PIL import Image

    from core.synthetic import synthetic_subject

    def prepare(photo, out_dir, config, model, progress, **choices):
        pose = np.zeros(63, np.float32)
        pose[15 * 3 + 2], pose[16 * 3 + 2] = -1.1, 1.1
        return synthetic_subject(model, 256, {"body_pose": pose})

    photo = tmp / "photo.png"
    Image.fromarray(np.full((64, 48, 3), 128, np.uint8)).save(photo)
    overrides = ["frames.num_generated=8", "frames.resolution=128", "frames.motions=['wave', 'dance']",
                 "train.iterations=1000", "avatar.skinning_grid=32", "frames.warmup_iterations=2"]
    return overrides, prepare, photo


def wait_steps(session, steps: int, step=None, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while session.status().step < steps and session.status().active and time.monotonic() < deadline:
        step() if step is not None else time.sleep(0.05)


def bench_studio(changes: int, seconds: float, pose_only: bool = False,
                 window: tuple[int, int] = (1280, 800)) -> list[tuple[str, str, str]]:
    """(row, value, baseline) for the studio rows (``pose_only``: the slider -> screen rows only) in a
    window of ``window`` (width, height) pixels."""
    import statistics
    import tempfile
    from pathlib import Path

    from core.avatar.bundle import save_bundle
    from core.body import BodyModel
    from core.config import load_preset
    from persona_studio.app import Studio
    from persona_studio.session import ReconstructionSession
    from persona_studio.viewport.controller import MOVING_SPLATS

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")  # keep the user's recent list untouched
        overrides, prepare, photo = training_setup(tmp)
        studio = Studio(width=window[0], height=window[1], overrides=overrides, output_dir=tmp / "out")
        studio.build()
        studio.prepare = prepare
        idle_ui = None

        def ms(values):
            return f"{1000 * statistics.median(values):.0f} ms" if values else "n/a"

        for gaussians in (14000, 50000):  # the preview preset's count, and the standard preset's
            _, avatar, body = avatar_scene(gaussians)
            bundle = tmp / f"avatar-{gaussians}"
            save_bundle(bundle, avatar, body, {"betas": np.zeros(body.num_betas, np.float32)})
            studio.open_bundle(bundle)
            studio.step_until(lambda: studio.display is not None and studio.display.label == bundle.name, 120)
            studio.settle()
            if idle_ui is None:
                studio.throttle_when_idle = False  # the pure cost of a frame
                idle_ui = ui_rate(studio, seconds)
            studio.show_tab("Pose")  # the tab a user poses from
            wall, cpu = ui_frame_cost(studio)
            rows.append((f"UI frame, Pose tab, avatar still ({avatar.num_gaussians:,} Gaussians)",
                         f"{wall:.1f} ms ({cpu:.1f} ms CPU)", ""))
            rows += orbit_rows(studio, seconds, f"{avatar.num_gaussians:,} Gaussians")
            latencies = pose_latencies(studio, changes, lambda on: setattr(studio.poser, "quick_preview", on))
            quick, plain = latencies[True], latencies[False]
            count = f"{avatar.num_gaussians:,} Gaussians"
            for k, image in enumerate(("first image", "with pose offsets", "full resolution")):
                rows.append((f"pose slider -> screen, {image} ({count})", ms(quick[k]),
                             f"{ms(plain[k])} without quick preview"))
            rows += stage_rows(quick[3], plain[3], count)
            if avatar.num_gaussians > MOVING_SPLATS:
                latencies = pose_latencies(studio, changes, lambda on: setattr(
                    studio.viewport, "moving_splats", MOVING_SPLATS if on else 10**9))
                thin, whole = latencies[True], latencies[False]
                rows.append((f"pose slider -> screen, with pose offsets, thinned while posing ({count})",
                             ms(thin[1]), f"{ms(whole[1])} with every splat"))
                rows += stage_rows(thin[3], whole[3], count + ", thinned vs every splat")
        rows.append(("load average during these rows", f"{os.getloadavg()[0]:.1f}", ""))
        if pose_only:
            studio.close()
            return rows
        studio.open_photo(photo)
        wait_steps(studio.session, 3, studio.step)
        studio.throttle_when_idle = False  # a user at work: full frame rate
        training_ui = ui_rate(studio, seconds)
        active_rate = studio.session.status().steps_per_second
        studio.throttle_when_idle = True
        studio._last_input = -1e9  # nobody touched the window for a while
        ui_rate(studio, seconds / 2)  # let the rate window forget the full-rate steps
        idle_rate_ui = ui_rate(studio, seconds)
        idle_rate = studio.session.status().steps_per_second
        studio.close()
        rows.append(("UI frames/s (window in use)", f"{training_ui:.1f} while training", f"{idle_ui:.1f} idle"))
        rows.append(("UI frames/s (nobody at the window)", f"{idle_rate_ui:.1f} while training", ""))
        config = load_preset("preview", overrides)
        alone = ReconstructionSession(photo, tmp / "alone", config, prepare=prepare, body=BodyModel.load())
        alone.start()
        wait_steps(alone, 3 + max(3, int(seconds * max(active_rate, 0.2))))
        alone_rate = alone.status().steps_per_second
        alone.close()
        name = "training it/s (preview preset, 13.7k Gaussians)"
        rows.append((name + ", window in use", f"{active_rate:.2f}", f"{alone_rate:.2f} without a window"))
        rows.append((name + ", nobody at the window", f"{idle_rate:.2f}", f"{alone_rate:.2f} without a window"))
    return rows


def studio_rows_in_child(changes: int, seconds: float, pose_only: bool = False,
                         window: str = "1280x800") -> list[tuple[str, str, str]]:
    """Run ``bench_studio`` in a fresh process: this one has made current EGL contexts on its main
    thread, which the window's GLX context must not meet."""
    import subprocess
    import sys

    display, server = start_display()  # here, so that it is stopped even if the child dies of an X error
    try:
        command = [sys.executable, __file__, "--studio-rows", "--changes", str(changes), "--seconds", str(seconds),
                   "--window", window]
        child = subprocess.run(command + (["--pose-only"] if pose_only else []), capture_output=True, text=True,
                               env=dict(os.environ, DISPLAY=display))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    rows = [tuple(json.loads(line[4:])) for line in child.stdout.splitlines() if line.startswith("ROW ")]
    if child.returncode != 0 or not rows:
        raise SystemExit(f"the studio rows failed:\n{child.stderr[-3000:]}")
    return rows


def print_renderer_rows(args) -> None:
    print("\n| splats | image | case | median ms | median FPS | best ms | best FPS |\n|---:|---:|---|---:|---:|---:|---:|")
    for count in args.counts:
        for name, (median, best) in bench_case(count, args.size, args.frames, args.engine):
            print(f"| {count:,} | {args.size}² | {name} | {1000 * median:.1f} | {1 / median:.1f} | "
                  f"{1000 * best:.1f} | {1 / best:.1f} |")
    for name, count, (median, best) in bench_avatar(args.size, args.frames):
        print(f"| {count:,} | {args.size}² | {name} | {1000 * median:.1f} | {1 / median:.1f} | "
              f"{1000 * best:.1f} | {1 / best:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[20000, 50000])
    parser.add_argument("--size", type=int, default=512, help="square image side, pixels")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per row (median)")
    parser.add_argument("--engine", action="store_true", help="also time core.render.rasterize (CPU backend)")
    parser.add_argument("--no-studio", action="store_true", help="skip the rows that run the studio app")
    parser.add_argument("--changes", type=int, default=8, help="pose slider changes per latency row")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per UI frame-rate row")
    parser.add_argument("--pose-only", action="store_true",
                        help="only the studio's pose slider -> screen rows (no renderer rows, no training)")
    parser.add_argument("--window", default="1280x800", help="studio window WIDTHxHEIGHT (877x556: a 512x512 viewport)")
    parser.add_argument("--studio-rows", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    keep_freed_memory()  # as the command line that starts the studio
    if args.studio_rows:
        width, height = (int(v) for v in args.window.split("x"))
        for row in bench_studio(args.changes, args.seconds, args.pose_only, (width, height)):
            print("ROW " + json.dumps(row), flush=True)
        return

    probe = SplatRenderer(8, 8, backend="gl")
    gl = f"{probe.ctx.info['GL_RENDERER']} ({probe.ctx.info['GL_VERSION']})"
    probe.release()
    probe = SplatRenderer(8, 8)
    studio_backend = probe.backend
    probe.release()
    print(f"GL: {gl}; CPU cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}; "
          f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'default')}; studio backend (auto): {studio_backend}")
    if not args.pose_only:
        print_renderer_rows(args)
    if not args.no_studio:
        print(f"\n| studio ({args.window} window) | measured | baseline (same run) |\n|---|---:|---:|")
        for name, value, baseline in studio_rows_in_child(args.changes, args.seconds, args.pose_only, args.window):
            print(f"| {name} | {value} | {baseline} |")
        print(f"\nload average after the run: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
