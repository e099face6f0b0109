"""What the balanced-sampling inspector shows, computed from a live ``Trainer`` (no GUI here).

Every image is display-ready: float32 RGB ``[H, W, 3]`` in [0, 1]. ``inspect_frame`` renders the
current avatar for one training frame, so it must run where the trainer's parameters are not being
changed (the session worker calls it between steps).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.avatar.render import pose_avatar, render_posed
from core.trainer import Trainer

SEAM_TINT = np.array([1.0, 0.1, 0.1], np.float32)  # red over the photo where the image loss is down-weighted
GEOMETRY_KEYS = ("mask", "depth", "normal", "part_seg")


@dataclass(frozen=True)
class Inspection:
    """One frame's targets next to the current render, plus the sampler's state.

    Attributes:
        frame: training frame index (0 = the photo).
        kind: "photo" or "generated".
        label: e.g. "photo" or "wave:17" (driving motion and its frame).
        step: training step the render shows.
        draw_counts: times each frame was drawn so far. [F] int
        photo_fraction: share of draws that picked the photo.
        targets / render: display images keyed by "rgb", "mask", "depth", "normal", "part_seg".
        seam: the photo with its seam boundary (image weight < 1) tinted red.
        albedo: the photo's albedo target (black where there is none).
    """

    frame: int
    kind: str
    label: str
    step: int
    draw_counts: np.ndarray
    photo_fraction: float
    targets: dict[str, np.ndarray]
    render: dict[str, np.ndarray]
    seam: np.ndarray
    albedo: np.ndarray


def _hw(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A ``[1, H, W, C]`` tensor or ``[H, W, C]`` array as float32 numpy ``[H, W, C]``."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return np.asarray(array[0] if array.ndim == 4 else array, np.float32)


def grey_image(values: np.ndarray) -> np.ndarray:
    """``[H, W, 1]`` in [0, 1] -> RGB ``[H, W, 3]``."""
    return np.repeat(np.clip(values, 0.0, 1.0), 3, axis=-1).astype(np.float32)


def depth_image(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Camera depth ``[H, W, 1]`` (metres) -> grey RGB, near = bright, min-max over ``mask [H, W, 1] > 0.5``.

    Each image is normalised on its own, as the scale-invariant depth loss compares them.
    """
    inside = mask[..., 0] > 0.5
    out = np.zeros(depth.shape[:2] + (1,), np.float32)
    if inside.any():
        values = depth[..., 0][inside]
        low, high = float(values.min()), float(values.max())
        out[inside, 0] = 1.0 - 0.8 * (values - low) / max(high - low, 1e-6)
    return grey_image(out)


def normal_image(normal: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Camera-space unit normals ``[H, W, 3]`` -> the usual ``(n + 1) / 2`` colours, black outside ``mask``."""
    return np.clip((0.5 * normal + 0.5) * (mask > 0.5), 0.0, 1.0).astype(np.float32)


def seam_overlay(rgb: np.ndarray, image_weight: np.ndarray | None, strength: float = 0.65) -> np.ndarray:
    """``rgb [H, W, 3]`` with pixels whose image-loss weight ``[H, W, 1]`` is below 1 tinted red."""
    out = np.clip(rgb, 0.0, 1.0).astype(np.float32)
    if image_weight is None:
        return out
    seam = image_weight[..., 0] < 1.0
    out[seam] = (1.0 - strength) * out[seam] + strength * SEAM_TINT
    return out


def display_images(rgb: np.ndarray, mask: np.ndarray, depth: np.ndarray | None, normal: np.ndarray | None,
                   part_seg: np.ndarray | None) -> dict[str, np.ndarray]:
    """Targets or render channels (``[H, W, C]`` each) -> display images keyed like ``Inspection.targets``."""
    blank = np.zeros(rgb.shape[:2] + (3,), np.float32)
    return {
        "rgb": np.clip(rgb, 0.0, 1.0).astype(np.float32),
        "mask": grey_image(mask),
        "depth": blank if depth is None else depth_image(depth, mask),
        "normal": blank if normal is None else normal_image(normal, mask),
        "part_seg": blank if part_seg is None else np.clip(part_seg, 0.0, 1.0).astype(np.float32),
    }


def frame_label(trainer: Trainer, index: int) -> str:
    """"photo" for frame 0, else the generated frame's label (e.g. "wave:17") or "frame i"."""
    if index == 0:
        return "photo"
    labels = list(getattr(trainer.frames, "labels", []) or [])
    return labels[index - 1] if index - 1 < len(labels) else f"frame {index}"


def inspect_frame(trainer: Trainer, index: int) -> Inspection:
    """Targets of training frame ``index`` and the current avatar rendered with that frame's camera and
    (learned, corrected) SMPL-X parameters, as the trainer renders it (refined when pose offsets are on)."""
    count = trainer.num_generated + 1
    if not 0 <= index < count:
        raise IndexError(f"frame {index} out of range (0..{count - 1})")
    frame = trainer.frame(index)
    height, width = frame.rgb.shape[1:3]
    with torch.no_grad():
        posed = pose_avatar(trainer.avatar, trainer.body, frame.params, refined=trainer.config.ablation.pose_offsets)
        out = render_posed(posed, frame.viewmat, frame.K, width, height, trainer.config.render, torch.zeros(3))
    mask = _hw(frame.mask)
    targets = display_images(_hw(frame.rgb), mask, *(None if getattr(frame, k) is None else _hw(getattr(frame, k))
                                                     for k in ("depth", "normal", "part_seg")))
    alpha = _hw(out.alpha)
    # Normals and part colours are alpha-weighted sums (depth is already the expected depth); undo
    # the weighting for display.
    coverage = np.maximum(alpha, 1e-6)
    rendered = display_images(_hw(out.rgb), alpha, _hw(out.depth), _hw(out.normal) / coverage,
                              _hw(out.part) / coverage * (alpha > 0.5))
    photo = trainer.frame(0)
    photo_rgb = _hw(photo.rgb)
    albedo = np.zeros_like(photo_rgb) if photo.albedo is None else np.clip(_hw(photo.albedo), 0.0, 1.0)
    return Inspection(frame=index, kind=frame.kind, label=frame_label(trainer, index), step=trainer.step_index,
                      draw_counts=trainer.sampler.counts.copy(), photo_fraction=trainer.sampler.photo_fraction,
                      targets=targets, render=rendered,
                      seam=seam_overlay(photo_rgb, None if photo.image_weight is None else _hw(photo.image_weight)),
                      albedo=albedo)


def frame_thumbnails(trainer: Trainer, side: int = 56) -> np.ndarray:
    """The photo and every generated frame's RGB target, ``side`` pixels square. [F, side, side, 3] float32"""
    import cv2

    images = [_hw(trainer.photo.rgb)]
    if trainer.frames is not None:
        images += [trainer.frames.rgb[i].astype(np.float32) / 255.0 for i in range(len(trainer.frames))]
    return np.stack([cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=cv2.INTER_AREA)
                     for image in images]).astype(np.float32)
