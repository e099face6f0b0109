"""Image metrics against ground truth, as PERSONA evaluates: on a white background with the
ground-truth mask (the GT is composited by its exact mask; a method by its own alpha, so silhouette
errors count), over the person's box. LPIPS needs pretrained network weights, which are not
available offline, so it is not computed.
"""
from __future__ import annotations

import numpy as np
import torch

from core.losses import psnr, ssim_map

EVAL_MARGIN = 8  # pixels around the union of both silhouettes


def composite_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb [H, W, 3]`` premultiplied by ``alpha [H, W]`` (or ``[H, W, 1]``) -> over white ``[H, W, 3]``."""
    alpha = np.asarray(alpha, np.float32).reshape(rgb.shape[0], rgb.shape[1], 1)
    return np.asarray(rgb, np.float32) + (1.0 - alpha)


def person_window(gt_mask: np.ndarray, pred_alpha: np.ndarray, margin: int = EVAL_MARGIN) -> tuple[slice, slice]:
    """Rows and columns of the box around both silhouettes (``[H, W]``, > 1/255) plus ``margin`` pixels.

    Outside it both images are white; counting those pixels would only inflate PSNR / SSIM by an
    amount that depends on how the camera frames the person.
    """
    covered = (np.asarray(gt_mask) > 1.0 / 255.0) | (np.asarray(pred_alpha).reshape(gt_mask.shape) > 1.0 / 255.0)
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    if len(rows) == 0:
        return slice(None), slice(None)
    h, w = covered.shape
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + margin + 1)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + margin + 1)))


def mask_iou(gt_mask: np.ndarray, pred_alpha: np.ndarray) -> float:
    """IoU of ``gt_mask > 0.5`` and ``pred_alpha > 0.5`` (``[H, W]``); 1.0 when both are empty."""
    gt, pred = np.asarray(gt_mask) > 0.5, np.asarray(pred_alpha).reshape(gt_mask.shape) > 0.5
    union = int((gt | pred).sum())
    return float((gt & pred).sum()) / union if union else 1.0


def image_metrics(pred_white: np.ndarray, gt_white: np.ndarray, gt_mask: np.ndarray,
                  pred_alpha: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM and mask IoU of a render against the ground truth.

    ``pred_white`` / ``gt_white`` ``[H, W, 3]`` in [0, 1] over white; ``gt_mask`` / ``pred_alpha`` ``[H, W]``.
    PSNR and SSIM (11² uniform window, as the training loss) cover ``person_window``.
    """
    rows, cols = person_window(gt_mask, pred_alpha)
    pred = torch.as_tensor(np.asarray(pred_white, np.float32)[rows, cols])[None]
    gt = torch.as_tensor(np.asarray(gt_white, np.float32)[rows, cols])[None]
    return {"psnr": psnr(pred, gt), "ssim": float(ssim_map(pred.clamp(0, 1), gt).mean()),
            "iou": mask_iou(gt_mask, pred_alpha)}
