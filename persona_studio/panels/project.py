"""Project panel: what the viewport shows, the input photo, the preset, and where outputs go."""
from __future__ import annotations

from pathlib import Path

import dearpygui.dearpygui as dpg
import numpy as np

from core.errors import UserError

THUMBNAIL_SIDE = 220  # pixels, the longer side of the photo preview
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_thumbnail(path: Path, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """An RGBA float32 ``[h, w, 4]`` preview of the photo at ``path``, longer side ``side`` pixels.

    Raises:
        UserError: the file is missing, not an image, or not a photo format we read.
    """
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() not in PHOTO_SUFFIXES:
        raise UserError(f"not a photo we can read (expected {', '.join(PHOTO_SUFFIXES)})", path)
    try:
        with Image.open(path) as image:
            image = image.convert("RGBA")
            image.thumbnail((side, side))
            return np.asarray(image, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read the image ({err})", path) from None


class ProjectPanel:
    """Shows the scene in the viewport, the photo (with a preview), the preset, and the output folder."""

    title = "Project"

    def __init__(self, studio):
        self.studio = studio
        self.photo: Path | None = None
        self._scene_text = self._photo_text = self._photo_group = self._output = None
        self._registry = None
        self._photo_pixels = None  # DPG reads texture buffers every frame: keep the preview alive

    @property
    def output_dir(self) -> Path:
        return Path(dpg.get_value(self._output) or ".").expanduser()

    def build(self, parent: int | str) -> None:
        self._registry = dpg.add_texture_registry()
        with dpg.collapsing_header(label=self.title, parent=parent, default_open=True):
            self._scene_text = dpg.add_text("", wrap=300)
            dpg.add_text(f"Preset: {self.studio.config.name}")
            self._output = dpg.add_input_text(label="Output folder", default_value=str(self.studio.output_dir),
                                              width=180)
            self._photo_text = dpg.add_text("Photo: none (drop a photo on the window)", wrap=300)
            self._photo_group = dpg.add_group()

    def set_photo(self, path: str | Path) -> None:
        """Show ``path`` as the project's photo (validated, previewed). Raises UserError for a bad file."""
        path = Path(path)
        pixels = load_thumbnail(path)
        height, width = pixels.shape[:2]
        dpg.delete_item(self._photo_group, children_only=True)
        dpg.delete_item(self._registry, children_only=True)  # the previous preview's texture
        texture = dpg.add_raw_texture(width, height, pixels, format=dpg.mvFormat_Float_rgba, parent=self._registry)
        dpg.add_image(texture, parent=self._photo_group)
        self._photo_pixels = pixels
        self.photo = path
        dpg.set_value(self._photo_text, f"Photo: {path}\n(reconstructing it in the studio comes with the trainer)")

    def refresh(self) -> None:
        scene = self.studio.viewport.scene
        text = "Scene: none" if scene is None else f"Scene: {scene.label or 'splats'}\n{scene.count:,} splats"
        dpg.set_value(self._scene_text, text)
