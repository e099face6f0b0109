"""Offline generated frames: the photo-textured fitted body re-posed along built-in motions.

PERSONA trains on frames from a pose-guided video diffusion model. Offline we re-pose the body
(coloured from the photo) along driving motions and render RGB + mask + depth + normal + part
segmentation with a fixed camera while the motion's root moves, like the paper's cameras. These
frames add little new appearance but exact geometry, which is why the trainer gives them low RGB
weight and high geometry weight.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from core.avatar.avatar import Avatar
from core.avatar.build import body_params
from core.avatar.render import pose_avatar
from core.body import PART_PALETTE, BodyModel
from core.camera import intrinsics, look_at
from core.config import FramesConfig
from core.frames.frameset import FrameSet
from core.motion import load_builtin
from core.render.mesh import MeshRenderer


def body_extent(avatar: Avatar) -> tuple[float, float]:
    """(centre height, height) of the canonical avatar in metres (y axis)."""
    y = avatar.shaped_zero[:, 1]
    return float((y.min() + y.max()) / 2), float(y.max() - y.min())


def front_camera(resolution: int, distance: float, center_y: float, height: float,
                 fill: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Fixed camera on +z looking at the body: ``viewmat [4, 4]``, ``K [3, 3]``.

    The focal length makes ``fill`` times the body height span the image.
    """
    focal = resolution * distance / (fill * height)
    view = look_at(torch.tensor([0.0, center_y, distance]), torch.tensor([0.0, center_y, 0.0]))
    return view.numpy(), intrinsics(focal, resolution, resolution).numpy()


def motion_schedule(names: list[str], count: int) -> list[tuple[str, int]]:
    """``count`` (motion, frame) pairs spread evenly over the named built-in motions."""
    motions = {name: load_builtin(name) for name in names}
    per = np.array_split(np.arange(count), len(names))
    schedule = []
    for name, part in zip(names, per):
        frames = motions[name].num_frames
        # Clips loop, so spread picks over [0, frames) without repeating the first frame at the end.
        schedule += [(name, int(i * frames // len(part))) for i in range(len(part))]
    return schedule


def generate_frames(avatar: Avatar, body: BodyModel, subject_params: dict[str, np.ndarray], config: FramesConfig,
                    progress: Callable[[float], None] | None = None) -> FrameSet:
    """Render ``config.num_generated`` frames of the (untrained) avatar's surface along the motions.

    ``subject_params`` supplies betas and expression; each motion frame supplies the pose.
    """
    renderer = MeshRenderer()
    center_y, height = body_extent(avatar)
    viewmat, K = front_camera(config.resolution, config.camera_distance, center_y, height)
    schedule = motion_schedule(config.motions, config.num_generated)
    motions = {name: load_builtin(name) for name in set(config.motions)}
    colors = avatar.colors.detach().clamp(0, 1).numpy()
    parts = PART_PALETTE[avatar.part_labels.numpy()]
    faces = avatar.faces.numpy()
    frames, labels = [], []
    for k, (name, index) in enumerate(schedule):
        params = {key: np.asarray(v, np.float32).reshape(-1) for key, v in motions[name].frame(index).items()
                  if key != "expression"}
        params.update({key: np.asarray(subject_params[key], np.float32).reshape(-1)
                       for key in ("betas", "expression") if key in subject_params})
        with torch.no_grad():
            posed = pose_avatar(avatar, body, body_params(params), refined=False)
        out = renderer.render(posed.means.numpy(), faces, viewmat, K, config.resolution, config.resolution,
                              vertex_attrs={"rgb": colors, "part": parts}, flat_attrs=("part",))
        mask = out["mask"][..., None]
        frames.append({"rgb": out["rgb"] * mask, "mask": mask, "depth": out["depth"], "normal": out["normal"],
                       "part_seg": out["part"] * mask, "K": K, "viewmat": viewmat, "params": params})
        labels.append(f"{name}:{index}")
        if progress is not None:
            progress((k + 1) / len(schedule))
    renderer.close()
    return FrameSet.from_frames(frames, source="generated", labels=labels)
