"""Rendering export frames and streaming them into a writer, with timing and progress."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.avatar.avatar import PosedGaussians
from core.camera import camera_center
from core.config import ExportConfig, RenderConfig
from core.errors import UserError
from core.io.images import to_uint8
from core.render import rasterize

Progress = Callable[[float], None]
MESH_GREY = 0.72  # albedo of the shaded body mesh in side-by-side videos
MESH_LIGHT = {"ambient": 0.35, "diffuse": 0.65}


@dataclass
class VideoResult:
    """What a video export wrote and where the time went (seconds)."""

    path: Path
    frames: int
    width: int
    height: int
    fps: float
    render_s: float  # posing + rasterizing (+ mesh panel)
    encode_s: float  # the writer: colour conversion, encoding, file writes


def background_color(values) -> torch.Tensor:
    """``[3]`` RGB in [0, 1] from three numbers; ``UserError`` otherwise."""
    color = torch.as_tensor(np.asarray(values, dtype=np.float32).reshape(-1))
    if color.numel() != 3 or not bool(((color >= 0) & (color <= 1)).all()):
        raise UserError(f"background must be three numbers in [0, 1] (r,g,b), got {list(np.asarray(values).ravel())}")
    return color


def frame_background(export: ExportConfig) -> torch.Tensor | None:
    """The export's background ``[3]`` (``background_color``), or None for transparent frames."""
    return None if export.transparent else background_color(export.background)


def straight_rgba8(premultiplied: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colours composited over black ``[H, W, 3]`` and their coverage ``[H, W]`` (floats in [0, 1]) as RGBA with
    straight (unpremultiplied) alpha, the convention of PNG and VP9 -> ``[H, W, 4]`` uint8.

    Colour is divided out where the pixel is at least half an alpha step covered; fully clear pixels are black."""
    alpha = np.clip(alpha, 0.0, 1.0)
    seen = alpha >= 0.5 / 255.0
    colour = np.where(seen[..., None], premultiplied / np.where(seen, alpha, 1.0)[..., None], 0.0)
    return np.concatenate([to_uint8(colour), to_uint8(alpha)[..., None]], axis=-1)


def render_rgb8(posed: PosedGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                config: RenderConfig, background: torch.Tensor | None) -> np.ndarray:
    """The RGB image of ``posed`` over ``background [3]`` -> ``[height, width, 3]`` uint8, or with
    ``background`` None the RGBA image (straight alpha) -> ``[height, width, 4]`` uint8.

    Same rasterizer settings as ``core.avatar.render.render_posed`` but colours only: the extra part,
    normal and depth channels that the trainer needs cost ~2x the time per frame here.
    """
    behind = torch.zeros(3) if background is None else background
    with torch.no_grad():
        image, alpha, _ = rasterize(posed.means, posed.quats, posed.scales, posed.opacities, posed.colors,
                                    viewmat[None].to(posed.means.dtype), K[None].to(posed.means.dtype), width,
                                    height, eps2d=config.eps2d, backgrounds=behind[None].to(posed.means.dtype),
                                    render_mode="RGB", rasterize_mode=config.rasterize_mode, backend=config.backend)
    if background is None:
        return straight_rgba8(image[0].cpu().numpy(), alpha[0, ..., 0].cpu().numpy())
    return to_uint8(image[0].cpu().numpy())


def shaded_mesh_rgb8(renderer, vertices: np.ndarray, faces: np.ndarray, viewmat: torch.Tensor, K: torch.Tensor,
                     width: int, height: int, background: torch.Tensor | None) -> np.ndarray:
    """The body mesh ``vertices [V, 3]`` shaded grey, lit from the camera and above -> uint8 ``[H, W, 3]``, or
    with ``background`` None RGBA (straight alpha) ``[H, W, 4]``.

    ``renderer`` is a ``core.render.mesh.MeshRenderer`` owned by the calling thread.
    """
    view = viewmat.double().numpy()
    towards_camera = camera_center(view) - vertices.mean(axis=0)
    up = np.array([0.0, 1.0, 0.0])
    direction = towards_camera / np.linalg.norm(towards_camera) + 0.5 * up
    out = renderer.render(vertices, faces, view, K.double().numpy(), width, height,
                          vertex_attrs={"albedo": np.full((len(vertices), 3), MESH_GREY, np.float32)},
                          light={"direction": direction, **MESH_LIGHT},
                          background=0.0 if background is None else background.numpy(), ssaa=2)
    if background is None:
        return straight_rgba8(out["shaded"], out["mask"])
    return to_uint8(out["shaded"])


def stream_frames(writer, count: int, make_frame: Callable[[int], np.ndarray],
                  progress: Progress | None = None) -> tuple[float, float]:
    """Write ``make_frame(k)`` for k = 0..count-1 into ``writer``; returns ``(render_s, encode_s)``."""
    render_s = encode_s = 0.0
    for index in range(count):
        start = time.perf_counter()
        frame = make_frame(index)
        middle = time.perf_counter()
        writer.write(frame)
        render_s += middle - start
        encode_s += time.perf_counter() - middle
        if progress is not None:
            progress((index + 1) / count)
    return render_s, encode_s
