"""The prep debug picture: how well the fitted body matches the photo, at a glance.

On the person crop: the fitted body's part colours blended in with its outline (yellow), the person
mask's outline (cyan), detected keypoints (green, radius grows with confidence), their fitted
reprojections (red) and a line from each detection to its reprojection (orange), plus the fit
metrics in the corner.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.io.atomic import atomic_path

BODY_OUTLINE = (255, 220, 0)
MASK_OUTLINE = (0, 220, 255)
DETECTED = (40, 220, 40)
FITTED = (255, 40, 40)
RESIDUAL = (255, 150, 0)
BODY_BLEND = 0.35


def debug_image(image: np.ndarray, person_mask: np.ndarray, body_mask: np.ndarray, part_seg: np.ndarray,
                keypoints: np.ndarray, projected: np.ndarray, caption: str = "") -> np.ndarray:
    """Compose the debug picture.

    Args:
        image: ``[H, W, 3]`` float RGB in [0, 1] (the crop).
        person_mask: ``[H, W]`` soft mask; body_mask: ``[H, W]`` fitted body coverage.
        part_seg: ``[H, W, 3]`` part colours of the fitted body in [0, 1].
        keypoints: ``[K, 3]`` detected (x px, y px, confidence); projected: ``[K, 2]`` fitted, NaN = none.
        caption: one line of text for the top-left corner.
    Returns:
        ``[H, W, 3]`` uint8 RGB.
    """
    import cv2

    canvas = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    body = (np.asarray(body_mask) > 0.5)[..., None]
    canvas = np.where(body, (1 - BODY_BLEND) * canvas + BODY_BLEND * np.asarray(part_seg, np.float32), canvas)
    canvas = np.ascontiguousarray(np.round(canvas * 255).astype(np.uint8))
    for mask, colour in ((person_mask, MASK_OUTLINE), (body_mask, BODY_OUTLINE)):
        contours, _ = cv2.findContours((np.asarray(mask) > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, 1, cv2.LINE_AA)
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px; pixel centres sit at +0.5
    scale = 1 << shift

    def point(xy) -> tuple[int, int]:
        return int(round((xy[0] - 0.5) * scale)), int(round((xy[1] - 0.5) * scale))

    for (x, y, conf), fitted in zip(np.asarray(keypoints, np.float64), np.asarray(projected, np.float64)):
        if conf <= 0 or not np.isfinite(fitted).all():
            continue
        cv2.line(canvas, point((x, y)), point(fitted), RESIDUAL, 1, cv2.LINE_AA, shift)
        cv2.circle(canvas, point((x, y)), int((1.5 + 2.0 * min(conf, 1.0)) * scale), DETECTED, 1, cv2.LINE_AA, shift)
        cv2.circle(canvas, point(fitted), int(1.5 * scale), FITTED, -1, cv2.LINE_AA, shift)
    if caption:
        (text_w, text_h), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.rectangle(canvas, (0, 0), (text_w + 8, text_h + baseline + 8), (0, 0, 0), -1)
        cv2.putText(canvas, caption, (4, text_h + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def subject_debug_image(subject, projected: np.ndarray) -> np.ndarray:
    """``debug_image`` of a ``core.subject.Subject`` (its geometry's depth > 0 is the body's coverage)."""
    fit = subject.info.get("fit", {})
    caption = (f"keypoints {fit.get('keypoint_error_pct', float('nan')):.1f}% of height, "
               f"IoU {fit.get('silhouette_iou', float('nan')):.2f}, "
               f"body inside the mask {fit.get('silhouette_inside', float('nan')):.0%}")
    return debug_image(subject.image, subject.mask, subject.geometry["depth"] > 0, subject.geometry["part_seg"],
                       subject.keypoints, projected, caption)


def write_debug_png(path: str | Path, picture: np.ndarray) -> None:
    """Write an ``[H, W, 3]`` uint8 picture as PNG, atomically."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
