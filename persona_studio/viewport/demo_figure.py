"""A placeholder scene for an empty viewport: splats on a simple human-like figure built from
ellipsoids and capsules (about 1.75 m tall, feet at y = 0, facing +z, with a face and hair so front,
side and back look different). It stands in until a real avatar is loaded; it is not a body model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from persona_studio.viewport.scene import SplatScene, make_scene

DEMO_LABEL = "demo placeholder (no avatar loaded)"

SKIN = (0.87, 0.68, 0.56)
SHIRT = (0.16, 0.52, 0.60)
TROUSERS = (0.20, 0.22, 0.34)
SHOES = (0.12, 0.10, 0.09)
HAIR = (0.28, 0.17, 0.10)
EYES = (0.08, 0.08, 0.10)
LIPS = (0.70, 0.30, 0.30)


@dataclass(frozen=True)
class Ellipsoid:
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    color: tuple[float, float, float]

    def area(self) -> float:
        # Knud Thomsen's approximation of an ellipsoid's surface area (within ~1 %).
        a, b, c = self.radii
        p = 1.6075
        return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` points on the surface, metres. [n, 3]"""
        return np.asarray(self.center) + _unit_vectors(rng, n) * np.asarray(self.radii)


@dataclass(frozen=True)
class Capsule:
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]

    def area(self) -> float:
        length = float(np.linalg.norm(np.subtract(self.end, self.start)))
        return 2 * math.pi * self.radius * length + 4 * math.pi * self.radius**2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` points on the surface (cylinder and end caps in proportion to their area). [n, 3]"""
        start, end = np.asarray(self.start), np.asarray(self.end)
        axis = end - start
        length = np.linalg.norm(axis)
        axis = axis / length
        side = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
        side /= np.linalg.norm(side)
        other = np.cross(axis, side)
        n_cylinder = int(round(n * length / (length + 2 * self.radius)))
        angle = rng.uniform(0, 2 * math.pi, n_cylinder)
        ring = np.cos(angle)[:, None] * side + np.sin(angle)[:, None] * other
        cylinder = start + rng.uniform(0, 1, n_cylinder)[:, None] * (end - start) + self.radius * ring
        caps = _unit_vectors(rng, n - n_cylinder)
        # Each cap point goes to the end its direction points away from.
        at_end = caps @ axis > 0
        caps = np.where(at_end[:, None], end, start) + self.radius * caps
        return np.concatenate([cylinder, caps])


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` directions uniform on the sphere. [n, 3]"""
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def figure_parts() -> list[Ellipsoid | Capsule]:
    """The primitives of the demo figure in a relaxed A-pose (metres, facing +z, left side on +x)."""
    parts: list[Ellipsoid | Capsule] = [
        Ellipsoid((0.0, 1.62, 0.0), (0.09, 0.115, 0.10), SKIN),            # head (hair coloured later)
        Capsule((0.0, 1.44, 0.0), (0.0, 1.53, 0.0), 0.05, SKIN),           # neck
        Ellipsoid((0.0, 1.22, 0.0), (0.17, 0.26, 0.11), SHIRT),            # torso
        Ellipsoid((0.0, 0.95, 0.0), (0.16, 0.12, 0.105), TROUSERS),        # pelvis
        Ellipsoid((0.0, 1.60, 0.098), (0.014, 0.024, 0.02), SKIN),         # nose
        Ellipsoid((0.0, 1.555, 0.088), (0.028, 0.008, 0.01), LIPS),        # mouth
    ]
    for s in (1.0, -1.0):
        parts += [
            Ellipsoid((s * 0.035, 1.64, 0.088), (0.014, 0.01, 0.01), EYES),
            Capsule((s * 0.19, 1.40, 0.0), (s * 0.30, 1.13, 0.0), 0.045, SHIRT),       # upper arm
            Capsule((s * 0.30, 1.13, 0.0), (s * 0.38, 0.88, 0.03), 0.038, SKIN),       # forearm
            Ellipsoid((s * 0.40, 0.80, 0.035), (0.03, 0.06, 0.02), SKIN),              # hand
            Capsule((s * 0.09, 0.92, 0.0), (s * 0.10, 0.50, 0.0), 0.07, TROUSERS),     # thigh
            Capsule((s * 0.10, 0.50, 0.0), (s * 0.10, 0.10, -0.01), 0.052, TROUSERS),  # shin
            Ellipsoid((s * 0.10, 0.045, 0.04), (0.05, 0.045, 0.11), SHOES),            # foot
        ]
    return parts


def _hair_mask(points: np.ndarray) -> np.ndarray:
    """Head points covered by hair: the crown and the back of the head. [n] bool"""
    rel = points - np.array([0.0, 1.62, 0.0])
    return (rel[:, 1] > 0.045) | ((rel[:, 2] < 0.0) & (rel[:, 1] > -0.07))


def demo_figure(count: int = 20000, seed: int = 0) -> SplatScene:
    """About ``count`` splats on the figure's surface, spread in proportion to each part's area.

    Scales follow the local point spacing so the surface looks closed; colours get a little noise so
    the image has texture (and orbiting is visible). Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    parts = figure_parts()
    areas = np.array([part.area() for part in parts])
    counts = np.maximum(30, np.round(count * areas / areas.sum()).astype(int))
    means, colors, scales = [], [], []
    for part, n in zip(parts, counts):
        points = part.sample(rng, int(n))
        color = np.tile(np.asarray(part.color), (len(points), 1))
        if part is parts[0]:
            color[_hair_mask(points)] = HAIR
        color = color * rng.uniform(0.9, 1.08, size=(len(points), 1))
        means.append(points)
        colors.append(color)
        scales.append(np.full(len(points), 0.7 * math.sqrt(part.area() / n)))
    return make_scene(np.concatenate(means), np.concatenate(colors), np.concatenate(scales), label=DEMO_LABEL)
