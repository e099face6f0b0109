"""Fixed-size image views for panels: numpy images shown through Dear PyGui raw textures."""
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


class ImageView:
    """A ``width`` x ``height`` pixel image item; ``show(image)`` replaces what it shows (UI thread)."""

    def __init__(self, registry: int | str, parent: int | str, width: int, height: int, button: bool = False,
                 callback=None, user_data=None):
        self.width, self.height = int(width), int(height)
        self.pixels = fit_image(np.full((1, 1, 3), EMPTY_GREY, np.float32), self.width, self.height)
        self.texture = dpg.add_raw_texture(self.width, self.height, self.pixels, format=dpg.mvFormat_Float_rgba,
                                           parent=registry)
        if button:
            self.item = dpg.add_image_button(self.texture, parent=parent, width=self.width, height=self.height,
                                             callback=callback, user_data=user_data)
        else:
            self.item = dpg.add_image(self.texture, parent=parent, width=self.width, height=self.height)

    def show(self, image: np.ndarray) -> None:
        # DPG keeps reading the buffer it was given: keep a reference to the new one.
        self.pixels = fit_image(image, self.width, self.height)
        dpg.set_value(self.texture, self.pixels)
