"""Mouse navigation of the viewport camera, independent of the GUI toolkit (so it can be tested).

Left drag orbits, right or middle drag pans, the wheel zooms. A drag only starts with a press over the
viewport image, and then follows the mouse even outside it until the button is released.
"""
from __future__ import annotations

from dataclasses import dataclass

from persona_studio.camera import Camera

ORBIT, PAN = "orbit", "pan"


@dataclass
class MouseButtons:
    left: bool = False
    right: bool = False
    middle: bool = False


class MouseNavigator:
    """Turns per-frame mouse state into camera moves. Call ``update`` once per UI frame."""

    def __init__(self, camera: Camera):
        self.camera = camera
        self.mode: str | None = None
        self._last_pos: tuple[float, float] | None = None
        self._was_down = MouseButtons()

    def update(self, pos: tuple[float, float], buttons: MouseButtons, hovered: bool) -> bool:
        """Apply this frame's mouse state (``pos`` in pixels, any fixed origin). Returns True if the camera moved."""
        pressed_left = buttons.left and not self._was_down.left
        pressed_pan = (buttons.right and not self._was_down.right) or (buttons.middle and not self._was_down.middle)
        self._was_down = MouseButtons(buttons.left, buttons.right, buttons.middle)
        if self.mode is None and hovered and (pressed_left or pressed_pan):
            self.mode = ORBIT if pressed_left else PAN
            self._last_pos = pos
            return False
        held = buttons.left if self.mode == ORBIT else (buttons.right or buttons.middle)
        if self.mode is None or not held:
            self.mode = None
            return False
        dx, dy = pos[0] - self._last_pos[0], pos[1] - self._last_pos[1]
        self._last_pos = pos
        if dx == 0 and dy == 0:
            return False
        if self.mode == ORBIT:
            self.camera.orbit(dx, dy)
        else:
            self.camera.pan(dx, dy)
        return True

    def wheel(self, steps: float, hovered: bool) -> bool:
        """Zoom by wheel ``steps`` (positive = away from the user = closer) if the mouse is over the view."""
        if not hovered or steps == 0:
            return False
        self.camera.zoom(steps)
        return True
