"""Animation videos: the avatar plays a motion clip, seen by a fixed or a following camera,
optionally next to the shaded body mesh in the same pose."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.avatar.avatar import Avatar
from core.avatar.render import pose_avatar
from core.body import BodyModel
from core.camera import intrinsics
from core.config import ExportConfig, RenderConfig
from core.errors import UserError
from core.export.frames import (
    Progress,
    VideoResult,
    frame_background,
    render_rgb8,
    shaded_mesh_rgb8,
    stream_frames,
)
from core.export.framing import fit_focal, follow_targets, front_view, union_center
from core.export.poses import body_in_motion, motion_at_fps, motion_params
from core.export.video import frame_size, open_frame_writer, output_kind
from core.motion import Motion
from core.threads import single_torch_thread

CAMERAS = ("fixed", "follow")


def camera_path(motion: Motion, manifest: dict, body: BodyModel, camera: str, distance: float,
                elevation_deg: float) -> list[torch.Tensor]:
    """World-to-camera ``[4, 4]`` per frame, in front of the avatar (azimuth 0).

    ``fixed``: one camera aimed at the centre of the bounding box of the whole clip; ``follow``: the
    camera moves with the (smoothed) root joint, keeping that framing.
    """
    if camera not in CAMERAS:
        raise UserError(f"unknown camera {camera!r}; use one of {', '.join(CAMERAS)}")
    rows = np.arange(motion.num_frames)
    roots = []

    def vertex_sets():
        for _, vertices, root in body_in_motion(motion, rows, manifest, body):
            roots.append(root)
            yield vertices

    center = union_center(vertex_sets())
    if camera == "fixed":
        return [front_view(center, distance, elevation_deg)] * motion.num_frames
    targets = follow_targets(torch.cat(roots), center, motion.fps)
    return [front_view(target, distance, elevation_deg) for target in targets]


@single_torch_thread()
def render_animation(avatar: Avatar, body: BodyModel, manifest: dict, motion: Motion, output: str | Path,
                     export: ExportConfig | None = None, render: RenderConfig | None = None, fps: float | None = None,
                     camera: str = "fixed", side_by_side: bool = False, refined: bool = True,
                     progress: Progress | None = None) -> VideoResult:
    """Write ``avatar`` playing ``motion`` to ``output`` (.mp4, .webm, .gif, PNG folder or pattern).

    ``fps`` resamples the clip (None keeps its own rate); one video frame per (resampled) motion
    frame. ``export`` gives the square panel resolution (pixels), camera distance (metres), elevation
    (degrees) and background (or transparent: RGBA frames for .webm and PNGs); ``side_by_side`` puts the
    grey-shaded body mesh in the same pose to the right of the avatar. ``progress(fraction)`` is called after
    each frame.
    """
    export = export or ExportConfig()
    render = render or RenderConfig()
    motion = motion_at_fps(motion, fps)
    panels = 2 if side_by_side else 1
    width, height = frame_size(output_kind(output), export.resolution, export.resolution, panels)
    background = frame_background(export)  # None: transparent
    views = camera_path(motion, manifest, body, camera, export.distance, export.elevation)
    focal = fit_focal(((vertices[i], views[which.start + i])
                       for which, vertices, _ in body_in_motion(motion, np.arange(motion.num_frames), manifest, body)
                       for i in range(vertices.shape[0])), width, height)
    K = intrinsics(focal, width, height)
    faces = body.faces.cpu().numpy()
    renderer = None
    if side_by_side:
        from core.render.mesh import MeshRenderer

        renderer = MeshRenderer()

    def frame(index: int) -> np.ndarray:
        params = motion_params(motion, [index], manifest, body)
        with torch.no_grad():
            posed = pose_avatar(avatar, body, params, refined)
            image = render_rgb8(posed, views[index], K, width, height, render, background)
            if renderer is None:
                return image
            vertices = body(**params).vertices[0].cpu().numpy()
        mesh = shaded_mesh_rgb8(renderer, vertices, faces, views[index], K, width, height, background)
        return np.concatenate([image, mesh], axis=1)

    try:
        with open_frame_writer(output, panels * width, height, motion.fps, export.transparent) as writer:
            render_s, encode_s = stream_frames(writer, motion.num_frames, frame, progress)
    finally:
        if renderer is not None:
            renderer.close()
    return VideoResult(Path(output), motion.num_frames, panels * width, height, motion.fps, render_s, encode_s)
