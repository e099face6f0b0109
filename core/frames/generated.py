"""Offline generated frames: the photo-warmed avatar re-posed along built-in motions.

PERSONA trains on frames from a pose-guided video diffusion model. Offline we re-pose the avatar
(warmed up on the photo) along driving motions and render RGB + mask + depth + normal + part
segmentation with a fixed camera while the motion's root moves, like the paper's cameras. These
frames add little new appearance but consistent geometry in many poses, which is why the trainer
gives them low RGB weight and high geometry weight. Each frame shows a pose no other frame shows
(``motion_schedule``): a repeated pose would only weigh that pose more.

The frames are drawn with the Gaussian rasterizer itself, exactly as training renders the avatar.
Drawn as a triangle mesh through the Gaussians' centres they had a silhouette about one splat
radius tighter and sharper normals than any Gaussian render: the mask and normal terms then shrank
the avatar in every pose, the photo's too (messi5, 100 steps after the warm-up: input-view masked
PSNR 26.7 -> 23.8 dB with mesh-drawn frames, 26.7 dB kept with Gaussian-drawn ones).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from core.avatar.avatar import Avatar
from core.avatar.build import body_params
from core.avatar.render import pose_avatar, render_posed
from core.body import PART_PALETTE, BodyModel
from core.camera import intrinsics, look_at
from core.config import FramesConfig, RenderConfig
from core.frames.frameset import GENERATED_SOURCE, FrameSet, pack_frame
from core.motion import Motion, load_builtin
from core.motion.rotations import axis_angle_to_quat

# Bump when what generate_frames draws changes: cached frames of another version are redrawn.
GENERATOR_VERSION = 4


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


# Two motion frames are one pose when every joint (root included) is within this rotation of its
# counterpart and the root within ROOT_TOLERANCE_M of its place. At the preview's 256² frames one
# pixel is about 9 mm of a 2.3 m tall view, and a 1 degree turn moves a point 0.5 m from the joint
# (a whole arm) about 9 mm: closer poses render within about a pixel of each other.
POSE_TOLERANCE_RAD = float(np.radians(1.0))
ROOT_TOLERANCE_M = 0.01


def motion_poses(motion: Motion) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's pose as ``(rotations [T, 55, 4]`` unit quaternions (w, x, y, z) of all joints,
    root first, ``root [T, 3]`` translation in metres``)``, the form ``same_pose`` compares."""
    rotations = axis_angle_to_quat(motion.full_pose().reshape(motion.num_frames, -1, 3))
    return rotations, motion.transl.astype(np.float64)


def same_pose(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``[N, M]`` bool: pose n of ``a`` and pose m of ``b`` (both as ``motion_poses`` gives them, with
    N and M frames) are one pose: every joint within ``POSE_TOLERANCE_RAD``, the root within
    ``ROOT_TOLERANCE_M`` on each axis."""
    (rot_a, root_a), (rot_b, root_b) = a, b
    # Unit quaternions q, p are within angle t of each other when |<q, p>| >= cos(t / 2) (q and -q agree).
    closest = np.abs(np.einsum("njc,mjc->nmj", rot_a, rot_b)).min(axis=-1)
    root_gap = np.abs(root_a[:, None] - root_b[None]).max(axis=-1)
    return (closest >= np.cos(POSE_TOLERANCE_RAD / 2)) & (root_gap <= ROOT_TOLERANCE_M)


def new_pose_frames(poses: tuple[np.ndarray, np.ndarray], taken: tuple[np.ndarray, np.ndarray]) -> list[int]:
    """Indices of the frames of ``poses`` (``motion_poses`` form, T frames) that show a new pose, in
    order: not ``same_pose`` as any of ``taken`` (K poses, K may be 0) nor as an earlier index kept."""
    rotations, root = poses
    kept_rotations, kept_root = list(taken[0]), list(taken[1])
    kept = []
    for t in range(len(root)):
        frame = (rotations[t:t + 1], root[t:t + 1])
        if kept_root and same_pose(frame, (np.stack(kept_rotations), np.stack(kept_root))).any():
            continue
        kept.append(t)
        kept_rotations.append(rotations[t])
        kept_root.append(root[t])
    return kept


def motion_schedule(names: list[str], count: int, exclude: Sequence[tuple[str, int]] = ()
                    ) -> list[tuple[str, int]]:
    """Up to ``count`` (motion, frame) pairs of distinct poses, spread evenly over the named built-in motions.

    Each motion gets an even share of ``count`` (the first ones one more), spread evenly over its
    frames that show a new pose (``new_pose_frames``): not the same pose as an ``exclude`` pair, a
    pick of an earlier motion or an earlier frame of the clip. Clips repeat their cycle (walk_in_place,
    wave and dance every 30 frames), so evenly spread frame numbers alone repeat poses (24 picks over
    the six built-ins were 16 poses). A motion with fewer new poses than its share gives all of them,
    so the schedule can be shorter than ``count`` (the built-ins hold 349 poses; walk_in_place and
    dance 15 each). Deterministic; with no repeated poses it is the plain even spread
    ``i * frames // share``.
    """
    motions = {name: load_builtin(name) for name in {*names, *(name for name, _ in exclude)}}
    taken = [motion_poses(motions[name].slice(index, index + 1)) for name, index in exclude]
    shares = np.array_split(np.arange(count), len(names))
    schedule = []
    for name, share in zip(names, shares):
        poses = motion_poses(motions[name])
        taken_poses = tuple(np.concatenate([p[i] for p in taken] or [poses[i][:0]]) for i in range(2))
        new = new_pose_frames(poses, taken_poses)
        picks = [new[i * len(new) // len(share)] for i in range(len(share))] if len(share) < len(new) else new
        schedule += [(name, index) for index in picks]
        taken += [(poses[0][picks], poses[1][picks])]
    return schedule


def frame_targets(avatar: Avatar, body: BodyModel, params: dict[str, np.ndarray], viewmat: np.ndarray,
                  K: np.ndarray, size: int, render: RenderConfig) -> dict[str, np.ndarray]:
    """The avatar's base render in pose ``params`` as training targets, all ``[size, size, C]`` float32:
    ``rgb`` premultiplied, ``mask`` (alpha), ``depth`` (metres, 0 where alpha <= 0.5), unit camera-space
    ``normal`` (0 where alpha <= 0.5) and ``part_seg`` in the fixed part palette (premultiplied)."""
    with torch.no_grad():
        posed = pose_avatar(avatar, body, body_params(params), refined=False)
        # The palette, not the learned part colours: the targets name each Gaussian's body part.
        posed.part_colors = torch.as_tensor(PART_PALETTE, dtype=posed.colors.dtype)[avatar.part_labels]
        out = render_posed(posed, torch.as_tensor(viewmat), torch.as_tensor(K), size, size, render, torch.zeros(3))
    alpha = out.alpha.numpy()
    solid = alpha > 0.5
    normal = out.normal.numpy()
    normal = normal / np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-6)
    return {"rgb": out.rgb.numpy(), "mask": alpha, "depth": np.where(solid, out.depth.numpy(), 0.0)[..., 0],
            "normal": np.where(solid, normal, 0.0), "part_seg": out.part.numpy()}


def generate_frames(avatar: Avatar, body: BodyModel, subject_params: dict[str, np.ndarray], config: FramesConfig,
                    render: RenderConfig | None = None, progress: Callable[[float], None] | None = None) -> FrameSet:
    """Render ``config.num_generated`` frames of the avatar (its base render) along the motions.

    ``subject_params`` supplies betas and expression; each motion frame supplies the pose.
    """
    render = RenderConfig() if render is None else render
    center_y, height = body_extent(avatar)
    viewmat, K = front_camera(config.resolution, config.camera_distance, center_y, height)
    schedule = motion_schedule(config.motions, config.num_generated)
    motions = {name: load_builtin(name) for name in set(config.motions)}
    frames, labels = [], []
    for k, (name, index) in enumerate(schedule):
        params = {key: np.asarray(v, np.float32).reshape(-1) for key, v in motions[name].frame(index).items()
                  if key != "expression"}
        params.update({key: np.asarray(subject_params[key], np.float32).reshape(-1)
                       for key in ("betas", "expression") if key in subject_params})
        targets = frame_targets(avatar, body, params, viewmat, K, config.resolution, render)
        frames.append(pack_frame({**targets, "K": K, "viewmat": viewmat, "params": params}))
        labels.append(f"{name}:{index}")
        if progress is not None:
            progress((k + 1) / len(schedule))
    return FrameSet.from_frames(frames, source=GENERATED_SOURCE, labels=labels)
