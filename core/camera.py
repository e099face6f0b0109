"""Pinhole cameras in the rasterizer's convention (OpenCV: x right, y down, z forward; world y up)."""
from __future__ import annotations

import math

import torch


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """World-to-camera matrix ``[4, 4]`` (OpenCV: x right, y down, z forward) looking from eye to target.

    ``up`` is the world's up direction (default +y, the body model's up).
    """
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype) if up is None else up
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.cross(forward, up, dim=0)
    if right.norm() < 1e-6:  # looking straight along up: pick any right
        right = torch.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype), dim=0)
    right = right / right.norm()
    down = torch.cross(forward, right, dim=0)
    rot = torch.stack([right, down, forward], dim=0)
    view = torch.eye(4, dtype=eye.dtype)
    view[:3, :3] = rot
    view[:3, 3] = -rot @ eye
    return view


def intrinsics(focal: float, width: int, height: int) -> torch.Tensor:
    """Pinhole ``K [3, 3]`` with the principal point at the image centre (pixels)."""
    return torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def orbit_camera(center: torch.Tensor, distance: float, azimuth: float, elevation: float = 0.0) -> torch.Tensor:
    """World-to-camera ``[4, 4]`` on a circle around ``center`` (radians; azimuth 0 = in front, +z)."""
    offset = torch.tensor([
        distance * math.cos(elevation) * math.sin(azimuth),
        distance * math.sin(elevation),
        distance * math.cos(elevation) * math.cos(azimuth),
    ], dtype=center.dtype)
    return look_at(center + offset, center)


def camera_center(viewmat):
    """The camera's position ``[3]`` (world space) from a world-to-camera ``viewmat [4, 4]`` (torch or numpy)."""
    return -(viewmat[:3, :3].T @ viewmat[:3, 3])


def facing_camera(points: torch.Tensor, normals: torch.Tensor, viewmat: torch.Tensor) -> torch.Tensor:
    """Which surface points ``[N, 3]`` with unit ``normals [N, 3]`` (world space) face the camera of
    ``viewmat [4, 4]`` (world-to-camera) -> bool ``[N]``."""
    return ((camera_center(viewmat) - points) * normals).sum(-1) > 0


def project_points(points, viewmat, K):
    """World ``points [N, 3]`` through an OpenCV camera (``viewmat [4, 4]`` world-to-camera, ``K [3, 3]``) ->
    ``(pixels [N, 2], depth [N])``, torch or numpy alike. Pixels use the corner-origin convention (pixel
    ``i`` spans ``[i, i + 1)``); a point at or behind the camera (depth <= 0) gets meaningless pixels."""
    camera = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    depth = camera[:, 2]
    pixels = (camera @ K.T)[:, :2] / (abs(depth[:, None]) + 1e-9)
    return pixels, depth
