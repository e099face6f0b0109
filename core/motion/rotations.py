"""Rotation helpers in numpy (float64 inside): axis-angle <-> unit quaternion, products, slerp.

Quaternions are ``[..., 4]`` in (w, x, y, z) order. Axis-angle vectors are ``[..., 3]`` in radians:
direction = rotation axis, norm = angle. All functions broadcast over leading dimensions.
"""
from __future__ import annotations

import numpy as np

# Below this angle (radians) the series expansions are used: sin(a/2)/a and a/sin(a/2) are 0/0 at a = 0.
_SMALL_ANGLE = 1e-6


def axis_angle_to_quat(axis_angle: np.ndarray) -> np.ndarray:
    """Axis-angle ``[..., 3]`` (radians) -> unit quaternion ``[..., 4]`` (w, x, y, z)."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    small = angle < _SMALL_ANGLE
    # sin(a/2)/a with its Taylor series near zero.
    scale = np.where(small, 0.5 - angle**2 / 48.0, np.sin(angle / 2.0) / np.where(small, 1.0, angle))
    return np.concatenate([np.cos(angle / 2.0), aa * scale], axis=-1)


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Quaternion ``[..., 4]`` (w, x, y, z; normalised here) -> axis-angle ``[..., 3]`` with angle in [0, pi]."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    # q and -q are the same rotation; w >= 0 picks the representative with angle <= pi.
    q = np.where(q[..., :1] < 0.0, -q, q)
    w, xyz = q[..., :1], q[..., 1:]
    sin_half = np.linalg.norm(xyz, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, w)
    small = sin_half < _SMALL_ANGLE
    scale = np.where(small, 2.0 / np.maximum(w, _SMALL_ANGLE), angle / np.where(small, 1.0, sin_half))
    return xyz * scale


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of quaternions ``[..., 4]``: the rotation ``b`` first, then ``a``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conjugate(quat: np.ndarray) -> np.ndarray:
    """Conjugate ``[..., 4]``; for unit quaternions this is the inverse rotation."""
    return np.asarray(quat, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_slerp(q0: np.ndarray, q1: np.ndarray, weight: np.ndarray | float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions ``[..., 4]``.

    ``weight`` broadcasts against ``[...]`` (0 -> q0, 1 -> q1). Takes the shorter arc (q1 is flipped
    when q0 . q1 < 0); nearly equal quaternions fall back to normalised linear interpolation.
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    nearly_equal = sin_theta < 1e-6
    safe_sin = np.where(nearly_equal, 1.0, sin_theta)
    w0 = np.where(nearly_equal, 1.0 - w, np.sin((1.0 - w) * theta) / safe_sin)
    w1 = np.where(nearly_equal, w, np.sin(w * theta) / safe_sin)
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def compose_axis_angle(*rotations: np.ndarray) -> np.ndarray:
    """Product of axis-angle rotations ``[..., 3]``, outermost first: ``compose(a, b)`` applies b, then a."""
    quat = axis_angle_to_quat(rotations[0])
    for rotation in rotations[1:]:
        quat = quat_multiply(quat, axis_angle_to_quat(rotation))
    return quat_to_axis_angle(quat)


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Axis-angle ``[..., 3]`` (radians) -> rotation matrix ``[..., 3, 3]`` (acts on column vectors)."""
    w, x, y, z = np.moveaxis(axis_angle_to_quat(axis_angle), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=-2,
    )
