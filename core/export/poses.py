"""Which pose an export shows: named poses, a motion frame, or the photo's fitted pose.

Everything here returns ``BodyModel.forward`` keyword arguments as ``[1, k]`` (or ``[T, k]``)
float32 tensors, with the avatar's subject shape (betas, expression) filled in: the avatar's
Gaussians follow the body model's shape change, so posing it with another shape would distort it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from core.avatar.build import body_params
from core.body import BodyModel, star_pose, zero_pose
from core.body.skeleton import JOINT_INDEX
from core.errors import UserError
from core.motion import MOTION_SUFFIXES, POSE_FIELDS, Motion, builtin_motions, load_builtin, load_motion, resample

A_POSE_ARM_DROP = np.pi / 4  # radians each upper arm is lowered from the T-pose
NAMED_POSES = ("apose", "tpose", "canonical", "photo")
POSE_HELP = "apose | tpose | canonical (the star pose) | photo (the fitted pose) | motion:NAME:FRAME"
PoseSpec = str | dict  # a POSE_HELP name, or the pose's arrays ({argument: [k]}): see pose_params


def pose_label(spec: PoseSpec) -> str:
    """How messages name a pose spec: its name, or "custom" for a pose given by its arrays."""
    return spec if isinstance(spec, str) else "custom"


def a_pose() -> dict[str, np.ndarray]:
    """The T-pose with both upper arms lowered by ``A_POSE_ARM_DROP`` -> ``{name: [3 * joints]}``.

    The left arm lies along +x, so turning the left shoulder by -angle about z lowers it; the right
    arm mirrors that.
    """
    pose = zero_pose()
    body = pose["body_pose"].reshape(-1, 3)
    body[JOINT_INDEX["left_shoulder"] - 1] = (0.0, 0.0, -A_POSE_ARM_DROP)
    body[JOINT_INDEX["right_shoulder"] - 1] = (0.0, 0.0, A_POSE_ARM_DROP)
    return pose


def subject_shape(manifest: dict, body: BodyModel) -> dict[str, torch.Tensor]:
    """The avatar's ``betas [1, num_betas]`` and, when fitted, ``expression [1, num_expression]``.

    Coefficients beyond the body model's count are dropped and missing ones are zero, as when the
    avatar was built.
    """
    subject = manifest.get("subject") or {}
    shape = {}
    for key, count in (("betas", body.num_betas), ("expression", body.num_expression)):
        if key in subject:
            shape[key] = resized(torch.as_tensor(np.asarray(subject[key], np.float32).reshape(1, -1)), count)
    shape.setdefault("betas", torch.zeros(1, body.num_betas))
    return shape


def resized(values: torch.Tensor, count: int) -> torch.Tensor:
    """``values [T, k]`` cut or zero-padded to ``[T, count]`` (shape/expression coefficient counts differ
    between fits, clips and body models; the leading coefficients carry the most)."""
    out = torch.zeros(values.shape[0], count, dtype=torch.float32)
    width = min(count, values.shape[1])
    out[:, :width] = values[:, :width]
    return out


def resolve_motion(name_or_path: str) -> Motion:
    """A built-in motion by name (``wave``), or by path an AMASS-style ``.npz`` clip or a ``.bvh`` file (retargeted
    onto SMPL-X)."""
    if name_or_path in builtin_motions():
        return load_builtin(name_or_path)
    path = Path(name_or_path)
    if path.suffix.lower() in MOTION_SUFFIXES or path.exists():
        return load_motion(path)
    raise UserError(f"unknown motion {name_or_path!r}: give a .npz or .bvh file or one of "
                    f"{', '.join(builtin_motions())}")


def pose_params(spec: PoseSpec, manifest: dict, body: BodyModel) -> dict[str, torch.Tensor]:
    """``[1, k]`` body-model arguments for a pose spec (``POSE_HELP``), with the subject's shape.

    ``photo`` is the pose fitted to the input photo, without its translation (exports frame the
    body themselves); ``motion:NAME:FRAME`` is frame FRAME (negative counts from the end) of a
    built-in motion or ``.npz``/``.bvh`` clip, with its translation. A dict is the pose itself
    (``{argument: [k] array}``, e.g. the studio's Pose tab); an ``expression`` in it replaces the subject's.
    """
    if isinstance(spec, dict):
        return with_shape(body_params(spec), manifest, body)
    if spec.startswith("motion:"):
        name, _, index = spec[len("motion:"):].rpartition(":")
        try:
            frame = int(index)
        except ValueError:
            raise UserError(f"pose {spec!r}: expected motion:NAME:FRAME with a frame number") from None
        motion = resolve_motion(name)
        if not -motion.num_frames <= frame < motion.num_frames:
            raise UserError(f"pose {spec!r}: motion {motion.name!r} has frames 0..{motion.num_frames - 1}")
        return motion_params(motion, [frame % motion.num_frames], manifest, body)
    if spec == "photo":
        subject = manifest.get("subject") or {}
        fitted = {k: v for k, v in subject.items() if k in POSE_FIELDS}
        if not fitted:
            raise UserError("pose 'photo': this avatar's manifest has no fitted pose")
        return with_shape(body_params(fitted), manifest, body)
    poses = {"apose": a_pose, "tpose": zero_pose, "canonical": star_pose}
    if spec not in poses:
        raise UserError(f"unknown pose {spec!r}; use {POSE_HELP}")
    return with_shape(body_params(poses[spec]()), manifest, body)


def with_shape(params: dict[str, torch.Tensor], manifest: dict, body: BodyModel) -> dict[str, torch.Tensor]:
    """``params`` (``[T, k]``) plus the subject's betas, and its expression unless the pose brings one."""
    shape = subject_shape(manifest, body)
    count = next(iter(params.values())).shape[0] if params else 1
    out = {k: v.float() for k, v in params.items()}
    if "expression" in out:
        out["expression"] = resized(out["expression"], body.num_expression)
    for key, value in shape.items():
        if key not in out:
            out[key] = value.expand(count, -1)
    out["betas"] = shape["betas"].expand(count, -1)  # a motion's performer shape never replaces the avatar's
    return out


def motion_at_fps(motion: Motion, fps: float | None) -> Motion:
    """``motion`` resampled to ``fps`` frames/s (None or the same rate: unchanged)."""
    if fps is None or abs(float(fps) - motion.fps) < 1e-9:
        return motion
    return resample(motion, fps)


def motion_params(motion: Motion, indices, manifest: dict, body: BodyModel) -> dict[str, torch.Tensor]:
    """Frames ``indices`` (ints) of ``motion`` as ``[len(indices), k]`` body-model arguments, subject shape included."""
    rows = np.asarray(indices, dtype=np.int64).reshape(-1)
    keys = [*POSE_FIELDS, "transl"] + (["expression"] if motion.expression is not None else [])
    return with_shape({k: torch.as_tensor(getattr(motion, k)[rows]) for k in keys}, manifest, body)


def body_in_motion(motion: Motion, indices, manifest: dict, body: BodyModel,
                   chunk: int = 32) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """The posed body for motion frames ``indices``, ``chunk`` frames at a time (bounded memory).

    Yields ``(which, vertices [c, V, 3], roots [c, 3])`` in metres, ``which`` the positions in ``indices``.
    """
    rows = np.asarray(indices, dtype=np.int64).reshape(-1)
    for start in range(0, len(rows), chunk):
        which = slice(start, min(start + chunk, len(rows)))
        with torch.no_grad():
            out = body(**motion_params(motion, rows[which], manifest, body))
        yield which, out.vertices, out.joints[:, 0]
