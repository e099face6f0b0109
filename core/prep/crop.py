"""Person crop boxes, the pinhole intrinsics that go with them, and applying a crop consistently.

Pixel convention: continuous coordinates with the origin at the image's top-left *corner*, pixel
centres at +0.5 (the same as gsplat and mediapipe's normalised x * width). With it, cropping is a
pure translation and resizing a pure scale, so ``crop_intrinsics`` and ``crop_points`` are exact and
agree with ``crop_image`` (OpenCV's resize uses the same centre mapping).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm
# Default lens when the photo has no EXIF FocalLengthIn35mmFilm: the "normal" lens whose focal length
# equals the film diagonal, i.e. focal (px) = image diagonal (px), about 53 degrees diagonal field of
# view. This is the common human-mesh-recovery default (as in CLIFF) and sits between phone main
# cameras (~26 mm) and portrait lenses (50-85 mm).
DEFAULT_FOCAL_35MM = FULL_FRAME_DIAGONAL_MM


def focal_px_from_35mm(width: int, height: int, focal_35mm: float) -> float:
    """Focal length in pixels for a 35 mm-equivalent focal length (mm), matched on the diagonal.

    The 35 mm-equivalent is defined by equal diagonal field of view, so this is exact for any aspect.
    Assumes the photo was not cropped after capture (the EXIF value describes the full sensor frame).
    """
    return math.hypot(width, height) * focal_35mm / FULL_FRAME_DIAGONAL_MM


def default_intrinsics(width: int, height: int, focal_35mm: float | None = None) -> np.ndarray:
    """[3, 3] float64 pinhole K for a ``width`` x ``height`` photo (pixels), principal point at the centre.

    ``focal_35mm`` (e.g. ``Photo.focal_35mm``) sets the focal length; None uses ``DEFAULT_FOCAL_35MM``.
    """
    focal = focal_px_from_35mm(width, height, focal_35mm or DEFAULT_FOCAL_35MM)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Crop:
    """An integer box in the source image, resized to ``out_width`` x ``out_height``.

    The box may extend past the image borders; those pixels are padding when applied.
    """

    x0: int  # box left edge in source pixels (may be negative)
    y0: int  # box top edge in source pixels (may be negative)
    width: int  # box size in source pixels
    height: int
    out_width: int  # output size in pixels
    out_height: int

    @property
    def scale_x(self) -> float:
        return self.out_width / self.width

    @property
    def scale_y(self) -> float:
        return self.out_height / self.height

    @property
    def matrix(self) -> np.ndarray:
        """[3, 3] affine map from source pixel coordinates to output pixel coordinates."""
        sx, sy = self.scale_x, self.scale_y
        return np.array([[sx, 0.0, -self.x0 * sx], [0.0, sy, -self.y0 * sy], [0.0, 0.0, 1.0]])


def person_crop(
    image_size: tuple[int, int],
    bbox: tuple[float, float, float, float],
    margin: float = 0.1,
    out_size: int | tuple[int, int] | None = None,
    square: bool = True,
) -> Crop:
    """A box around the person ``bbox`` = (x0, y0, x1, y1) px in an image of ``image_size`` = (width, height).

    The box is centred on ``bbox``, grown by ``margin`` x the bbox's longer side on every side, square
    if ``square`` else with the bbox's aspect. A box that fits inside the image is shifted to lie inside
    it (no padding); a bigger one stays centred and is padded. ``out_size``: None keeps the box's pixel
    size, an int is the output's longer side (aspect kept), a (width, height) pair is used as is.
    """
    image_w, image_h = image_size
    bx0, by0, bx1, by1 = (float(v) for v in bbox)
    if not (bx1 > bx0 and by1 > by0):
        raise ValueError(f"empty person bbox {bbox}")
    pad = margin * max(bx1 - bx0, by1 - by0)
    box_w, box_h = bx1 - bx0 + 2 * pad, by1 - by0 + 2 * pad
    if square:
        box_w = box_h = max(box_w, box_h)
    width, height = math.ceil(box_w), math.ceil(box_h)
    x0 = _place(0.5 * (bx0 + bx1), width, image_w)
    y0 = _place(0.5 * (by0 + by1), height, image_h)
    if out_size is None:
        out_w, out_h = width, height
    elif isinstance(out_size, int):
        longer = max(width, height)
        out_w, out_h = max(1, round(width * out_size / longer)), max(1, round(height * out_size / longer))
    else:
        out_w, out_h = int(out_size[0]), int(out_size[1])
    return Crop(x0, y0, width, height, out_w, out_h)


def crop_intrinsics(K: np.ndarray, crop: Crop) -> np.ndarray:
    """[3, 3] intrinsics of the cropped+resized image: projecting with it equals projecting with ``K`` then cropping."""
    return crop.matrix @ np.asarray(K, dtype=np.float64)


def crop_points(points: np.ndarray, crop: Crop) -> np.ndarray:
    """Map [..., D >= 2] points (x px, y px, extra columns kept) from the source image into the crop."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = (out[..., 0] - crop.x0) * crop.scale_x
    out[..., 1] = (out[..., 1] - crop.y0) * crop.scale_y
    return out.astype(np.result_type(points, np.float32))


def uncrop_points(points: np.ndarray, crop: Crop) -> np.ndarray:
    """Inverse of ``crop_points``: [..., D >= 2] crop pixel coordinates back to source pixel coordinates."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] / crop.scale_x + crop.x0
    out[..., 1] = out[..., 1] / crop.scale_y + crop.y0
    return out.astype(np.result_type(points, np.float32))


def crop_image(image: np.ndarray, crop: Crop, fill: float = 0.0) -> np.ndarray:
    """Cut ``crop``'s box out of an [H, W] or [H, W, C] image (padding with ``fill``) and resize it.

    Returns [out_height, out_width(, C)] with the input's dtype for float inputs, float32 otherwise
    (so masks stay soft). Uses an area filter when shrinking and bilinear when enlarging.
    """
    import cv2

    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
    height, width = image.shape[:2]
    box = np.full((crop.height, crop.width) + image.shape[2:], fill, dtype=image.dtype)
    sx0, sy0 = max(crop.x0, 0), max(crop.y0, 0)
    sx1, sy1 = min(crop.x0 + crop.width, width), min(crop.y0 + crop.height, height)
    if sx1 > sx0 and sy1 > sy0:
        box[sy0 - crop.y0 : sy1 - crop.y0, sx0 - crop.x0 : sx1 - crop.x0] = image[sy0:sy1, sx0:sx1]
    if (crop.out_width, crop.out_height) == (crop.width, crop.height):
        return box
    shrinking = crop.out_width * crop.out_height < crop.width * crop.height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(box, (crop.out_width, crop.out_height), interpolation=interpolation)
    return resized.reshape((crop.out_height, crop.out_width) + image.shape[2:])


def _place(centre: float, size: int, limit: int) -> int:
    """Left/top edge of a ``size`` box centred at ``centre``, shifted inside [0, limit] when it fits."""
    start = round(centre - size / 2.0)
    if size <= limit:
        start = min(max(start, 0), limit - size)
    return int(start)
