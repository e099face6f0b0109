"""Cameras for exports: orbit paths, and a focal length that keeps the whole body in every frame.

Convention (``core.camera``): OpenCV camera axes, world y up, the avatar faces +z; an orbit camera
at azimuth 0 is in front of it. Distances in metres, angles in degrees at this module's edges.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from core.camera import orbit_camera
from core.errors import UserError

FRAME_MARGIN = 0.08  # fraction of the half-image kept free around the body (Gaussians reach past their centres)


def union_center(point_sets: Iterable[torch.Tensor]) -> torch.Tensor:
    """Centre ``[3]`` of the bounding box around all of ``point_sets`` (each ``[..., 3]``, metres)."""
    lo = torch.full((3,), float("inf"))
    hi = -lo
    for points in point_sets:
        flat = points.reshape(-1, 3).float()
        lo, hi = torch.minimum(lo, flat.amin(dim=0)), torch.maximum(hi, flat.amax(dim=0))
    if not bool(torch.isfinite(lo).all()):
        raise ValueError("union_center needs at least one point")
    return (lo + hi) / 2


def orbit_view(center: torch.Tensor, distance: float, elevation_deg: float, index: int, count: int) -> torch.Tensor:
    """World-to-camera ``[4, 4]`` of frame ``index`` of ``count`` evenly spaced around a full circle.

    Frame 0 looks at the avatar's front; azimuth grows by 360/count degrees per frame, counter-
    clockwise seen from above (frame count/4 looks at the avatar's left side, +x), and the last
    frame stops one step short of the first so the clip loops without a repeated frame.
    """
    azimuth = 2.0 * math.pi * index / count
    return orbit_camera(center.double(), distance, azimuth, math.radians(elevation_deg)).float()


def front_view(target: torch.Tensor, distance: float, elevation_deg: float) -> torch.Tensor:
    """World-to-camera ``[4, 4]`` in front of ``target [3]`` (azimuth 0), raised by ``elevation_deg``."""
    return orbit_camera(target.double(), distance, 0.0, math.radians(elevation_deg)).float()


def fit_focal(views: Iterable[tuple[torch.Tensor, torch.Tensor]], width: int, height: int,
              margin: float = FRAME_MARGIN, near: float = 0.05) -> float:
    """The largest focal length (pixels) at which every point of every view lands inside the image.

    ``views`` yields ``(points [P, 3] world metres, viewmat [4, 4])``; the principal point is the
    image centre and ``margin`` of each half-image is left free. Raises ``UserError`` when a point
    is not in front of a camera (the camera is inside or behind the avatar).
    """
    half = torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64) * (1.0 - margin)
    focal = math.inf
    for points, viewmat in views:
        view = viewmat.double()
        cam = points.double() @ view[:3, :3].T + view[:3, 3]
        depth = cam[:, 2]
        if bool((depth < near).any()):
            raise UserError(f"the camera is inside the avatar (nearest point {float(depth.min()):.2f} m in front "
                            f"of it); use a larger camera distance")
        reach = (cam[:, :2].abs() / depth[:, None]).amax(dim=0)  # tan of the widest angle, x and y
        focal = min(focal, float((half / reach.clamp_min(1e-9)).min()))
    if not math.isfinite(focal):
        raise ValueError("fit_focal needs at least one view")
    return focal


def follow_targets(roots: torch.Tensor, center: torch.Tensor, fps: float, window_s: float = 0.5) -> torch.Tensor:
    """Camera targets ``[T, 3]`` that follow the root ``roots [T, 3]`` (metres), smoothed.

    The target keeps the offset between the clip's mean root and ``center`` (the body's bounding-box
    centre), so the body stays framed as in a fixed shot; a centred moving average over
    ``window_s`` seconds removes the root's step-by-step jitter. Near the clip's ends the window
    shrinks symmetrically, so steady motion is followed exactly there too.
    """
    count = roots.shape[0]
    index = torch.arange(count)
    half = torch.minimum(torch.minimum(index, count - 1 - index),
                         torch.tensor(max(0, int(round(window_s * fps / 2)))))
    cumulative = torch.cat([torch.zeros(1, 3, dtype=roots.dtype), roots.cumsum(dim=0)])
    lo, hi = index - half, index + half + 1
    smoothed = (cumulative[hi] - cumulative[lo]) / (hi - lo)[:, None].to(roots.dtype)
    return smoothed + (center - roots.mean(dim=0))

