"""What the viewport draws (a splat scene) and how other threads hand it new ones (a latest-wins slot)."""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SplatScene:
    """Isotropic Gaussian splats in the world frame (metres, y up, the avatar faces +z).

    Attributes:
        means: centres, metres. [N, 3] float32
        colors: RGB in [0, 1]. [N, 3] float32
        scales: isotropic standard deviations, metres. [N] float32
        opacities: [0, 1]. [N] float32
        label: what this is, shown in the UI (e.g. "demo placeholder", "training step 1200").
    """

    means: np.ndarray
    colors: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    label: str = ""

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    def bounds(self) -> tuple[np.ndarray, float]:
        """Centre ``[3]`` and radius (metres) of a sphere holding every splat's 2-sigma extent."""
        if self.count == 0:
            return np.zeros(3), 1.0
        lo, hi = self.means.min(axis=0), self.means.max(axis=0)
        center = 0.5 * (lo + hi)
        radius = float(np.max(np.linalg.norm(self.means - center, axis=1) + 2.0 * self.scales))
        return center.astype(np.float64), max(radius, 1e-3)


def _as_float32(name: str, value, shape: tuple) -> np.ndarray:
    """``value`` as a C-contiguous float32 array of ``shape`` (None = any), finite; ValueError otherwise."""
    array = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    if array.ndim != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape)):
        spelled = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"set_scene: {name} must have shape {spelled}, got {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"set_scene: {name} has NaN or infinite values")
    return array


def make_scene(means, colors, scales, opacities=None, label: str = "") -> SplatScene:
    """Validate and copy arrays (numpy or CPU torch) into a ``SplatScene``.

    Args:
        means: [N, 3] metres. colors: [N, 3] RGB, clipped to [0, 1]. scales: [N] (or [N, 1]) std-dev, metres.
        opacities: [N] in [0, 1], default all 1 (PERSONA's Gaussians are opaque).

    Raises:
        ValueError: wrong shapes, mismatched N, NaN/inf, negative scales.
    """
    means = _as_float32("means", _to_numpy(means), (None, 3))
    n = means.shape[0]
    colors = np.clip(_as_float32("colors", _to_numpy(colors), (n, 3)), 0.0, 1.0)
    scales = _to_numpy(scales)
    if scales.ndim == 2 and scales.shape[1] == 1:  # the engine keeps one log-scale per Gaussian as [N, 1]
        scales = scales[:, 0]
    scales = _as_float32("scales", scales, (n,))
    if (scales < 0).any():
        raise ValueError("set_scene: scales must be non-negative standard deviations (metres), not log-scales")
    opacities = np.ones(n, np.float32) if opacities is None else _as_float32("opacities", _to_numpy(opacities), (n,))
    opacities = np.clip(opacities, 0.0, 1.0)
    # Copies, so later in-place edits by the publisher (e.g. a training step) can't tear a frame.
    return SplatScene(means.copy(), colors.copy(), scales.copy(), opacities.copy(), label)


@functools.lru_cache(maxsize=8)
def _thinned_indices(total: int, count: int, seed: int) -> np.ndarray:
    """``count`` sorted indices out of ``total`` (a posed avatar keeps its splat count: computed once)."""
    keep = np.sort(np.random.default_rng(seed).permutation(total)[:count])
    keep.setflags(write=False)
    return keep


def thinned_scene(scene: SplatScene, count: int, seed: int = 0) -> SplatScene:
    """At most ``count`` of ``scene``'s splats, for frames drawn while something moves: a seeded random
    subset (the avatar's splats are spread evenly over its surface, so a random one is too), each splat's
    size grown by ``sqrt(N / count)`` so that the fewer, larger splats cover the same surface. The scene
    itself when it has no more than ``count``."""
    if scene.count <= count:
        return scene
    keep = _thinned_indices(scene.count, count, seed)
    grow = np.float32(np.sqrt(scene.count / count))
    return SplatScene(scene.means[keep], scene.colors[keep], scene.scales[keep] * grow, scene.opacities[keep],
                      scene.label)


def _to_numpy(value) -> np.ndarray:
    """numpy view of a numpy array or a (detached, CPU) torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass(frozen=True)
class Published:
    """One entry of a ``SceneSource``: the scene, its version (1, 2, ...), whether the viewport
    should re-aim the camera at it (a newly loaded avatar) or keep the user's view (a training update),
    and whether it is one step of an interactive change (a pose slider moving), which the viewport may
    draw at reduced resolution like a camera movement."""

    scene: SplatScene
    version: int
    frame_camera: bool = False
    moving: bool = False


class SceneSource:
    """A lock-protected latest-scene slot: any thread publishes, the UI thread polls each frame.

    Publishing never waits for the viewport and polling never waits for a publisher; scenes published
    between two polls are skipped (latest wins), as training snapshots should be. A skipped scene's
    ``frame_camera`` request is kept, so a reframe is never lost to a quick follow-up update.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scene: SplatScene | None = None
        self._version = 0
        self._frame_pending = False
        self._moving = False

    def publish(self, scene: SplatScene, frame_camera: bool = False, moving: bool = False) -> int:
        """Make ``scene`` the latest; returns its version (1, 2, ...). Thread-safe."""
        with self._lock:
            self._version += 1
            self._scene = scene
            self._frame_pending = self._frame_pending or frame_camera
            self._moving = moving
            return self._version

    def poll(self, seen_version: int, keep_framing: bool = False) -> Published | None:
        """The latest entry if it is newer than ``seen_version`` (0 = nothing seen yet), else None;
        ``keep_framing``: None too if the entry asks to reframe the camera (left for a later poll)."""
        with self._lock:
            if self._version == seen_version or self._scene is None or (keep_framing and self._frame_pending):
                return None
            entry = Published(self._scene, self._version, self._frame_pending, self._moving)
            self._frame_pending = False
            return entry

    @property
    def version(self) -> int:
        """Version of the latest scene (0 before the first)."""
        with self._lock:
            return self._version
