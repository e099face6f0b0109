"""The viewport inside Dear PyGui: a raw float texture showing the controller's frames, with mouse navigation.

DPG re-uploads a raw texture from its numpy buffer every UI frame, so showing a new frame is just
``set_value``; the texture is recreated only when the image size changes. Everything here runs in the
UI thread; rendering itself happens in the controller's backend (the GL render thread).
"""
from __future__ import annotations

import time
from pathlib import Path

import dearpygui.dearpygui as dpg
import numpy as np

from core.io.images import save_png
from persona_studio.viewport.controller import ViewportController
from persona_studio.viewport.navigation import MouseButtons, MouseNavigator


class ViewportWidget:
    """Fills ``parent`` (a child window with zero padding) with the rendered view; call ``update()`` every frame."""

    def __init__(self, controller: ViewportController, parent: int | str):
        self.controller = controller
        self.parent = parent
        self.navigator = MouseNavigator(controller.camera)
        self._registry = dpg.add_texture_registry()
        self._pixels = np.zeros((1, 1, 4), np.float32)  # DPG reads this buffer every frame: keep it alive
        self._texture = dpg.add_raw_texture(1, 1, self._pixels, format=dpg.mvFormat_Float_rgba, parent=self._registry)
        self.image = dpg.add_image(self._texture, parent=parent)
        self._wheel_steps = 0.0
        # The stages of the frame shown by the last ``update`` (the controller's, then the texture upload).
        self.frame_stamps: tuple[tuple[str, float], ...] = ()
        with dpg.handler_registry() as self._handlers:
            dpg.add_mouse_wheel_handler(callback=self._on_wheel)

    def _on_wheel(self, sender, steps) -> None:
        self._wheel_steps += float(steps)

    def update(self) -> None:
        """Fit the camera to the available area, apply mouse input, tick the controller, show a new frame."""
        width, height = dpg.get_item_rect_size(self.parent)
        if width > 1 and height > 1:
            self.controller.camera.set_size(width, height)
        hovered = bool(dpg.is_item_hovered(self.image))
        buttons = MouseButtons(dpg.is_mouse_button_down(dpg.mvMouseButton_Left),
                               dpg.is_mouse_button_down(dpg.mvMouseButton_Right),
                               dpg.is_mouse_button_down(dpg.mvMouseButton_Middle))
        self.navigator.update(tuple(dpg.get_mouse_pos(local=False)), buttons, hovered)
        self.navigator.wheel(self._wheel_steps, hovered)
        self._wheel_steps = 0.0
        frame = self.controller.tick()
        if frame is not None:
            self._show(frame.image)
            self.frame_stamps = (*self.controller.latest_stamps, ("texture upload", time.perf_counter()))

    def _show(self, image: np.ndarray) -> None:
        """Point the texture at ``image [h, w, 4]`` float32 (recreated when the size changed) and show it
        at the camera's size (a reduced-resolution frame during camera motion is stretched)."""
        if image.shape != self._pixels.shape:
            height, width = image.shape[:2]
            old = self._texture
            self._texture = dpg.add_raw_texture(width, height, image, format=dpg.mvFormat_Float_rgba,
                                                parent=self._registry)
            dpg.configure_item(self.image, texture_tag=self._texture)
            dpg.delete_item(old)
        else:
            dpg.set_value(self._texture, image)
        self._pixels = image
        dpg.configure_item(self.image, width=self.controller.camera.width, height=self.controller.camera.height)

    def save_png(self, path: str | Path) -> Path:
        """Save the last shown viewport image (RGB) as a PNG, atomically (at reduced resolution if taken
        while the camera moves). Returns the path."""
        frame = self.controller.latest_frame
        if frame is None:
            raise RuntimeError("the viewport has not rendered a frame yet")
        save_png(path, frame.image[..., :3])
        return Path(path)
