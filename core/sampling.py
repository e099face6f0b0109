"""Balanced sampling of training frames and the photo's seam boundary.

PERSONA repeats the input photo as many times as there are generated frames, so about half of
all draws show the photo: its appearance dominates while generated frames teach pose-dependent
geometry. Frame 0 is always the photo; frames 1..n are generated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass
class BalancedSampler:
    """Draws frame indices epoch by epoch; each epoch is a fixed shuffled list.

    An epoch holds every generated frame once plus the photo repeated so that it makes up
    ``photo_share`` of the epoch (``balanced=False``: the photo appears once, like any frame).
    Epoch ``e`` is shuffled with ``seed + e``, so the sampler's whole state is two integers and
    resuming reproduces the same sequence. ``counts[i]`` is how often frame ``i`` was drawn.
    """

    num_generated: int
    photo_share: float = 0.5
    balanced: bool = True
    seed: int = 0
    epoch: int = 0
    position: int = 0
    counts: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = np.zeros(self.num_generated + 1, dtype=np.int64)

    @property
    def photo_repeats(self) -> int:
        """How many times the photo appears in one epoch."""
        if not self.balanced or self.num_generated == 0:
            return 1
        return max(1, round(self.num_generated * self.photo_share / (1.0 - self.photo_share)))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The shuffled frame indices of ``epoch`` ``[photo_repeats + num_generated]``."""
        order = np.concatenate([np.zeros(self.photo_repeats, dtype=np.int64),
                                np.arange(1, self.num_generated + 1, dtype=np.int64)])
        np.random.default_rng(self.seed + epoch).shuffle(order)
        return order

    def draw(self, photo: bool = True) -> int:
        """Next frame index (0 = the photo). ``photo=False`` passes over the photo's places in the sequence,
        uncounted (a phase of generated frames only; with none, the photo is drawn anyway)."""
        while True:
            order = self.epoch_order(self.epoch)
            index = int(order[self.position])
            self.position += 1
            if self.position == len(order):
                self.epoch, self.position = self.epoch + 1, 0
            if index or photo or self.num_generated == 0:
                break
        self.counts[index] += 1
        return index

    @property
    def photo_fraction(self) -> float:
        """Share of draws so far that picked the photo (0 before any draw)."""
        total = int(self.counts.sum())
        return float(self.counts[0]) / total if total else 0.0

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume: position in the sequence and the draw counts."""
        return {"epoch": np.array(self.epoch), "position": np.array(self.position), "counts": self.counts.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.counts = np.asarray(state["counts"], dtype=np.int64).copy()


def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude ``[H, W]`` of an ``[H, W, C]`` image (Sobel, largest over channels).

    Sobel responses are divided by 8 (the kernel's absolute sum) so a unit step reads as a
    jump of about 0.5 per pixel: thresholds are in the image's own units per pixel.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    gx = np.stack([ndimage.sobel(image[..., c], axis=1) for c in range(image.shape[-1])], -1) / 8.0
    gy = np.stack([ndimage.sobel(image[..., c], axis=0) for c in range(image.shape[-1])], -1) / 8.0
    return np.sqrt(gx**2 + gy**2).max(axis=-1)


def seam_boundary(position_map: np.ndarray, mask: np.ndarray, threshold: float = 0.02,
                  dilate_fraction: float = 0.015) -> np.ndarray:
    """Where the canonical-position map jumps: seams that shading and misfit bake into colours.

    ``position_map [H, W, 3]``: canonical (star-pose) 3D position of the body surface seen at each
    pixel of the photo (metres). ``mask [H, W]``: person mask. Pixels where neighbouring surface
    points are far apart on the body (Sobel magnitude > ``threshold`` metres) are seams, e.g. an arm
    in front of the torso. The seam is dilated by ``dilate_fraction`` of the person's height in
    pixels. Returns ``bool [H, W]``.
    """
    inside = np.asarray(mask) > 0.5
    if not inside.any():
        return np.zeros(inside.shape, dtype=bool)
    # Outside the person the map is undefined; fill it with the nearest inside value so the
    # silhouette itself is not a seam (the mask loss handles the outline).
    _, (iy, ix) = ndimage.distance_transform_edt(~inside, return_indices=True)
    filled = np.asarray(position_map, dtype=np.float32)[iy, ix]
    edges = (sobel_magnitude(filled) > threshold) & inside
    rows = np.nonzero(inside.any(axis=1))[0]
    radius = int(round(dilate_fraction * (rows[-1] - rows[0] + 1)))
    if radius > 0 and edges.any():
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        edges = ndimage.binary_dilation(edges, structure=(yy**2 + xx**2) <= radius**2)
    return edges & inside
