"""Named poses as dicts of axis-angle arrays (radians) for ``BodyModel.forward``."""
from __future__ import annotations

import numpy as np

from core.body.skeleton import JOINT_INDEX, POSE_SLICES

STAR_HIP_SPREAD = 1.0 / 3.0  # radians each leg moves outward (PERSONA / ExAvatar canonical pose)
STAR_JAW_OPEN = 1.0 / 3.0  # radians


def zero_pose() -> dict[str, np.ndarray]:
    """Every pose argument of ``BodyModel.forward`` at zero (the T-pose): ``{name: [3 * joints]}`` float32."""
    return {name: np.zeros(3 * (s.stop - s.start), dtype=np.float32) for name, s in POSE_SLICES.items()}


def star_pose() -> dict[str, np.ndarray]:
    """The canonical pose of the Gaussian avatar: legs spread sideways by 1/3 rad each, jaw open
    1/3 rad, arms in the T-pose. ``{name: [3 * joints]}`` float32 axis-angle.

    In the SMPL-X frame (+x = the person's left, +z forward) +z rotation swings the left leg out
    to the left, -z the right leg to the right, and +x opens the jaw.
    """
    pose = zero_pose()
    body = pose["body_pose"].reshape(-1, 3)
    body[JOINT_INDEX["left_hip"] - 1] = (0.0, 0.0, STAR_HIP_SPREAD)
    body[JOINT_INDEX["right_hip"] - 1] = (0.0, 0.0, -STAR_HIP_SPREAD)
    pose["jaw_pose"][:] = (STAR_JAW_OPEN, 0.0, 0.0)
    return pose
