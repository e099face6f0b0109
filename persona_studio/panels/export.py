"""Export panel: turntable / animation / .ply / mesh / bundle of the avatar in the viewport, written by a
worker thread with a progress bar, into a folder chosen with a dialog; the status bar names the file."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import dearpygui.dearpygui as dpg

from core.errors import UserError
from persona_studio.exports import EXPORT_KINDS, VIDEO_KINDS, ExportTask, default_output
from persona_studio.panels.project import dialog_path

POSE_TAB = "Pose tab"  # the pose set on the Pose tab (joints, hands, expression)
EXPORT_POSES = ("apose", "tpose", "canonical", "photo", POSE_TAB)


class ExportPanel:
    """Buttons per export kind; one export runs at a time."""

    title = "Export"

    def __init__(self, studio):
        self.studio = studio
        self.task: ExportTask | None = None
        self._folder = self._pose = self._with_motion = self._transparent = None
        self._bar = self._text = self._source = None
        self.folder_dialog = None
        self._reported = None

    def build(self, parent: int | str) -> None:
        guard = self.studio.guard
        self.folder_dialog = dpg.add_file_dialog(label="Export into this folder", show=False, modal=True,
                                                 directory_selector=True, width=700, height=450,
                                                 callback=guard(self.on_folder_dialog))
        with dpg.collapsing_header(label=self.title, parent=parent, default_open=True):
            self._source = dpg.add_text("Avatar: none loaded", wrap=300)
            with dpg.group(horizontal=True):
                self._folder = dpg.add_input_text(label="##export-folder", hint="default: <output>/<avatar>/exports",
                                                  width=220)
                dpg.add_button(label="Browse...", callback=guard(lambda: dpg.show_item(self.folder_dialog)))
            self._pose = dpg.add_combo(EXPORT_POSES, label="pose (turntable, .ply, mesh)", default_value="apose",
                                       width=110)
            self._with_motion = dpg.add_checkbox(label="turntable plays the timeline's motion", default_value=False)
            self._transparent = dpg.add_checkbox(label="transparent videos (.webm with alpha)", default_value=False)
            for kind, (label, _) in EXPORT_KINDS.items():
                dpg.add_button(label=label, width=-1, user_data=kind,
                               callback=guard(lambda s, a, kind: self.export(kind)))
            self._bar = dpg.add_progress_bar(default_value=0.0, width=-1, overlay="idle")
            self._text = dpg.add_text("", wrap=300)

    def on_folder_dialog(self, sender, app_data) -> None:
        dpg.set_value(self._folder, str(dialog_path(app_data)))

    def folder(self) -> Path:
        """Where exports go: the chosen folder, else ``<output>/<avatar name>/exports``."""
        text = (dpg.get_value(self._folder) or "").strip()
        if text:
            return Path(text).expanduser()
        return self.studio.project.output_dir / self.studio.export_name() / "exports"

    def export(self, kind: str, output: str | Path | None = None) -> ExportTask:
        """Start exporting the shown avatar as ``kind`` (to ``output``, default in ``folder()``)."""
        if self.task is not None and self.task.status().state == "running":
            raise UserError("an export is still running; wait for it to finish")
        motion = self.studio.pose_panel.motion
        if kind == "turntable" and not dpg.get_value(self._with_motion):
            motion = None
        transparent = kind in VIDEO_KINDS and bool(dpg.get_value(self._transparent))
        target = Path(output) if output is not None else default_output(kind, self.folder(),
                                                                        self.studio.export_name(), transparent)
        config = self.studio.config
        if transparent:
            config = dataclasses.replace(config, export=dataclasses.replace(config.export, transparent=True))
        pose = dpg.get_value(self._pose)
        self.task = ExportTask(kind, self.studio.export_source(), target, config,
                               pose=self.studio.pose.arrays() if pose == POSE_TAB else pose, motion=motion).start()
        self._reported = None
        return self.task

    def refresh(self) -> None:
        dpg.set_value(self._source, f"Avatar: {self.studio.export_name() if self.studio.display else 'none loaded'}")
        if self.task is None:
            return
        status = self.task.status()
        dpg.set_value(self._bar, status.fraction)
        dpg.configure_item(self._bar, overlay=f"{status.kind}: {status.state} {100 * status.fraction:.0f}%")
        dpg.set_value(self._text, status.message)
        if status.state in ("done", "failed") and self._reported is not status:
            self._reported = status
            if status.state == "done":
                self.studio.status.info(status.message)
            else:
                self.studio.status.error(status.message)
