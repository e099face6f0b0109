"""The SMPL-X skeleton shared by every body model we load: 55 joints, their names and parents.

Frame (SMPL-X canonical): metres, y up, the person faces +z, +x is the person's left; the zero
pose is a T-pose with the arms along +-x and the palms down.
"""
from __future__ import annotations

from smplx.vertex_ids import vertex_ids as _SMPLX_VERTEX_IDS

_HAND_JOINTS = tuple(f"{finger}{segment}" for finger in ("index", "middle", "pinky", "ring", "thumb")
                     for segment in (1, 2, 3))

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "jaw", "left_eye_smplhf", "right_eye_smplhf",
    *(f"left_{name}" for name in _HAND_JOINTS),
    *(f"right_{name}" for name in _HAND_JOINTS),
)
"""The 55 SMPL-X joints in model order (the order of ``full_pose``, ``weights`` columns, ``joints``)."""

NUM_JOINTS = len(JOINT_NAMES)
JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}

PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)
"""Parent of each joint (``kintree_table[0]`` of SMPL-X, root = -1); every parent precedes its child."""

LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    "left_thumb_tip", "left_index_tip", "left_middle_tip", "left_ring_tip", "left_pinky_tip",
    "right_thumb_tip", "right_index_tip", "right_middle_tip", "right_ring_tip", "right_pinky_tip",
)
"""Surface keypoints (one vertex each) for 2D fitting, in the order smplx appends its extra joints."""

# Our landmark name -> the key of smplx.vertex_ids; same order as smplx's VertexJointSelector.
_SMPLX_LANDMARK_KEYS = (
    "nose", "reye", "leye", "rear", "lear",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    "lthumb", "lindex", "lmiddle", "lring", "lpinky",
    "rthumb", "rindex", "rmiddle", "rring", "rpinky",
)

SMPLX_NUM_VERTICES = 10475
"""Vertex count of the licensed SMPL-X topology, whose landmark vertex ids smplx hard-codes."""

SMPLX_LANDMARK_VERTEX_IDS: tuple[int, ...] = tuple(_SMPLX_VERTEX_IDS["smplx"][key] for key in _SMPLX_LANDMARK_KEYS)
"""Vertex id of each ``LANDMARK_NAMES`` entry on the SMPL-X topology (10,475 vertices)."""

BODY_POSE_JOINTS = JOINT_NAMES[1:22]
"""The 21 joints of ``body_pose [B, 63]``."""
LEFT_HAND_JOINTS = JOINT_NAMES[25:40]
RIGHT_HAND_JOINTS = JOINT_NAMES[40:55]

# Width of each pose argument and where its joints sit in the 55-joint order.
POSE_SLICES: dict[str, slice] = {
    "global_orient": slice(0, 1),
    "body_pose": slice(1, 22),
    "jaw_pose": slice(22, 23),
    "leye_pose": slice(23, 24),
    "reye_pose": slice(24, 25),
    "left_hand_pose": slice(25, 40),
    "right_hand_pose": slice(40, 55),
}
