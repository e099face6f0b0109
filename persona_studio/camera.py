"""Orbit camera of the studio viewport: turntable orbit, pan, zoom and view presets.

Conventions are the engine's (``core.camera``): world y up, the avatar faces +z, and ``viewmat()`` is
world-to-camera in OpenCV axes (x right, y down, z forward), so the viewport and the rasterizer agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from core.camera import intrinsics, look_at

# Elevation stays just short of the poles so look_at always has a well-defined right vector and a
# "top" view keeps the avatar's front (+z) at the bottom of the image.
MAX_ELEVATION = math.radians(89.5)
MIN_DISTANCE = 0.05   # metres
MAX_DISTANCE = 100.0  # metres
MIN_FOV_Y, MAX_FOV_Y = 5.0, 120.0  # degrees

# name -> (azimuth, elevation) in radians; azimuth 0 puts the camera on +z, in front of the avatar.
VIEW_PRESETS: dict[str, tuple[float, float]] = {
    "front": (0.0, 0.0),
    "side": (math.pi / 2, 0.0),  # on +x, the avatar's left
    "back": (math.pi, 0.0),
    "top": (0.0, MAX_ELEVATION),
}


@dataclass
class Camera:
    """A pinhole camera orbiting ``target``.

    Attributes:
        target: orbit centre, world metres. [3]
        distance: eye-to-target distance, metres.
        azimuth: rotation about world +y, radians; 0 = camera on +z looking at -z.
        elevation: angle above the horizontal plane, radians (clamped short of +-90 degrees).
        fov_y: vertical field of view, degrees.
        width, height: image size, pixels.
    """

    target: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.9, 0.0]))
    distance: float = 3.0
    azimuth: float = 0.0
    elevation: float = 0.0
    fov_y: float = 40.0
    width: int = 512
    height: int = 512

    def __post_init__(self) -> None:
        self.target = np.asarray(self.target, dtype=np.float64).reshape(3).copy()
        self._home = self.state()

    # -- geometry -----------------------------------------------------------------------------------
    def eye(self) -> np.ndarray:
        """Camera centre, world metres. [3]"""
        ce = math.cos(self.elevation)
        offset = np.array([ce * math.sin(self.azimuth), math.sin(self.elevation), ce * math.cos(self.azimuth)])
        return self.target + self.distance * offset

    def viewmat(self) -> np.ndarray:
        """World-to-camera matrix (OpenCV axes), float64. [4, 4]"""
        view = look_at(torch.from_numpy(self.eye()), torch.from_numpy(self.target))
        return view.numpy()

    def focal(self) -> float:
        """Focal length in pixels for the vertical field of view."""
        return 0.5 * self.height / math.tan(math.radians(self.fov_y) / 2)

    def K(self) -> np.ndarray:  # noqa: N802  (the usual name of the intrinsics matrix)
        """Pinhole intrinsics, principal point at the image centre, pixels. [3, 3]"""
        return intrinsics(self.focal(), self.width, self.height).numpy().astype(np.float64)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points ``[N, 3]`` -> pixel coordinates ``[N, 2]`` (x right, y down; pixel centres at +0.5)."""
        view = self.viewmat()
        cam = np.asarray(points, dtype=np.float64) @ view[:3, :3].T + view[:3, 3]
        pix = cam @ self.K().T
        return pix[:, :2] / pix[:, 2:3]

    # -- interaction ---------------------------------------------------------------------------------
    def orbit(self, dx: float, dy: float, radians_per_pixel: float = 0.008) -> None:
        """Turntable orbit by a mouse drag of ``(dx, dy)`` pixels: dragging right turns the avatar right,
        dragging down raises the camera (look from above). The distance to the target is unchanged."""
        self.azimuth = math.remainder(self.azimuth - dx * radians_per_pixel, 2 * math.pi)
        self.elevation = float(np.clip(self.elevation + dy * radians_per_pixel, -MAX_ELEVATION, MAX_ELEVATION))

    def pan(self, dx: float, dy: float) -> None:
        """Move the target in the image plane so the point under the cursor follows a drag of ``(dx, dy)`` pixels."""
        rot = self.viewmat()[:3, :3]  # rows: camera right, down, forward in world coordinates
        metres_per_pixel = self.distance / self.focal()
        self.target = self.target - metres_per_pixel * (dx * rot[0] + dy * rot[1])

    def zoom(self, steps: float, factor_per_step: float = 0.9) -> None:
        """Mouse-wheel zoom: ``steps > 0`` moves closer by ``factor_per_step`` per step."""
        self.distance = float(np.clip(self.distance * factor_per_step**steps, MIN_DISTANCE, MAX_DISTANCE))

    def set_fov(self, fov_y: float) -> None:
        """Vertical field of view in degrees, clamped to a usable range."""
        self.fov_y = float(np.clip(fov_y, MIN_FOV_Y, MAX_FOV_Y))

    def set_size(self, width: int, height: int) -> None:
        """Image size in pixels (at least 1 x 1)."""
        self.width, self.height = max(1, int(width)), max(1, int(height))

    def view_preset(self, name: str) -> None:
        """Turn to one of ``VIEW_PRESETS`` (front, side, back, top), keeping target, distance and FOV."""
        if name not in VIEW_PRESETS:
            raise ValueError(f"unknown view preset {name!r}; choose one of {', '.join(VIEW_PRESETS)}")
        self.azimuth, self.elevation = VIEW_PRESETS[name]

    def frame(self, center: np.ndarray, radius: float) -> None:
        """Aim at a bounding sphere (``center [3]``, ``radius`` metres) and back off until it fits the view,
        then make this the view that ``reset()`` returns to."""
        half_fov = math.radians(min(self.fov_y, self.fov_y * self.width / self.height)) / 2
        self.target = np.asarray(center, dtype=np.float64).reshape(3).copy()
        self.distance = float(np.clip(1.1 * radius / math.sin(half_fov), MIN_DISTANCE, MAX_DISTANCE))
        self._home = self.state()

    def reset(self) -> None:
        """Back to the home view (the constructor's, or the last ``frame()``); the image size is kept."""
        target, self.distance, self.azimuth, self.elevation, self.fov_y, _, _ = self._home
        self.target = np.array(target)

    def state(self) -> tuple:
        """Everything that changes the image, as a hashable tuple (for dirty checks)."""
        return (tuple(float(v) for v in self.target), float(self.distance), float(self.azimuth),
                float(self.elevation), float(self.fov_y), int(self.width), int(self.height))
