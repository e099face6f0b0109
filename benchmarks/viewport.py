"""Viewport renderer speed: frames per second of the OpenGL splat renderer, against baselines measured
in the same run.

    python benchmarks/viewport.py                  # 20k and 50k splats at 512^2
    python benchmarks/viewport.py --size 1024 --counts 20000
    python benchmarks/viewport.py --engine         # also the engine's CPU rasterizer, same scene and camera

Scene: the studio's demo figure (splats on a 1.75 m human-like figure, sizes from the local spacing),
framed like the viewport frames it. Rows, each the median and the fastest of ``--frames`` frames after
warm-up:
  readback only   an empty scene: clear the float32 framebuffer, read it into numpy (every frame's floor)
  draw, unsorted  fixed order, no sort (a wrong image where splats overlap; the cost of pixels alone)
  draw, same view what pan / zoom / FOV / background changes cost: the depth order is reused
  orbit           the camera turns a little every frame: numpy argsort + index upload + draw
  orbit, half     the same at half the image side, what the studio renders while the camera moves
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from persona_studio.camera import Camera
from persona_studio.viewport.demo_figure import demo_figure
from persona_studio.viewport.gl_renderer import SplatRenderer, back_to_front_order, quad_indices


def median_seconds(fn, frames: int, warmup: int = 2) -> tuple[float, float]:
    """(median, fastest) seconds of ``fn()`` over ``frames`` calls; on a shared CPU the fastest is the
    better estimate of the uncontended speed, the median of what a user sees."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def bench_case(count: int, size: int, frames: int, engine: bool) -> list[tuple[str, tuple[float, float]]]:
    scene = demo_figure(count)
    camera = Camera(width=size, height=size)
    camera.frame(*scene.bounds())
    out = np.empty((size, size, 4), np.float32)
    rows = []

    unsorted = SplatRenderer(size, size, sort=False)
    rows.append(("readback only", median_seconds(lambda: unsorted.render(camera.viewmat(), camera.K(), out=out), frames)))
    unsorted.set_scene(scene)
    rows.append(("draw, unsorted", median_seconds(lambda: unsorted.render(camera.viewmat(), camera.K(), out=out), frames)))
    unsorted.release()

    renderer = SplatRenderer(size, size)
    renderer.set_scene(scene)
    rows.append(("draw, same view", median_seconds(lambda: renderer.render(camera.viewmat(), camera.K(), out=out), frames)))

    def orbit_frame():
        camera.orbit(4, 0)
        renderer.render(camera.viewmat(), camera.K(), out=out)

    rows.append(("orbit (sort + draw)", median_seconds(orbit_frame, frames)))
    half = SplatRenderer(size // 2, size // 2)
    half.set_scene(scene)
    half_camera = Camera(width=size // 2, height=size // 2)
    half_camera.frame(*scene.bounds())
    half_out = np.empty((size // 2, size // 2, 4), np.float32)

    def half_orbit_frame():
        half_camera.orbit(4, 0)
        half.render(half_camera.viewmat(), half_camera.K(), out=half_out)

    rows.append(("orbit at half size (UI while moving)", median_seconds(half_orbit_frame, frames)))
    half.release()
    rows.append(("  of which sort + indices", median_seconds(
        lambda: quad_indices(back_to_front_order(scene.means, camera.viewmat())), frames)))
    renderer.release()

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[20000, 50000])
    parser.add_argument("--size", type=int, default=512, help="square image side, pixels")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per row (median)")
    parser.add_argument("--engine", action="store_true", help="also time core.render.rasterize (CPU backend)")
    args = parser.parse_args()

    probe = SplatRenderer(8, 8)
    gl = f"{probe.ctx.info['GL_RENDERER']} ({probe.ctx.info['GL_VERSION']})"
    probe.release()
    print(f"GL: {gl}; CPU cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}; "
          f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'default')}")
    print("\n| splats | image | case | median ms | median FPS | best ms | best FPS |\n|---:|---:|---|---:|---:|---:|---:|")
    for count in args.counts:
        for name, (median, best) in bench_case(count, args.size, args.frames, args.engine):
            print(f"| {count:,} | {args.size}² | {name} | {1000 * median:.1f} | {1 / median:.1f} | "
                  f"{1000 * best:.1f} | {1 / best:.1f} |")


if __name__ == "__main__":
    main()
