"""Body-part segmentation of a body model's vertices, from each vertex's dominant skinning joint.

Used as part-segmentation targets in training (rendered as colours with ``PART_PALETTE``) and to
tell hands / face apart. Left and right parts get different colours so the targets carry side.
"""
from __future__ import annotations

import numpy as np

from core.body.skeleton import JOINT_NAMES, NUM_JOINTS

PART_NAMES: tuple[str, ...] = (
    "pelvis", "abdomen", "chest", "neck", "head", "jaw", "eyes",
    "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm", "left_hand", "right_hand",
    "left_thigh", "right_thigh", "left_shin", "right_shin", "left_foot", "right_foot",
)
PART_INDEX: dict[str, int] = {name: i for i, name in enumerate(PART_NAMES)}

PART_PALETTE: np.ndarray = np.array([
    (0.55, 0.35, 0.20),  # pelvis
    (0.95, 0.75, 0.30),  # abdomen
    (0.90, 0.45, 0.15),  # chest
    (0.75, 0.20, 0.55),  # neck
    (0.95, 0.30, 0.30),  # head
    (0.55, 0.05, 0.10),  # jaw
    (1.00, 1.00, 1.00),  # eyes
    (0.15, 0.45, 0.95),  # left_upper_arm
    (0.10, 0.75, 0.35),  # right_upper_arm
    (0.35, 0.80, 1.00),  # left_forearm
    (0.60, 0.95, 0.45),  # right_forearm
    (0.20, 0.15, 0.60),  # left_hand
    (0.05, 0.40, 0.15),  # right_hand
    (0.55, 0.30, 0.85),  # left_thigh
    (0.85, 0.85, 0.15),  # right_thigh
    (0.80, 0.65, 1.00),  # left_shin
    (1.00, 0.95, 0.60),  # right_shin
    (0.30, 0.30, 0.35),  # left_foot
    (0.60, 0.60, 0.55),  # right_foot
], dtype=np.float32)
"""``[P, 3]`` RGB in [0, 1], one fixed colour per part of ``PART_NAMES``."""

# Joint name without its side prefix -> part name without its side prefix. Joints not listed
# (wrist, fingers) belong to the hand.
_PART_OF_JOINT = {
    "pelvis": "pelvis", "spine1": "abdomen", "spine2": "abdomen", "spine3": "chest", "neck": "neck",
    "head": "head", "jaw": "jaw", "hip": "thigh", "knee": "shin", "ankle": "foot", "foot": "foot",
    "shoulder": "upper_arm", "elbow": "forearm",
}
_UNSIDED_PART_OF_JOINT = {"collar": "chest", "eye_smplhf": "eyes"}  # collars carry the top of the shoulders


def _part_of_joint(joint: str) -> str:
    side, _, bare = joint.partition("_") if joint.startswith(("left_", "right_")) else ("", "", joint)
    if bare in _UNSIDED_PART_OF_JOINT:
        return _UNSIDED_PART_OF_JOINT[bare]
    part = _PART_OF_JOINT.get(bare, "hand")
    return f"{side}_{part}" if side else part


JOINT_TO_PART: np.ndarray = np.array([PART_INDEX[_part_of_joint(j)] for j in JOINT_NAMES], dtype=np.int64)
"""``[55]`` part index of each SMPL-X joint."""

HAND_PARTS = (PART_INDEX["left_hand"], PART_INDEX["right_hand"])
FACE_PARTS = (PART_INDEX["head"], PART_INDEX["jaw"], PART_INDEX["eyes"])


def part_labels_from_weights(weights: np.ndarray) -> np.ndarray:
    """Part index of each vertex from its dominant skinning joint.

    ``weights [V, 55]`` linear-blend-skinning weights -> ``[V]`` int64 indices into ``PART_NAMES``.
    """
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != NUM_JOINTS:
        raise ValueError(f"weights must be [V, {NUM_JOINTS}], got {weights.shape}")
    return JOINT_TO_PART[np.argmax(weights, axis=1)]


def part_colors(labels: np.ndarray) -> np.ndarray:
    """``labels [N]`` part indices -> ``[N, 3]`` float32 RGB in [0, 1] from ``PART_PALETTE``."""
    return PART_PALETTE[np.asarray(labels)]
