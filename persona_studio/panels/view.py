"""View panel: camera presets, field of view, background colour, screenshot, frame rate."""
from __future__ import annotations

import math

import dearpygui.dearpygui as dpg

from persona_studio.camera import MAX_FOV_Y, MIN_FOV_Y, VIEW_PRESETS

MOUSE_HELP = "Left drag: orbit   Right/middle drag: pan   Wheel: zoom"


def color_to_unit(rgba) -> list[float]:
    """A DPG colour value -> RGB in [0, 1]. DPG hands colours over as 0..1 floats from the picker but
    as 0..255 after an integer default, so anything above 1 means the 0..255 form."""
    rgb = [float(c) for c in rgba[:3]]
    return [c / 255.0 for c in rgb] if max(rgb) > 1.0 else rgb


class ViewPanel:
    """Controls of the viewport camera and image; every control changes one setting, and the viewport's
    dirty check decides whether that needs a new render."""

    title = "View"

    def __init__(self, studio):
        self.studio = studio
        self._fov = self._stats = self._camera_text = None

    @property
    def camera(self):
        return self.studio.viewport.camera

    def build(self, parent: int | str) -> None:
        guard = self.studio.guard
        with dpg.collapsing_header(label=self.title, parent=parent, default_open=True):
            with dpg.group(horizontal=True):
                for name in VIEW_PRESETS:
                    dpg.add_button(label=name.capitalize(), user_data=name,
                                   callback=guard(lambda s, a, name: self.camera.view_preset(name)))
            with dpg.group(horizontal=True):
                dpg.add_button(label="Reset view", callback=guard(lambda: self.reset_view()))
                dpg.add_button(label="Frame scene", callback=guard(lambda: self.studio.viewport.frame_scene()))
            self._fov = dpg.add_slider_float(label="FOV (deg)", min_value=MIN_FOV_Y, max_value=MAX_FOV_Y,
                                             default_value=self.camera.fov_y, width=170,
                                             callback=guard(lambda s, value: self.camera.set_fov(value)))
            dpg.add_color_edit(label="Background", default_value=[round(255 * c) for c in self.studio.viewport.background],
                               no_alpha=True, width=170,
                               callback=guard(lambda s, rgba: self.studio.viewport.set_background(color_to_unit(rgba))))
            dpg.add_button(label="Save viewport screenshot", callback=guard(lambda: self.studio.save_viewport_screenshot()))
            self._camera_text = dpg.add_text("", wrap=300)
            self._stats = dpg.add_text("", wrap=300)
            dpg.add_text(MOUSE_HELP, wrap=300, color=(150, 150, 150))

    def reset_view(self) -> None:
        """The camera's start view and field of view (Reset view, the Home key)."""
        self.camera.reset()
        dpg.set_value(self._fov, self.camera.fov_y)

    def refresh(self) -> None:
        """Update the read-outs (once per UI frame)."""
        cam = self.camera
        dpg.set_value(self._camera_text,
                      f"azimuth {math.degrees(cam.azimuth):.0f} deg, elevation {math.degrees(cam.elevation):.0f} deg, "
                      f"distance {cam.distance:.2f} m")
        frame = self.studio.viewport.latest_frame
        render_ms = (f"{1000 * frame.render_seconds:.1f} ms/render ({frame.drawn_by or 'viewport'})" if frame
                     else "no frame yet")
        rate = self.studio.viewport.frame_rate.rate()
        # The viewport renders only on change, so an idle view has no frame rate to speak of.
        viewport = f"viewport {rate:.0f} fps" if rate > 0 or self.studio.viewport.dirty else "viewport idle"
        dpg.set_value(self._stats, f"UI {dpg.get_frame_rate():.0f} fps, {viewport}\n{render_ms} at "
                                   f"{cam.width}x{cam.height}")
