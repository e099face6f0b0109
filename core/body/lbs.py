"""Linear blend skinning as pure functions on tensors, built from smplx's own ``smplx.lbs`` pieces.

``BodyModel`` composes these; the Gaussian avatar calls ``skin_points`` directly to pose points
that are not mesh vertices. Shapes: B batch, V vertices, N points, J joints (55), K blend shapes.
"""
from __future__ import annotations

import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, vertices2joints

__all__ = ["shape_vertices", "regress_joints", "joint_transforms", "pose_corrective_offsets", "skin_points",
           "blend_shapes", "vertices2joints", "batch_rodrigues", "batch_rigid_transform"]


def shape_vertices(v_template: torch.Tensor, blend_dirs: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Canonical (unposed) vertices: template plus linear blend shapes.

    ``v_template [V, 3]``, ``blend_dirs [V, 3, K]`` (shape then expression directions),
    ``coefficients [B, K]`` -> ``[B, V, 3]`` metres.
    """
    return v_template + blend_shapes(coefficients, blend_dirs)


def regress_joints(j_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """``j_regressor [J, V]``, ``vertices [B, V, 3]`` -> joint locations ``[B, J, 3]``."""
    return vertices2joints(j_regressor, vertices)


def joint_transforms(full_pose: torch.Tensor, rest_joints: torch.Tensor, parents: torch.Tensor,
                     transl: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward kinematics.

    ``full_pose [B, J, 3]`` axis-angle (radians) of each joint relative to its parent (joint 0:
    global orientation), ``rest_joints [B, J, 3]`` canonical joint locations, ``parents [J]``
    (root -1, parents before children), ``transl [B, 3]`` metres or None.

    Returns ``(posed_joints [B, J, 3], transforms [B, J, 4, 4], rotations [B, J, 3, 3])`` where
    ``transforms[b, j] @ [x, 1]`` takes a canonical point ``x`` rigidly attached to joint ``j`` to
    its posed position (``transl`` included) and ``rotations`` are the local joint rotations.
    """
    batch, num_joints = full_pose.shape[:2]
    rotations = batch_rodrigues(full_pose.reshape(-1, 3)).reshape(batch, num_joints, 3, 3)
    posed_joints, transforms = batch_rigid_transform(rotations, rest_joints, parents, dtype=full_pose.dtype)
    if transl is not None:
        posed_joints = posed_joints + transl[:, None, :]
        offset = torch.zeros_like(transforms)
        offset[..., :3, 3] = transl[:, None, :]
        transforms = transforms + offset
    return posed_joints, transforms, rotations


def pose_corrective_offsets(rotations: torch.Tensor, posedirs: torch.Tensor) -> torch.Tensor:
    """SMPL-style pose-dependent vertex offsets.

    ``rotations [B, J, 3, 3]`` local joint rotations, ``posedirs [9 (J - 1), V * 3]`` (as smplx
    holds it) -> ``[B, V, 3]`` metres, added to the canonical vertices before skinning.
    """
    batch = rotations.shape[0]
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    features = (rotations[:, 1:] - eye).reshape(batch, -1)
    return (features @ posedirs).reshape(batch, -1, 3)


def skin_points(points: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning of arbitrary canonical points.

    ``points [N, 3]`` or ``[B, N, 3]`` canonical positions (metres), ``weights [N, J]`` or
    ``[B, N, J]`` skinning weights (rows summing to 1, so a translation in ``transforms`` moves
    every point by it), ``transforms [B, J, 4, 4]`` from ``joint_transforms`` -> ``[B, N, 3]``.
    """
    batch, num_joints = transforms.shape[:2]
    per_point = torch.matmul(weights, transforms[..., :3, :].reshape(batch, num_joints, 12))  # [B, N, 12]
    per_point = per_point.reshape(batch, -1, 3, 4)
    if points.dim() == 2:
        points = points.unsqueeze(0)
    return torch.einsum("bnij,bnj->bni", per_point[..., :3], points) + per_point[..., 3]
