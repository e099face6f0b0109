"""SMPL-X joint names, the joint-range table, and seeded random plausible poses.

Conventions (SMPL-X canonical frame, y-up): the person faces +z, +x is the person's left, and the
zero pose is a T-pose with palms down. Every joint's axis-angle vector is expressed in that
world-aligned rest frame, so the signs below mean (left side; the right side is the mirror image):

- hip: -x flexes the thigh forward, +z abducts (leg out to the left);
- knee: +x bends the shin backwards; ankle: +x points the toes down;
- spine, neck, head: +x bends forward; +y turns to the person's left;
- collar: +z shrugs; shoulder: -z lowers the arm ("arms down" ~ -1.2), -y swings it forward,
  -x rotates it externally (forearm points up when the elbow is bent);
- elbow: -y bends the forearm forward; wrist: -z flexes the palm down;
- fingers: -z curls towards the palm; the thumb curls about (1, 0, -1)/sqrt(2);
- jaw: +x opens the mouth; eyes: +x looks down, +y looks to the person's left.

Mirroring a left-side rotation (x, y, z) gives the right-side rotation (x, -y, -z), so the table
lists the left side and the centre line once and derives the right side.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import numpy as np

BODY_JOINT_NAMES: tuple[str, ...] = (
    "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar",
    "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
    "right_wrist",
)
"""The 21 joints of ``body_pose`` in SMPL-X order (the pelvis is ``global_orient``)."""

HAND_JOINT_NAMES: tuple[str, ...] = tuple(
    f"{finger}{segment}" for finger in ("index", "middle", "pinky", "ring", "thumb") for segment in (1, 2, 3)
)
"""The 15 joints of one hand's pose in SMPL-X order, without the ``left_`` / ``right_`` prefix."""

LEFT_HAND_JOINT_NAMES = tuple(f"left_{name}" for name in HAND_JOINT_NAMES)
RIGHT_HAND_JOINT_NAMES = tuple(f"right_{name}" for name in HAND_JOINT_NAMES)
FACE_JOINT_NAMES: tuple[str, ...] = ("jaw", "left_eye_smplhf", "right_eye_smplhf")  # smplx's names

POSE_FIELD_JOINTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "body_pose": BODY_JOINT_NAMES,
        "left_hand_pose": LEFT_HAND_JOINT_NAMES,
        "right_hand_pose": RIGHT_HAND_JOINT_NAMES,
        "jaw_pose": ("jaw",),
        "leye_pose": ("left_eye_smplhf",),
        "reye_pose": ("right_eye_smplhf",),
    }
)
"""Body-model keyword argument -> the joints it holds, 3 axis-angle values each."""

# Per-axis ranges of the axis-angle components, radians: ((x_min, x_max), (y_min, y_max), (z_min, z_max)).
# Loose anatomical ranges; a per-axis box, so it does not rule out self-intersection.
_LEFT_AND_CENTRE_LIMITS = {
    "left_hip": ((-2.1, 0.5), (-0.7, 0.7), (-0.35, 0.9)),
    "left_knee": ((-0.05, 2.4), (-0.25, 0.25), (-0.1, 0.1)),
    "left_ankle": ((-0.5, 0.8), (-0.35, 0.35), (-0.4, 0.4)),
    "left_foot": ((-0.7, 0.35), (-0.15, 0.15), (-0.15, 0.15)),
    "spine1": ((-0.35, 0.7), (-0.4, 0.4), (-0.35, 0.35)),
    "spine2": ((-0.3, 0.5), (-0.4, 0.4), (-0.3, 0.3)),
    "spine3": ((-0.3, 0.5), (-0.4, 0.4), (-0.3, 0.3)),
    "neck": ((-0.5, 0.6), (-0.7, 0.7), (-0.4, 0.4)),
    "head": ((-0.5, 0.6), (-0.7, 0.7), (-0.4, 0.4)),
    "left_collar": ((-0.3, 0.3), (-0.45, 0.3), (-0.25, 0.5)),
    "left_shoulder": ((-1.7, 1.3), (-1.7, 0.8), (-1.55, 1.3)),
    "left_elbow": ((-0.9, 0.9), (-2.6, 0.05), (-0.15, 0.15)),
    "left_wrist": ((-0.9, 0.9), (-0.4, 0.6), (-1.2, 1.0)),
    "jaw": ((-0.05, 0.5), (-0.15, 0.15), (-0.15, 0.15)),
    # Eyes turn together, so they share one (unmirrored) range.
    "left_eye_smplhf": ((-0.4, 0.4), (-0.6, 0.6), (-0.05, 0.05)),
    "right_eye_smplhf": ((-0.4, 0.4), (-0.6, 0.6), (-0.05, 0.05)),
}
_FINGER_SEGMENT_LIMITS = {  # left hand; index, middle, ring and pinky share them
    1: ((-0.25, 0.25), (-0.35, 0.35), (-1.6, 0.3)),
    2: ((-0.1, 0.1), (-0.1, 0.1), (-1.9, 0.05)),
    3: ((-0.1, 0.1), (-0.1, 0.1), (-1.4, 0.05)),
}
_THUMB_SEGMENT_LIMITS = {
    1: ((-0.6, 1.0), (-0.6, 0.6), (-1.0, 0.5)),
    2: ((-0.3, 0.9), (-0.4, 0.4), (-0.9, 0.3)),
    3: ((-0.3, 1.0), (-0.3, 0.3), (-1.0, 0.3)),
}


def mirror_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    """Left/right mirror image of rotations ``[..., 3]``: reflecting x flips the y and z components."""
    return np.asarray(axis_angle) * np.array([1.0, -1.0, -1.0], dtype=np.asarray(axis_angle).dtype)


def _mirror_range(limits):
    (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi) = limits
    return ((x_lo, x_hi), (-y_hi, -y_lo), (-z_hi, -z_lo))


def _build_limit_table() -> dict[str, tuple[tuple[float, float], ...]]:
    left = dict(_LEFT_AND_CENTRE_LIMITS)
    for name in HAND_JOINT_NAMES:
        table = _THUMB_SEGMENT_LIMITS if name.startswith("thumb") else _FINGER_SEGMENT_LIMITS
        left[f"left_{name}"] = table[int(name[-1])]
    table = dict(left)
    for name, limits in left.items():
        if name.startswith("left_") and not name.startswith("left_eye"):
            table["right_" + name[len("left_"):]] = _mirror_range(limits)
    return table


JOINT_LIMITS: Mapping[str, tuple[tuple[float, float], ...]] = MappingProxyType(_build_limit_table())
"""Joint name -> ((x_min, x_max), (y_min, y_max), (z_min, z_max)) of its axis-angle vector, radians.

Keys are smplx's joint names: the 21 body joints, 2 x 15 hand joints (``left_index1`` ...), ``jaw``,
``left_eye_smplhf``, ``right_eye_smplhf``; not the root (``global_orient`` is free). Usable as a
joint-limit prior by a fitter.
"""


def limits_for(joint_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds ``([J, 3], [J, 3])`` in radians for the named joints."""
    table = np.array([JOINT_LIMITS[name] for name in joint_names], dtype=np.float64)  # [J, 3, 2]
    return table[..., 0], table[..., 1]


def pose_limits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Body-model keyword -> flat bounds ``([3J], [3J])`` matching e.g. ``body_pose [63]``."""
    return {
        field: tuple(bound.reshape(-1) for bound in limits_for(joints))
        for field, joints in POSE_FIELD_JOINTS.items()
    }


def random_plausible_pose(
    rng: np.random.Generator, spread: float = 1.0, max_yaw: float = 0.0
) -> dict[str, np.ndarray]:
    """A random whole-body pose inside ``JOINT_LIMITS``; deterministic for a seeded ``rng``.

    Each axis-angle component is drawn uniformly in its range, then pulled towards the neutral
    value (0 clamped into the range) by ``spread`` in [0, 1] (0 = neutral pose). Both eyes share
    one gaze. ``global_orient`` is a yaw uniform in [-max_yaw, max_yaw] radians; ``transl`` is zero.

    Returns: dict of float32 ``[1, k]`` arrays, keys ``global_orient, body_pose, left_hand_pose,
    right_hand_pose, jaw_pose, leye_pose, reye_pose, transl`` (same layout as ``Motion.frame``).
    """
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"spread must be in [0, 1]; got {spread}")
    pose = {}
    for field, (low, high) in pose_limits().items():
        neutral = np.clip(0.0, low, high)
        pose[field] = neutral + spread * (rng.uniform(low, high) - neutral)
    pose["reye_pose"] = pose["leye_pose"].copy()
    yaw = rng.uniform(-max_yaw, max_yaw) if max_yaw > 0.0 else 0.0
    pose["global_orient"] = np.array([0.0, yaw, 0.0])
    pose["transl"] = np.zeros(3)
    order = ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose", "leye_pose",
             "reye_pose", "transl")
    return {key: pose[key].astype(np.float32)[None] for key in order}
