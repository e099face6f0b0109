"""Geometry weights panel: a slider per loss weight per frame type (photo / generated), applied to the
running trainer at its next step, and "save as preset"."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import dearpygui.dearpygui as dpg

from core.config import FrameLossWeights, LossConfig, save_preset
from core.errors import UserError

FRAME_TYPES = ("photo", "generated")
# Slider upper bound per weight (lower bound 0 = term off). Ctrl+click a slider to type a larger value.
WEIGHT_RANGES = {"image": 2.0, "image_refined": 1.0, "mask": 5.0, "depth": 0.1, "normal": 5.0, "part_seg": 5.0,
                 "albedo": 1.0, "hand_mask": 100.0}
WEIGHT_LABELS = {"image": "image", "image_refined": "image (refined)", "mask": "mask", "depth": "depth",
                 "normal": "normal", "part_seg": "part seg", "albedo": "albedo", "hand_mask": "hand mask"}
DEFAULT_PRESET_NAME = "my-weights"


def with_weight(loss: LossConfig, frame_type: str, key: str, value: float) -> LossConfig:
    """A copy of ``loss`` with ``frame_type``'s (photo / generated) weight ``key`` set to ``value`` (>= 0)."""
    if frame_type not in FRAME_TYPES:
        raise ValueError(f"frame type must be one of {FRAME_TYPES}, got {frame_type!r}")
    if key not in {f.name for f in dataclasses.fields(FrameLossWeights)}:
        raise ValueError(f"unknown loss weight {key!r}")
    loss = copy.deepcopy(loss)
    setattr(getattr(loss, frame_type), key, max(0.0, float(value)))
    return loss


def preset_target(text: str, output_dir: Path) -> Path:
    """Where "save as preset" writes: a name -> ``<output_dir>/<name>.toml``; a path ending in .toml as is."""
    text = text.strip() or DEFAULT_PRESET_NAME
    path = Path(text).expanduser()
    if path.suffix.lower() == ".toml":
        return path
    if path.name != text:
        raise UserError("give a preset name (saved into the output folder) or a path ending in .toml", text)
    return output_dir / f"{text}.toml"


class WeightsPanel:
    """Sliders over ``studio.config.loss``; every change goes to ``studio.set_loss_weights``."""

    title = "Geometry weights"

    def __init__(self, studio):
        self.studio = studio
        self.sliders: dict[tuple[str, str], int] = {}
        self._name = None

    def build(self, parent: int | str) -> None:
        guard = self.studio.guard
        with dpg.collapsing_header(label=self.title, parent=parent, default_open=False):
            dpg.add_text("Applied at the next training step. Ctrl+click to type a value.", wrap=300,
                         color=(150, 150, 150))
            for frame_type in FRAME_TYPES:
                dpg.add_text(f"{frame_type.capitalize()} frames")
                weights = getattr(self.studio.config.loss, frame_type)
                for key, upper in WEIGHT_RANGES.items():
                    self.sliders[(frame_type, key)] = dpg.add_slider_float(
                        label=WEIGHT_LABELS[key], default_value=getattr(weights, key), min_value=0.0,
                        max_value=max(upper, getattr(weights, key)), format="%.4g", width=170,
                        user_data=(frame_type, key), callback=guard(self.on_slider))
            with dpg.group(horizontal=True):
                self._name = dpg.add_input_text(default_value=DEFAULT_PRESET_NAME, width=150,
                                                hint="name or path.toml")
                dpg.add_button(label="Save as preset", callback=guard(lambda: self.save_preset()))

    def on_slider(self, sender, value, user_data) -> None:
        frame_type, key = user_data
        self.set_weight(frame_type, key, value)

    def set_weight(self, frame_type: str, key: str, value: float) -> None:
        """Change one weight of the run (and of the next run) and move its slider."""
        self.studio.set_loss_weights(with_weight(self.studio.config.loss, frame_type, key, value))
        dpg.set_value(self.sliders[(frame_type, key)], float(value))

    def sync(self) -> None:
        """Show ``studio.config.loss`` on the sliders (after a preset change)."""
        for (frame_type, key), slider in self.sliders.items():
            dpg.set_value(slider, getattr(getattr(self.studio.config.loss, frame_type), key))

    def save_preset(self, text: str | None = None) -> Path:
        """Save the whole configuration with the current weights as a preset TOML; returns its path."""
        path = preset_target(dpg.get_value(self._name) if text is None else text, self.studio.project.output_dir)
        config = copy.deepcopy(self.studio.config)
        config.name = path.stem
        config.description = f"saved from persona-studio (based on {self.studio.config.name})"
        try:
            save_preset(config, path)
        except OSError as err:
            raise UserError(f"cannot write the preset ({err.strerror or err})", path) from None
        self.studio.status.info(f"Saved preset {path} (use it with --preset {path})")
        return path

    def refresh(self) -> None:
        pass
