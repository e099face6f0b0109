"""Small, atomic image file helpers for engine outputs (PNG in, float arrays out)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import UserError
from core.io.atomic import atomic_path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (any shape) -> uint8 with rounding."""
    return (np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` float [0, 1] (or uint8) as PNG, atomically."""
    array = image if image.dtype == np.uint8 else to_uint8(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def load_png(path: str | Path, channels: int | None = None) -> np.ndarray:
    """Read a PNG we wrote -> float32 in [0, 1], ``[H, W]`` (channels=1) or ``[H, W, C]``."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels or 0, img.mode)
            array = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except OSError as err:
        raise UserError(f"cannot read image: {err}", path) from None
    return array
