"""The person's own colour at the soft edge of the mask: a photo pixel there mixes person and backdrop.

With coverage ``a`` a photo pixel is ``I = a F + (1 - a) B`` (person colour F, backdrop B). Training
composites a premultiplied target ``P`` over a background; ``P = a I`` (the naive product) counts the
backdrop once more: at ``a = 0.5`` it is ``0.25 F + 0.25 B`` instead of ``0.5 F``, and the avatar's edge
Gaussians learn the backdrop's colour (grey seams down the sides of arms and legs in other views).
``premultiplied_foreground`` estimates B near each edge pixel from the backdrop around it and returns
``P = I - (1 - a) B``. A photo already over black (``B = 0``) comes back unchanged: ``P = I``.
"""
from __future__ import annotations

import numpy as np

BACKDROP_BELOW = 0.02  # pixels with less coverage than this show the backdrop alone
NEAR_SIGMA = 0.01  # of the image's longer side: the local backdrop estimate (5 px at 512)


def backdrop_colour(image: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """``[H, W, 3]`` the backdrop's colour around each pixel: a normalised Gaussian blur (``sigma_px``) of the
    pixels with coverage below ``BACKDROP_BELOW``; where none is near, a 4x wider blur; where still none,
    their mean (grey 0.5 without any backdrop pixel)."""
    import cv2

    image = np.asarray(image, np.float32)
    seen = (np.asarray(mask, np.float32) < BACKDROP_BELOW).astype(np.float32)
    if not seen.any():
        return np.full_like(image, 0.5)
    estimate = np.broadcast_to(image[seen > 0].mean(axis=0), image.shape).copy()
    for sigma in (4.0 * sigma_px, sigma_px):  # the near estimate overrides the far one where it has support
        weight = cv2.GaussianBlur(seen, (0, 0), sigma)
        colour = cv2.GaussianBlur(image * seen[..., None], (0, 0), sigma)
        known = weight > 0.05
        estimate[known] = colour[known] / weight[known, None]
    return estimate


def premultiplied_foreground(image: np.ndarray, mask: np.ndarray, sigma: float = NEAR_SIGMA) -> np.ndarray:
    """``[H, W, 3]`` float32 premultiplied person colour ``a F`` of a photo ``image [H, W, 3]`` in [0, 1] with
    coverage ``mask [H, W]``: ``image - (1 - a) backdrop``, each channel kept within ``[0, a]``.
    ``sigma``: the backdrop blur, a fraction of the image's longer side."""
    image = np.asarray(image, np.float32)
    alpha = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)[..., None]
    backdrop = backdrop_colour(image, alpha[..., 0], sigma * max(image.shape[:2]))
    return np.clip(image - (1.0 - alpha) * backdrop, 0.0, alpha).astype(np.float32)
