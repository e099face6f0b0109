"""Turntable videos: the camera circles the avatar once, in a fixed pose or while it plays a motion."""
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
    stream_frames,
)
from core.export.framing import fit_focal, orbit_view, union_center
from core.export.poses import PoseSpec, body_in_motion, motion_at_fps, motion_params, pose_params
from core.export.video import frame_size, open_frame_writer, output_kind
from core.motion import Motion
from core.threads import single_torch_thread


@single_torch_thread()
def render_turntable(avatar: Avatar, body: BodyModel, manifest: dict, output: str | Path,
                     export: ExportConfig | None = None, render: RenderConfig | None = None, pose: PoseSpec = "apose",
                     motion: Motion | None = None, refined: bool = True,
                     progress: Progress | None = None) -> VideoResult:
    """Write a full 360-degree orbit of ``avatar`` to ``output`` (.mp4, .webm, .gif, PNG folder or pattern).

    ``export`` gives the frame count, square resolution (pixels), fps, camera elevation (degrees) and
    distance (metres) and the background (or transparent: RGBA frames for .webm and PNGs); ``pose`` is a
    spec of ``core.export.poses.pose_params``.
    With ``motion`` the avatar plays it instead (resampled to the video's fps, looping at its natural
    speed) while the camera turns. The orbit is centred on the posed avatar's bounding box; the
    focal length is the largest that keeps the avatar inside every frame. ``progress(fraction)`` is
    called after each frame.
    """
    export = export or ExportConfig()
    render = render or RenderConfig()
    if export.frames <= 0:
        raise UserError(f"a turntable needs at least one frame, got {export.frames}")
    width, height = frame_size(output_kind(output), export.resolution, export.resolution)
    background = frame_background(export)  # None: transparent
    count = export.frames

    if motion is None:
        with torch.no_grad():
            posed = pose_avatar(avatar, body, pose_params(pose, manifest, body), refined)
        center = union_center([posed.means])
        views = [orbit_view(center, export.distance, export.elevation, k, count) for k in range(count)]
        focal = fit_focal(((posed.means, view) for view in views), width, height)

        def posed_at(index: int):
            return posed
    else:
        motion = motion_at_fps(motion, export.fps)
        rows = np.arange(count) % motion.num_frames
        center = union_center(vertices for _, vertices, _ in body_in_motion(motion, rows, manifest, body))
        views = [orbit_view(center, export.distance, export.elevation, k, count) for k in range(count)]
        focal = fit_focal(((vertices[i], views[which.start + i])
                           for which, vertices, _ in body_in_motion(motion, rows, manifest, body)
                           for i in range(vertices.shape[0])), width, height)

        def posed_at(index: int):
            with torch.no_grad():
                return pose_avatar(avatar, body, motion_params(motion, [rows[index]], manifest, body), refined)

    K = intrinsics(focal, width, height)
    with open_frame_writer(output, width, height, export.fps, export.transparent) as writer:
        render_s, encode_s = stream_frames(
            writer, count, lambda k: render_rgb8(posed_at(k), views[k], K, width, height, render, background),
            progress)
    return VideoResult(Path(output), count, width, height, float(export.fps), render_s, encode_s)

