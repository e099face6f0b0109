"""Training frames as tensors: the photo (frame 0) and generated/imported frames (1..n).

Each frame carries its targets (RGB, mask, depth, normal, part colours), camera, SMPL-X
parameters, a per-pixel image-loss weight (the photo's seam boundary) and a hand region (for the
hand mask loss).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from core.avatar.build import body_params
from core.body import PART_NAMES, PART_PALETTE
from core.frames.frameset import FrameSet
from core.prep.matting import premultiplied_foreground
from core.sampling import seam_boundary
from core.subject import SMPLX_POSE_SIZES, Subject

SEAM_REFERENCE_SIZE = 512  # image height (pixels) at which sampling.seam_threshold applies
HAND_PART_IDS = [PART_NAMES.index("left_hand"), PART_NAMES.index("right_hand")]


@dataclass
class TrainFrame:
    """Targets ``[1, H, W, C]`` float32; camera; parameters ``[1, k]``."""

    kind: str  # "photo" | "generated"
    rgb: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor | None
    normal: torch.Tensor | None
    part_seg: torch.Tensor | None
    albedo: torch.Tensor | None
    image_weight: torch.Tensor | None  # [1, H, W, 1] (photo: 0.1 on the seam boundary)
    hand_region: torch.Tensor | None  # [1, H, W, 1] 1 around the hands
    K: torch.Tensor  # [3, 3]
    viewmat: torch.Tensor  # [4, 4]
    params: dict[str, torch.Tensor]
    has_hands: bool = False  # hand_region has pixels (known on the CPU, so the loss never asks the device)

    def to(self, device: torch.device) -> "TrainFrame":
        """The frame with every tensor on ``device`` (itself when they are there already)."""
        if self.rgb.device == torch.device(device):
            return self
        moved = {name: None if getattr(self, name) is None else getattr(self, name).to(device)
                 for name in IMAGE_FIELDS + ("K", "viewmat")}
        return dataclasses.replace(self, **moved, params={k: v.to(device) for k, v in self.params.items()})


IMAGE_FIELDS = ("rgb", "mask", "depth", "normal", "part_seg", "albedo", "image_weight", "hand_region")


def crop_frame(frame: TrainFrame, rows: slice, cols: slice) -> TrainFrame:
    """The frame's target images cut to ``[rows, cols]`` (camera and parameters unchanged)."""
    cut = {name: None if getattr(frame, name) is None else getattr(frame, name)[:, rows, cols]
           for name in IMAGE_FIELDS}
    return dataclasses.replace(frame, **cut)


def complete_params(params: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """SMPL-X parameters as ``[1, k]`` float32 tensors, every pose entry present (zeros if missing)."""
    return {**{k: torch.zeros(1, size) for k, size in SMPLX_POSE_SIZES.items()}, **body_params(params)}


def _t(array: np.ndarray | None, channels: int | None = None) -> torch.Tensor | None:
    if array is None:
        return None
    tensor = torch.as_tensor(np.asarray(array, dtype=np.float32))
    if channels == 1 and tensor.ndim == 2:
        tensor = tensor[..., None]
    return tensor[None]


def hand_region(part_seg: np.ndarray, dilate: int = 3) -> np.ndarray:
    """Pixels near the hands ``[H, W, 1]`` from a part-colour image ``[H, W, 3]`` in [0, 1].

    Part images are drawn with flat palette colours, so a pixel is a hand pixel when its colour is
    within 8-bit rounding of a hand colour (no nearest-colour search over the whole palette).
    """
    hands = np.zeros(part_seg.shape[:2], bool)
    for part in HAND_PART_IDS:
        hands |= (np.abs(part_seg - PART_PALETTE[part]) < 2.0 / 255.0).all(axis=-1)
    if dilate > 0 and hands.any():
        hands = ndimage.binary_dilation(hands, iterations=dilate)
    return hands.astype(np.float32)[..., None]


def resize_subject(subject: Subject, size: int) -> Subject:
    """The Subject's images at ``size``² pixels (area filter; part colours nearest) with K scaled."""
    h, w = subject.size
    if (h, w) == (size, size):
        return subject
    import cv2

    def area(image):
        return cv2.resize(np.asarray(image, np.float32), (size, size), interpolation=cv2.INTER_AREA)

    scale = np.diag([size / w, size / h, 1.0]).astype(np.float32)
    geometry = {k: (cv2.resize(v, (size, size), interpolation=cv2.INTER_NEAREST) if k == "part_seg" else area(v))
                for k, v in subject.geometry.items()}
    return dataclasses.replace(subject, image=area(subject.image), mask=area(subject.mask),
                               albedo=area(subject.albedo), K=scale @ subject.K, geometry=geometry)


def photo_frame(subject: Subject, boundary_weight: float, seam_threshold: float, seam_dilate: float,
                size: int | None = None) -> TrainFrame:
    """Frame 0 from a Subject, resized to ``size``² pixels when given. Its colour target is the person's own
    colour at the mask's soft edge (``core.prep.matting``), not the photo times the mask."""
    if size is not None:
        subject = resize_subject(subject, size)
    rgb = subject.image
    mask = subject.mask
    weight = np.ones(mask.shape, np.float32)
    if "position" in subject.geometry:
        # The threshold is a position jump per pixel: smooth surfaces jump more per pixel in
        # smaller images, so it is stated for a 512-pixel image and scaled to this one.
        threshold = seam_threshold * SEAM_REFERENCE_SIZE / mask.shape[0]
        seam = seam_boundary(subject.geometry["position"], mask, threshold, seam_dilate)
        weight[seam] = boundary_weight
    geometry = subject.geometry
    return TrainFrame(
        kind="photo", rgb=_t(premultiplied_foreground(rgb, mask)), mask=_t(mask, 1),
        depth=_t(geometry.get("depth"), 1), normal=_t(geometry.get("normal")), part_seg=_t(geometry.get("part_seg")),
        albedo=_t(subject.albedo * mask[..., None]), image_weight=_t(weight, 1), hand_region=None,
        K=torch.as_tensor(subject.K, dtype=torch.float32),
        viewmat=torch.as_tensor(subject.viewmat),
        params=complete_params(subject.smplx),
    )


def generated_frame(frames: FrameSet, i: int, betas: np.ndarray, expression: np.ndarray | None,
                    hands: np.ndarray | None = None) -> TrainFrame:
    """Frame ``i`` of a FrameSet with the subject's shape; ``hands`` a precomputed ``hand_region``."""
    f = frames.frame(i)
    params = dict(f["params"])
    params["betas"] = np.asarray(betas, np.float32)
    if expression is not None and "expression" not in params:
        params["expression"] = np.asarray(expression, np.float32)
    region = hand_region(f["part_seg"]) if hands is None else hands
    return TrainFrame(
        kind="generated", rgb=_t(f["rgb"]), mask=_t(f["mask"]), depth=_t(f["depth"]), normal=_t(f["normal"]),
        part_seg=_t(f["part_seg"]), albedo=None, image_weight=None, hand_region=_t(region),
        K=torch.as_tensor(f["K"]), viewmat=torch.as_tensor(f["viewmat"]),
        params=complete_params(params), has_hands=bool(np.asarray(region).any()),
    )
