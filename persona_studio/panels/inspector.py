"""Balanced sampling inspector (its own window): every training frame's thumbnail with its draw count,
the photo-vs-generated share, the photo's seam boundary and albedo, and a selected frame's targets
(RGB, mask, depth, normal, part segmentation) next to the current avatar's render of that frame.

Renders are asked of the training worker (``session.request_inspection``), which makes them between
two steps; they refresh on demand or every few seconds, never every UI frame.
"""
from __future__ import annotations

import time

import dearpygui.dearpygui as dpg
import numpy as np

from persona_studio.panels.images import ImageView

THUMBNAIL_SIDE = 56  # pixels
THUMBNAILS_PER_ROW = 8
TARGET_SIDE = 120  # pixels, each target / render image
PHOTO_SIDE = 180  # pixels, the seam map and the albedo
AUTO_REFRESH_SECONDS = 5.0
COUNTS_INTERVAL = 1.0  # seconds between draw-count updates
ROWS = (("rgb", "RGB"), ("mask", "mask"), ("depth", "depth"), ("normal", "normal"), ("part_seg", "part seg"))


def share_text(draw_counts: np.ndarray, photo_share_target: float) -> str:
    """e.g. "photo drawn 61 of 120 times (50.8 %; target 50 %)"."""
    total = int(np.sum(draw_counts))
    if total == 0:
        return "no draws yet"
    photo = int(draw_counts[0])
    return (f"photo drawn {photo} of {total} times ({100 * photo / total:.1f} %; "
            f"target {100 * photo_share_target:.0f} %)")


class InspectorPanel:
    """The inspector window; ``show()`` opens it, ``refresh()`` runs every UI frame but does little."""

    title = "Balanced sampling inspector"

    def __init__(self, studio):
        self.studio = studio
        self.window = None
        self.selected = 0
        self.auto = None
        self._registry = self._summary = self._selected_text = self._grid = self._step_text = None
        self._thumbnails: list[ImageView] = []
        self._count_texts: list[int] = []
        self._grid_session = None
        self._views: dict[tuple[str, str], ImageView] = {}
        self._seam = self._albedo = None
        self._inspection_seen = 0
        self._inspection_session = None
        self._last_request = -np.inf
        self._last_counts = -np.inf
        self.last_inspection = None

    def build(self, parent: int | str) -> None:
        """Creates its own (hidden) window; ``parent`` is unused."""
        guard = self.studio.guard
        self._registry = dpg.add_texture_registry()
        height = min(780, self.studio.window_size[1] - 40)
        with dpg.window(label=self.title, show=False, width=680, height=height, pos=(360, 20)) as self.window:
            self._summary = dpg.add_text("no training run yet", wrap=640)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Refresh now", callback=guard(lambda: self.request()))
                self.auto = dpg.add_checkbox(label=f"every {AUTO_REFRESH_SECONDS:.0f} s", default_value=True)
                self._step_text = dpg.add_text("")
            dpg.add_text("Training frames (click one; the number is how often it was drawn)", color=(150, 150, 150))
            self._grid = dpg.add_child_window(height=2 * (THUMBNAIL_SIDE + 40) + 10, border=True)
            self._selected_text = dpg.add_text("")
            with dpg.group(horizontal=True):
                with dpg.group():
                    for key, label in ROWS:
                        with dpg.group(horizontal=True):
                            for column in ("target", "render"):
                                self._views[(key, column)] = ImageView(self._registry, dpg.last_container(),
                                                                       TARGET_SIDE, TARGET_SIDE)
                            dpg.add_text(label)
                with dpg.group():
                    dpg.add_text("columns: target | current render", color=(150, 150, 150))
                    dpg.add_text("photo: seam boundary (red = image weight < 1)")
                    self._seam = ImageView(self._registry, dpg.last_container(), PHOTO_SIDE, PHOTO_SIDE)
                    dpg.add_text("photo: albedo target")
                    self._albedo = ImageView(self._registry, dpg.last_container(), PHOTO_SIDE, PHOTO_SIDE)

    # -- actions --------------------------------------------------------------------------------------
    def show(self) -> None:
        dpg.show_item(self.window)
        dpg.focus_item(self.window)
        self.request()

    def hide(self) -> None:
        dpg.hide_item(self.window)

    def select(self, frame: int) -> None:
        """Inspect training frame ``frame`` (0 = the photo)."""
        self.selected = int(frame)
        self.request()

    def request(self) -> None:
        session = self.studio.session
        if session is not None:
            session.request_inspection(self.selected)
            self._last_request = time.monotonic()

    @property
    def visible(self) -> bool:
        return bool(self.window is not None and dpg.is_item_shown(self.window))

    # -- per frame -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        session = self.studio.session
        if session is None or not self.visible:
            return
        if self._grid_session is not session and session.thumbnails is not None:
            self._build_grid(session)
        now = time.monotonic()
        if dpg.get_value(self.auto) and now - self._last_request >= AUTO_REFRESH_SECONDS:
            self.request()
        if now - self._last_counts >= COUNTS_INTERVAL:
            self._last_counts = now
            self._show_counts(session)
        if self._inspection_session is not session:
            self._inspection_seen, self._inspection_session = 0, session
        got = session.inspections.poll(self._inspection_seen)
        if got is not None:
            self._inspection_seen, inspection = got
            self._show(inspection)

    def _build_grid(self, session) -> None:
        dpg.delete_item(self._grid, children_only=True)
        self._thumbnails, self._count_texts = [], []
        self._grid_session = session
        thumbnails = session.thumbnails
        row = None
        for index, image in enumerate(thumbnails):
            if index % THUMBNAILS_PER_ROW == 0:
                row = dpg.add_group(horizontal=True, parent=self._grid)
            cell = dpg.add_group(parent=row)
            view = ImageView(self._registry, cell, THUMBNAIL_SIDE, THUMBNAIL_SIDE, button=True,
                             callback=self.studio.guard(lambda s, a, frame: self.select(frame)), user_data=index)
            view.show(image)
            self._thumbnails.append(view)
            self._count_texts.append(dpg.add_text(f"{'P' if index == 0 else index}: 0", parent=cell))

    def _show_counts(self, session) -> None:
        snapshot = self.studio.latest_snapshot
        counts = None if snapshot is None else snapshot.draw_counts
        if counts is None:
            return
        dpg.set_value(self._summary, share_text(counts, session.config.sampling.photo_share))
        for index, text in enumerate(self._count_texts[:len(counts)]):
            dpg.set_value(text, f"{'P' if index == 0 else index}: {int(counts[index])}")

    def _show(self, inspection) -> None:
        self.last_inspection = inspection
        for key, _ in ROWS:
            self._views[(key, "target")].show(inspection.targets[key])
            self._views[(key, "render")].show(inspection.render[key])
        self._seam.show(inspection.seam)
        self._albedo.show(inspection.albedo)
        count = int(inspection.draw_counts[inspection.frame])
        dpg.set_value(self._selected_text, f"frame {inspection.frame}: {inspection.label} ({inspection.kind}), "
                                           f"drawn {count} times")
        dpg.set_value(self._step_text, f"render at step {inspection.step}")
