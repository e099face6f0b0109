"""Project panel: the photo (drop, dialog or ``--photo``) and its reconstruction's stages, opening an
avatar bundle, imported frames for the next runs, recent projects, the output folder, and what the
viewport shows. Files dropped on the window are routed from here."""
from __future__ import annotations

from pathlib import Path

import dearpygui.dearpygui as dpg
import numpy as np

from core.errors import UserError
from core.frames.frameset import FrameSet
from core.motion import load_motion
from core.motion.clip import BVH_SUFFIX
from core.prep.supplied import SuppliedMaps
from persona_studio.panels.images import static_texture
from persona_studio.session import STAGE_TITLES, STAGES

THUMBNAIL_SIDE = 220  # pixels, the longer side of the photo preview
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PERSONA_SUFFIX = ".persona"  # the one-file avatar format of core.export
FRAMES_SUFFIX = ".npz"  # imported training frames (``persona-studio frames import``)
WRAP = 300  # pixels, text wrap width in the side panel


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
            image.draft("RGB", (side, side))  # JPEGs decode at a reduced scale: fast even for 20 MP photos
            image = image.convert("RGBA")
            image.thumbnail((side, side))
            return np.asarray(image, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except UnidentifiedImageError:
        raise UserError("cannot read the image: not an image file, or a damaged one", path) from None
    except OSError as err:
        raise UserError(f"cannot read the image ({err.strerror or err})", path) from None


def dialog_path(app_data: dict) -> Path:
    """The path a DPG file dialog returned: its selected file, else the typed name / chosen folder."""
    selections = (app_data or {}).get("selections") or {}
    if selections:
        return Path(next(iter(selections.values())))
    chosen = (app_data or {}).get("file_path_name")
    if not chosen:
        raise UserError("nothing was chosen in the file dialog")
    return Path(chosen)


def imported_frames_text(paths: list[Path]) -> str:
    """What the Project tab says about the imported frames the next run trains on."""
    if not paths:
        return "Imported frames: none (drop a `frames import` .npz to add one)"
    return "Imported frames: " + ", ".join(path.name for path in paths)


def maps_text(photo: Path, maps: SuppliedMaps) -> str:
    """What the Project tab says about the user's own mask and albedo images for ``photo`` (``maps``)."""
    if maps.described():
        return f"Using your {maps.described()}"
    return (f"Your own mask or albedo: the buttons below, or {photo.stem}.mask.png / {photo.stem}.albedo.png "
            "beside the photo")


def stage_overlay(stage: str, fraction: float, current: bool, detail: str) -> str:
    """The text on a stage's progress bar, e.g. "Photo prep 40% - fit body"."""
    text = f"{STAGE_TITLES[stage]} {100 * fraction:.0f}%"
    if current and detail:
        # The bar already names the stage: show only what is happening inside it.
        text += " - " + detail.split(": ", 1)[-1]
    return text


class ProjectPanel:
    """Photo, reconstruction stages, bundles, recent projects, output folder, scene read-out."""

    title = "Project"

    def __init__(self, studio):
        self.studio = studio
        self.photo: Path | None = None
        self.imported_frames: list[Path] = []  # `frames import` files that new runs train on
        self.initial_person = 0  # the Person field's value when the window is built (studio --person)
        self.chosen_maps = {"mask": None, "albedo": None}  # images chosen for this photo (else those beside it)
        self.map_dialogs: dict[str, int | str] = {}
        self._person = None
        self._scene_text = self._photo_text = self._photo_group = self._output = self._run_text = None
        self._preset_text = self._recent_group = None
        self._stage_bars: dict[str, int] = {}
        self._registry = None
        self.photo_dialog = self.bundle_dialog = self.frames_dialog = None
        self._frames_text = self._maps_text = None
        self._recent_shown: tuple = ()

    @property
    def output_dir(self) -> Path:
        return Path(dpg.get_value(self._output) or ".").expanduser()

    @property
    def person(self) -> int | None:
        """Which of several people in the photo new runs reconstruct: the K-th largest, or None for the one
        the pose detector picks (prep warns when there are several)."""
        value = dpg.get_value(self._person) if self._person is not None else self.initial_person
        return int(value) if value and value > 0 else None

    def build(self, parent: int | str) -> None:
        guard = self.studio.guard
        self._registry = dpg.add_texture_registry()
        self.photo_dialog = dpg.add_file_dialog(label="Open a photo or a .persona avatar", show=False, modal=True,
                                                width=700, height=450, callback=guard(self.on_photo_dialog))
        dpg.add_file_extension("Photos{" + ",".join(PHOTO_SUFFIXES) + "}", parent=self.photo_dialog)
        dpg.add_file_extension(PERSONA_SUFFIX, parent=self.photo_dialog)
        self.bundle_dialog = dpg.add_file_dialog(label="Open an avatar bundle folder", show=False, modal=True,
                                                 directory_selector=True, width=700, height=450,
                                                 callback=guard(self.on_bundle_dialog))
        self.frames_dialog = dpg.add_file_dialog(label="Add imported frames (from `persona-studio frames import`)",
                                                 show=False, modal=True, width=700, height=450,
                                                 callback=guard(self.on_frames_dialog))
        dpg.add_file_extension(".npz", parent=self.frames_dialog)
        for kind in self.chosen_maps:
            self.map_dialogs[kind] = dpg.add_file_dialog(
                label=f"Your {kind} image for the photo", show=False, modal=True, width=700, height=450,
                user_data=kind, callback=guard(self.on_map_dialog))
            dpg.add_file_extension("Images{" + ",".join(PHOTO_SUFFIXES) + "}", parent=self.map_dialogs[kind])
        with dpg.collapsing_header(label=self.title, parent=parent, default_open=True):
            with dpg.group(horizontal=True):
                dpg.add_button(label="Open photo...", callback=guard(lambda: dpg.show_item(self.photo_dialog)))
                dpg.add_button(label="Open avatar folder...",
                               callback=guard(lambda: dpg.show_item(self.bundle_dialog)))
            self._output = dpg.add_input_text(label="Output folder", default_value=str(self.studio.output_dir),
                                              width=180)
            self._preset_text = dpg.add_text("")
            self._photo_text = dpg.add_text("Photo: none (drop a photo on the window)", wrap=WRAP)
            self._photo_group = dpg.add_group()
            self._maps_text = dpg.add_text("", wrap=WRAP, color=(150, 150, 150))
            with dpg.group(horizontal=True):
                for kind in self.chosen_maps:
                    dpg.add_button(label=f"{kind.capitalize()} image...", user_data=kind,
                                   callback=guard(lambda sender, app_data, kind: dpg.show_item(self.map_dialogs[kind])))
                dpg.add_button(label="Clear", callback=guard(self.clear_maps))
            self._person = dpg.add_input_int(label="Person (0: auto)", default_value=self.initial_person, min_value=0,
                                             min_clamped=True, width=100)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Add imported frames...", callback=guard(lambda: dpg.show_item(self.frames_dialog)))
                dpg.add_button(label="Clear", callback=guard(self.clear_imported_frames))
            self._frames_text = dpg.add_text("", wrap=WRAP)
            for stage in STAGES:
                self._stage_bars[stage] = dpg.add_progress_bar(default_value=0.0, width=-1,
                                                               overlay=stage_overlay(stage, 0.0, False, ""))
            self._run_text = dpg.add_text("", wrap=WRAP)
            self._scene_text = dpg.add_text("", wrap=WRAP)
            dpg.add_text("Recent", color=(150, 150, 150))
            self._recent_group = dpg.add_group()

    # -- callbacks --------------------------------------------------------------------------------
    def on_photo_dialog(self, sender, app_data) -> None:
        """The file dialog's callback: reconstruct the chosen photo (or show a chosen .persona avatar)."""
        path = dialog_path(app_data)
        if path.suffix.lower() == PERSONA_SUFFIX:
            self.studio.open_bundle(path)
        else:
            self.studio.open_photo(path)

    def on_bundle_dialog(self, sender, app_data) -> None:
        """The folder dialog's callback: show the chosen avatar bundle."""
        self.studio.open_bundle(dialog_path(app_data))

    def on_map_dialog(self, sender, app_data, kind) -> None:
        """A map dialog's callback (``kind``: "mask" or "albedo", its user data): use the chosen image."""
        self.choose_map(kind, dialog_path(app_data))

    def on_frames_dialog(self, sender, app_data) -> None:
        """The frames dialog's callback: the next runs also train on the chosen imported frames."""
        self.use_imported_frames(dialog_path(app_data))

    def open_dropped(self, paths: list[str]) -> None:
        """Files dropped on the window (or passed in by a script): a photo is reconstructed, an avatar
        bundle folder or .persona file is opened, imported frames (.npz from ``frames import``) join the
        next run, a .bvh motion goes on the Pose tab's timeline. Raises UserError, naming the file, for
        anything else."""
        for path in map(Path, paths):
            if path.suffix.lower() in PHOTO_SUFFIXES:
                self.studio.open_photo(path)
            elif path.is_dir() or path.suffix.lower() == PERSONA_SUFFIX:
                self.studio.open_bundle(path)
            elif path.suffix.lower() == FRAMES_SUFFIX:
                self.use_imported_frames(path)
            elif path.suffix.lower() == BVH_SUFFIX:
                self.studio.pose_panel.set_motion(load_motion(path))
            else:
                raise UserError(f"cannot open this here; drop a photo ({', '.join(PHOTO_SUFFIXES)}), "
                                f"an avatar bundle folder, a {PERSONA_SUFFIX} file, imported frames "
                                f"({FRAMES_SUFFIX}) or a {BVH_SUFFIX} motion", path)

    def add_imported_frames(self, path: str | Path) -> int:
        """Train the next runs on ``path`` (``persona-studio frames import`` output) besides the generated
        frames; returns its frame count. Raises UserError for a file that is not a frame set. Needs no
        window (the command line's files are added before it opens)."""
        path = Path(path)
        count = len(FrameSet.load(path))  # one-line errors for anything else
        if path not in self.imported_frames:
            self.imported_frames.append(path)
        return count

    def use_imported_frames(self, path: str | Path) -> None:
        """``add_imported_frames`` from the window (a drop or the dialog), said in the status bar."""
        count = self.add_imported_frames(path)
        self.studio.status.info(f"{count} imported frames from {Path(path).name} join the next run (press Start)")

    def clear_imported_frames(self) -> None:
        self.imported_frames.clear()

    def set_photo(self, path: str | Path) -> None:
        """Show ``path`` as the project's photo (validated, previewed). Raises UserError for a bad file."""
        path = Path(path)
        pixels = load_thumbnail(path)
        height, width = pixels.shape[:2]
        dpg.delete_item(self._photo_group, children_only=True)
        dpg.delete_item(self._registry, children_only=True)  # the previous preview's texture
        texture = static_texture(self._registry, pixels)  # uploaded once, not every UI frame
        dpg.add_image(texture, parent=self._photo_group, width=width, height=height)
        self.photo = path
        self.chosen_maps = dict.fromkeys(self.chosen_maps)  # chosen for the previous photo
        dpg.set_value(self._photo_text, f"Photo: {path}")
        self._show_maps()

    def supplied_maps(self, photo: Path) -> SuppliedMaps:
        """The user's mask and albedo for ``photo``: chosen with the buttons (for the project's photo), else
        found beside it."""
        chosen = self.chosen_maps if photo == self.photo else {}
        return SuppliedMaps.for_photo(photo, chosen.get("mask"), chosen.get("albedo"))

    def choose_map(self, kind: str, path: str | Path) -> None:
        """Use ``path`` as the photo's ``kind`` ("mask" or "albedo") image in the next run (Start). Checked now:
        raises UserError for an unreadable image or one of another aspect ratio than the photo's."""
        from core.prep.image_io import load_matching, load_photo

        if self.photo is None:
            raise UserError("open a photo first; its mask and albedo images come after")
        load_matching(path, load_photo(self.photo).size, kind)
        self.chosen_maps[kind] = Path(path)
        self._show_maps()
        self.studio.status.info(f"Your {kind} image {Path(path).name} is used by the next run (press Start)")

    def clear_maps(self) -> None:
        self.chosen_maps = dict.fromkeys(self.chosen_maps)
        self._show_maps()

    def _show_maps(self) -> None:
        if self.photo is not None:
            dpg.set_value(self._maps_text, maps_text(self.photo, self.supplied_maps(self.photo)))

    def _open_recent(self, sender, app_data, entry) -> None:
        if entry.kind == "photo":
            self.studio.open_photo(Path(entry.path))
        else:
            self.studio.open_bundle(Path(entry.path))

    # -- per frame ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        scene = self.studio.viewport.scene
        text = "Scene: none" if scene is None else f"Scene: {scene.label or 'splats'}\n{scene.count:,} splats"
        dpg.set_value(self._scene_text, text)
        dpg.set_value(self._preset_text, f"Preset: {self.studio.config.name}")
        dpg.set_value(self._frames_text, imported_frames_text(self.imported_frames))
        session = self.studio.session
        if session is not None:
            status = session.status()
            for stage, bar in self._stage_bars.items():
                fraction = status.fractions[stage]
                dpg.set_value(bar, fraction)
                dpg.configure_item(bar, overlay=stage_overlay(stage, fraction, stage == status.stage, status.detail))
            dpg.set_value(self._run_text, f"Run: {status.state} - {status.detail}")
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        entries = tuple(self.studio.recent.entries)
        if entries == self._recent_shown:
            return
        self._recent_shown = entries
        dpg.delete_item(self._recent_group, children_only=True)
        if not entries:
            dpg.add_text("(none yet)", parent=self._recent_group, color=(150, 150, 150))
        for entry in entries:
            dpg.add_button(label=entry.label, parent=self._recent_group, user_data=entry, width=-1,
                           callback=self.studio.guard(self._open_recent))
