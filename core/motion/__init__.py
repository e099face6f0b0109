"""SMPL-X motion clips: load/save AMASS-style npz (and BVH, core.motion.bvh), resample, z-up -> y-up, built-ins,
joint limits.

Public API (re-exported here):
    Motion, load_motion, save_motion, resample, to_y_up, builtin_motions, load_builtin,
    JOINT_LIMITS, BODY_JOINT_NAMES, HAND_JOINT_NAMES, limits_for, pose_limits,
    random_plausible_pose, mirror_axis_angle.
"""
from core.motion.clip import (
    FORMAT_VERSION,
    MOTION_SUFFIXES,
    POSE_FIELDS,
    Motion,
    builtin_motions,
    load_builtin,
    load_motion,
    resample,
    save_motion,
    to_y_up,
)
from core.motion.joint_limits import (
    BODY_JOINT_NAMES,
    HAND_JOINT_NAMES,
    JOINT_LIMITS,
    LEFT_HAND_JOINT_NAMES,
    POSE_FIELD_JOINTS,
    RIGHT_HAND_JOINT_NAMES,
    limits_for,
    mirror_axis_angle,
    pose_limits,
    random_plausible_pose,
)

__all__ = [
    "FORMAT_VERSION", "MOTION_SUFFIXES", "POSE_FIELDS", "Motion", "builtin_motions", "load_builtin", "load_motion",
    "resample",
    "save_motion", "to_y_up", "BODY_JOINT_NAMES", "HAND_JOINT_NAMES", "JOINT_LIMITS", "LEFT_HAND_JOINT_NAMES",
    "POSE_FIELD_JOINTS", "RIGHT_HAND_JOINT_NAMES", "limits_for", "mirror_axis_angle", "pose_limits",
    "random_plausible_pose",
]
