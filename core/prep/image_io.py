"""Load a user's photo into a float RGB array (+ optional alpha), with clear one-line errors.

Supported: JPEG (incl. CMYK), PNG (8/16-bit, grey, grey+alpha, palette with transparency, RGBA),
WebP, BMP, and anything else Pillow decodes. EXIF orientation is applied, so ``rgb`` is upright.
16-bit colour PNGs are decoded with OpenCV because Pillow reduces them to 8 bits.

Pixel convention (used throughout ``core.prep``): continuous pixel coordinates with the origin at
the top-left *corner* of the image; pixel ``(row i, col j)`` has its centre at ``(j + 0.5, i + 0.5)``.
Nothing in this module writes files.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from core.errors import UserError

MIN_SIDE = 64  # pixels; smaller photos cannot hold a usable person
MAX_ASPECT = 4.0  # longer side / shorter side
_OPAQUE = 1.0 - 0.5 / 255.0  # an alpha channel entirely above this carries no mask

_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 0x0112
_TAG_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm, millimetres
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Photo:
    """A decoded, upright photo.

    Attributes:
        rgb: [H, W, 3] float32 in [0, 1], sRGB-encoded (no linearisation).
        alpha: [H, W] float32 in [0, 1], or None when the file has no alpha or it is fully opaque.
        path: the file it came from.
        orig_size: (width, height) in pixels after EXIF rotation, before any downscaling.
        scale: factor applied to the original pixel grid (``rgb`` width = round(orig width * scale)); 1.0 if none.
        focal_35mm: EXIF FocalLengthIn35mmFilm in millimetres, or None when absent.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    path: Path
    orig_size: tuple[int, int]
    scale: float
    focal_35mm: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``rgb`` in pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def load_photo(path: str | Path, max_side: int | None = None, what: str = "photo") -> Photo:
    """Decode ``path`` into a :class:`Photo`, downscaling (area filter) so the longer side is <= ``max_side``.
    ``what`` names the file in errors (a photo, or a map that goes with one).

    Raises ``UserError`` (one line, naming the file) for a missing, empty, non-image, truncated,
    too small (< 64 px a side) or too elongated (> 4:1) photo.
    """
    path = Path(path)
    data = _read_bytes(path, what)
    with _strict_decoding():
        image, orientation, focal_35mm = _open_pillow(data, path)
        pixels = _decode_16bit_png(data, path) if _is_16bit_colour_png(data) else None
    if pixels is None:
        rgb, alpha = _pillow_to_arrays(image)
    else:
        pixels = apply_exif_orientation(pixels, orientation)
        rgb, alpha = pixels[..., :3], (pixels[..., 3] if pixels.shape[-1] == 4 else None)
    height, width = rgb.shape[:2]
    _check_geometry(width, height, path, what)
    scale = 1.0
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        rgb, alpha = _downscale(rgb, scale), (None if alpha is None else _downscale(alpha, scale))
    if alpha is not None and float(alpha.min()) >= _OPAQUE:
        alpha = None
    return Photo(
        rgb=np.ascontiguousarray(rgb, dtype=np.float32),
        alpha=None if alpha is None else np.ascontiguousarray(alpha, dtype=np.float32),
        path=path,
        orig_size=(width, height),
        scale=scale,
        focal_35mm=focal_35mm,
    )


def load_matching(path: str | Path, size: tuple[int, int], what: str) -> Photo:
    """Decode a map that belongs to a photo of ``size`` = (width, height) (a mask, an albedo: ``what`` names it
    in errors) and resize it to that size (area filter when shrinking, bilinear when enlarging).

    Raises ``UserError`` for what load_photo refuses and for an aspect ratio more than 1 % off the photo's.
    """
    import cv2

    image = load_photo(path, what=f"{what} image")
    width, height = size
    got_w, got_h = image.size
    if abs((got_w / got_h) / (width / height) - 1.0) > 0.01:
        raise UserError(f"{what} image is {got_w}x{got_h} px but the photo is {width}x{height} px; "
                        "it must have the same aspect ratio", path)
    if (got_w, got_h) == (width, height):
        return image
    method = cv2.INTER_AREA if got_w * got_h > width * height else cv2.INTER_LINEAR

    def resized(pixels: np.ndarray) -> np.ndarray:
        return np.clip(cv2.resize(pixels, (width, height), interpolation=method), 0.0, 1.0).astype(np.float32)

    alpha = None if image.alpha is None else resized(image.alpha)
    return Photo(rgb=resized(image.rgb), alpha=alpha, path=image.path, orig_size=image.orig_size,
                 scale=width / got_w, focal_35mm=image.focal_35mm)


def apply_exif_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Make an [H, W, ...] array upright given the EXIF Orientation tag (1..8), as Pillow's exif_transpose does."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return pixels[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.exists():
        raise UserError(f"{what} not found; check the path", path)
    if path.is_dir():
        raise UserError(f"is a folder, not a {what} file", path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read the {what} ({err.strerror or err})", path) from None
    if not data:
        raise UserError(f"the {what} file is empty (0 bytes)", path)
    return data


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Make Pillow raise on truncated data even if some other code enabled LOAD_TRUNCATED_IMAGES."""
    from PIL import ImageFile

    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _open_pillow(data: bytes, path: Path):
    """Fully decode with Pillow; return (upright image, original EXIF orientation, focal_35mm)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # forces the full decode, so truncated data fails here and not later
    except UnidentifiedImageError:
        raise UserError("not an image file Pillow can read (expected JPEG, PNG, WebP, BMP, ...)", path) from None
    except Image.DecompressionBombError:
        raise UserError("image is too large to decode safely (over Pillow's pixel limit)", path) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise UserError(f"image data is truncated or corrupt ({_one_line(err)})", path) from None
    exif = image.getexif()
    orientation = int(exif.get(_TAG_ORIENTATION, 1) or 1)
    focal = exif.get_ifd(_EXIF_IFD).get(_TAG_FOCAL_35MM)
    focal_35mm = float(focal) if focal else None
    try:
        upright = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as err:
        raise UserError(f"image data is corrupt ({_one_line(err)})", path) from None
    return upright, orientation, focal_35mm


def _is_16bit_colour_png(data: bytes) -> bool:
    # IHDR is always the first chunk: bit depth at byte 24, colour type at 25 (2 = RGB, 6 = RGBA).
    return data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[24] == 16 and data[25] in (2, 6)


def _decode_16bit_png(data: bytes, path: Path) -> np.ndarray:
    """[H, W, 3 or 4] float32 RGB(A) in [0, 1] at full 16-bit precision (not yet EXIF-rotated)."""
    import cv2

    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 3:
        raise UserError("16-bit PNG could not be decoded", path)
    order = [2, 1, 0, 3][: pixels.shape[-1]]  # OpenCV gives BGR(A)
    return pixels[..., order].astype(np.float32) / 65535.0


def _pillow_to_arrays(image) -> tuple[np.ndarray, np.ndarray | None]:
    """Pillow image of any mode -> ([H, W, 3] float32 RGB, [H, W] float32 alpha or None), both in [0, 1]."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (Pillow keeps these precise); "I" is how some versions expose 16-bit PNG grey.
        grey = np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1), None
    if mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1), None
    has_alpha = "A" in mode or "a" in mode or "transparency" in image.info
    converted = image.convert("RGBA" if has_alpha else "RGB")  # CMYK, palette, grey, YCbCr, 1-bit ...
    pixels = np.asarray(converted, dtype=np.float32) / 255.0
    if has_alpha:
        return pixels[..., :3], pixels[..., 3]
    return pixels, None


def _check_geometry(width: int, height: int, path: Path, what: str) -> None:
    if min(width, height) < MIN_SIDE:
        raise UserError(f"{what} is too small ({width}x{height} px); need at least {MIN_SIDE} px on each side", path)
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise UserError(
            f"{what} is too elongated ({width}x{height} px, {aspect:.1f}:1); crop it to at most {MAX_ASPECT:g}:1", path
        )


def _downscale(pixels: np.ndarray, scale: float) -> np.ndarray:
    """Area-filter resize of an [H, W] or [H, W, C] float array by ``scale`` < 1."""
    import cv2

    height, width = pixels.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(np.ascontiguousarray(pixels), size, interpolation=cv2.INTER_AREA)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
