"""Turntable export speed and memory, against a naive exporter measured in the same run.

    python benchmarks/export.py            # 120 frames at 512^2, ~55k Gaussians, + memory rows
    python benchmarks/export.py --quick    # 24 frames at 256^2, no memory rows

Rows (each in a fresh process):
  streamed mp4     render_turntable -> .mp4: RGB-only rasterizing, one torch thread, frames encoded
                   as they come (what `persona-studio turntable` runs)
  streamed png     the same frames into a PNG sequence (encoder cost for comparison)
  naive mp4        render_posed (all 10 channels, torch's default threads), every frame kept in a
                   list, encoded at the end -- the obvious first implementation
  animation        render_animation of the built-in `wave` (120 frames at 30 fps) -> .mp4, refined
                   (pose offsets from the MLP every frame) vs base (no pose network): posing cost
  memory           streamed mp4 at 60 vs 240 frames (and the naive one, unless --quick): resident
                   memory growth during the export (max over per-frame samples minus the RSS before
                   it) must not grow with the frame count when streaming
Target (issue 5): 120 frames at 512^2 of a ~50k-Gaussian avatar in <= 60 s on the 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.avatar.bundle import load_bundle, save_bundle
from core.avatar.build import build_avatar
from core.avatar.render import pose_avatar, render_posed
from core.body import BodyModel
from core.camera import intrinsics
from core.config import AvatarConfig, ExportConfig, RenderConfig
from core.export import pose_params, render_animation, render_turntable
from core.export.framing import fit_focal, orbit_view, union_center
from core.export.video import open_frame_writer
from core.io.images import to_uint8
from core.motion import load_builtin
from core.synthetic import striped_colors

CPU = RenderConfig(backend="cpu")


def make_bundle(folder: Path, num_gaussians: int) -> int:
    body = BodyModel.load()
    avatar = build_avatar(body, np.zeros(body.num_betas), AvatarConfig(num_gaussians=num_gaussians))
    with torch.no_grad():
        avatar.colors.copy_(torch.as_tensor(striped_colors(avatar.template.numpy(), avatar.part_labels.numpy())))
    save_bundle(folder, avatar, body, {"betas": np.zeros(body.num_betas, np.float32)})
    return avatar.num_gaussians


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc), MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1024**2


class RssWatch:
    """Largest resident memory seen at the sample points (called once per frame)."""

    def __init__(self):
        self.start = self.peak = rss_mb()

    def __call__(self, *_) -> None:
        self.peak = max(self.peak, rss_mb())


def naive_turntable(avatar, body, manifest, output: Path, export: ExportConfig, watch: RssWatch) -> tuple[float, float]:
    """The same orbit, rendered with render_posed, all frames held in memory, encoded at the end."""
    with torch.no_grad():
        posed = pose_avatar(avatar, body, pose_params("apose", manifest, body), refined=True)
    center = union_center([posed.means])
    views = [orbit_view(center, export.distance, export.elevation, k, export.frames)
             for k in range(export.frames)]
    size = export.resolution
    K = intrinsics(fit_focal(((posed.means, view) for view in views), size, size), size, size)
    start = time.perf_counter()
    frames = []
    with torch.no_grad():
        for view in views:
            frames.append(to_uint8(render_posed(posed, view, K, size, size, CPU, torch.ones(3)).rgb.numpy()))
            watch()
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    with open_frame_writer(output, size, size, export.fps) as writer:
        for frame in frames:
            writer.write(frame)
            watch()
    return render_s, time.perf_counter() - start


def child(mode: str, bundle: Path, frames: int, size: int, out_dir: Path) -> dict:
    """One measured run in this process; returns its numbers."""
    avatar, body, manifest = load_bundle(bundle)
    export = ExportConfig(resolution=size, frames=frames)
    output = out_dir / (f"{mode}_{frames}" + ("" if mode == "png" else ".mp4"))
    watch = RssWatch()
    start = time.perf_counter()
    if mode == "naive":
        render_s, encode_s = naive_turntable(avatar, body, manifest, output, export, watch)
    elif mode.startswith("anim"):
        motion = load_builtin("wave").slice(0, frames)
        result = render_animation(avatar, body, manifest, motion, output, export, CPU, refined=mode == "anim",
                                  progress=watch)
        render_s, encode_s = result.render_s, result.encode_s
    else:
        result = render_turntable(avatar, body, manifest, output, export, CPU, progress=watch)
        render_s, encode_s = result.render_s, result.encode_s
    total = time.perf_counter() - start
    return {"total_s": total, "render_ms": 1000 * render_s / frames, "encode_ms": 1000 * encode_s / frames,
            "rss_before_mb": watch.start, "rss_growth_mb": watch.peak - watch.start}


def run_child(mode: str, bundle: Path, frames: int, size: int, out_dir: Path) -> dict:
    command = [sys.executable, __file__, "--child", mode, str(bundle), str(frames), str(size), str(out_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=5, metavar=("MODE", "BUNDLE", "FRAMES", "SIZE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, bundle, frames, size, out_dir = args.child
        print(json.dumps(child(mode, Path(bundle), int(frames), int(size), Path(out_dir))))
        return

    frames, size = (24, 256) if args.quick else (120, 512)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        count = make_bundle(tmp / "avatar", 50000)
        print(f"turntable, {frames} frames at {size}^2, {count} Gaussians, {torch.get_num_threads()} torch threads "
              f"by default, CPU backend")
        print(f"{'run':<22}{'total s':>9}{'render ms/f':>13}{'encode ms/f':>13}{'RSS before MB':>15}"
              f"{'RSS growth MB':>15}")
        rows = [("streamed mp4", "mp4", frames), ("streamed png", "png", frames), ("naive mp4", "naive", frames)]
        if not args.quick:
            rows += [("animation refined", "anim", 120), ("animation base", "anim_base", 120),
                     ("memory: streamed 60", "mp4", 60), ("memory: streamed 240", "mp4", 240),
                     ("memory: naive 60", "naive", 60), ("memory: naive 240", "naive", 240)]
        for label, mode, count_frames in rows:
            r = run_child(mode, tmp / "avatar", count_frames, size, tmp)
            print(f"{label:<22}{r['total_s']:>9.1f}{r['render_ms']:>13.0f}{r['encode_ms']:>13.1f}"
                  f"{r['rss_before_mb']:>15.0f}{r['rss_growth_mb']:>15.0f}", flush=True)
        mp4 = tmp / f"mp4_{frames}.mp4"
        print(f"mp4 size: {mp4.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
