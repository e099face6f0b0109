"""Fixed-size image views for panels: numpy images shown through Dear PyGui static textures.

DPG re-uploads every raw (and dynamic) texture in every UI frame, shown or not, and on a software GL
that upload is paid by every frame; a static texture is uploaded once. Panel images change seldom (a
new inspection, a new photo), so each change makes a new static texture and deletes the old one.
"""
from __future__ import annotations

import dearpygui.dearpygui as dpg
import numpy as np

EMPTY_GREY = 0.18  # what an image view shows before its first image, and around letterboxed images


def fit_image(image: np.ndarray, width: int, height: int, fill: float = EMPTY_GREY) -> np.ndarray:
    """``image [h, w, 3|4]`` in [0, 1] scaled to fit ``width`` x ``height`` (aspect kept, centred,
    letterboxed with grey) -> RGBA float32 ``[height, width, 4]``."""
    import cv2

    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    resized = cv2.resize(np.ascontiguousarray(image[..., :3]), (new_w, new_h), interpolation=interpolation)
    out = np.full((height, width, 4), fill, np.float32)
    out[..., 3] = 1.0
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top:top + new_h, left:left + new_w, :3] = np.clip(resized.reshape(new_h, new_w, -1)[..., :3], 0.0, 1.0)
    return out


def static_texture(registry: int | str, pixels: np.ndarray) -> int:
    """A static texture of ``pixels [h, w, 4]`` float32 RGBA in ``registry`` (DPG copies the pixels, so
    the array need not be kept); returns its id."""
    height, width = pixels.shape[:2]
    return dpg.add_static_texture(width, height, np.ascontiguousarray(pixels, np.float32), parent=registry)


class ImageView:
    """A ``width`` x ``height`` pixel image item; ``show(image)`` replaces what it shows (UI thread)."""

    def __init__(self, registry: int | str, parent: int | str, width: int, height: int, button: bool = False,
                 callback=None, user_data=None):
        self.width, self.height = int(width), int(height)
        self.registry = registry
        self.pixels = fit_image(np.full((1, 1, 3), EMPTY_GREY, np.float32), self.width, self.height)
        self.texture = static_texture(registry, self.pixels)
        if button:
            self.item = dpg.add_image_button(self.texture, parent=parent, width=self.width, height=self.height,
                                             callback=callback, user_data=user_data)
        else:
            self.item = dpg.add_image(self.texture, parent=parent, width=self.width, height=self.height)

    def show(self, image: np.ndarray) -> None:
        self.pixels = fit_image(image, self.width, self.height)
        old, self.texture = self.texture, static_texture(self.registry, self.pixels)
        dpg.configure_item(self.item, texture_tag=self.texture)
        dpg.delete_item(old)  # only once nothing points at it
