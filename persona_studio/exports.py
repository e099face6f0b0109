"""The Export panel's link to ``core.export``: one ``run_export(kind, ...)`` and a worker-thread task.

Each kind's engine function is looked up when it runs, so a build whose ``core/export`` lacks one
answers with a one-line ``UserError`` instead of failing to start. The avatar bundle folder comes
from ``core.avatar.bundle``.
"""
from __future__ import annotations

import copy
import importlib
import tempfile
import threading
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from core.avatar.avatar import Avatar
from core.avatar.bundle import read_manifest, save_bundle
from core.body import BodyModel
from core.config import Config
from core.errors import UserError
from core.export.poses import PoseSpec
from core.motion import Motion

# kind -> (button label, file suffix of the default output; "" = a folder)
EXPORT_KINDS: dict[str, tuple[str, str]] = {
    "turntable": ("Turntable video", ".mp4"),
    "animation": ("Animation video", ".mp4"),
    "ply": ("Gaussian splats (.ply)", ".ply"),
    "splat": ("Web splats (.splat)", ".splat"),
    "spz": ("Compressed splats (.spz)", ".spz"),
    "mesh": ("Body mesh (.glb)", ".glb"),
    "rigged": ("Rigged body (.glb)", ".glb"),  # animated by the timeline's motion when there is one
    "motion": ("Motion (.bvh)", ".bvh"),  # the timeline's motion on the subject's skeleton
    "persona": ("Avatar file (.persona)", ".persona"),
    "bundle": ("Avatar bundle folder", ""),
}
# kind -> (module, function) in the engine; looked up when an export runs.
ENGINE_EXPORTS: dict[str, tuple[str, str]] = {
    "turntable": ("core.export.turntable", "render_turntable"),
    "animation": ("core.export.animation", "render_animation"),
    "ply": ("core.export.outputs", "export_file"),
    "splat": ("core.export.outputs", "export_file"),
    "spz": ("core.export.outputs", "export_file"),
    "mesh": ("core.export.outputs", "export_file"),
    "rigged": ("core.export.outputs", "export_file"),
    "motion": ("core.export.outputs", "export_file"),
    "persona": ("core.export.outputs", "export_file"),
}
Progress = Callable[[float], None]


@dataclass(frozen=True)
class ExportSource:
    """What to export: an avatar (a private copy), its body model, and a bundle-style ``manifest``
    (at least ``{"subject": {name: list}}``: the fitted shape and pose the engine's exports read)."""

    avatar: Avatar
    body: BodyModel
    manifest: dict
    name: str


def manifest_for(subject_params: dict[str, np.ndarray]) -> dict:
    """A minimal bundle manifest for an avatar that has none yet (a training run)."""
    return {"subject": {k: np.asarray(v, np.float32).reshape(-1).tolist() for k, v in subject_params.items()}}


VIDEO_KINDS = ("turntable", "animation")
TRANSPARENT_VIDEO_SUFFIX = ".webm"  # VP9 with an alpha plane (core.export.video)


def default_output(kind: str, folder: str | Path, name: str, transparent: bool = False) -> Path:
    """``<folder>/<name>-<kind><suffix>`` (a folder for the bundle); videos are ``.webm`` when ``transparent``."""
    if kind not in EXPORT_KINDS:
        raise ValueError(f"unknown export {kind!r}")
    suffix = TRANSPARENT_VIDEO_SUFFIX if transparent and kind in VIDEO_KINDS else EXPORT_KINDS[kind][1]
    return Path(folder) / f"{name}-{kind}{suffix}"


def engine_export(kind: str) -> Callable:
    """The engine's function for ``kind``; a UserError when this build has none yet."""
    module_name, function = ENGINE_EXPORTS.get(kind, ("", ""))
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError, ValueError):
        label = EXPORT_KINDS[kind][0]
        raise UserError(f"{label} export is not available in this build (core.export has no "
                        f"{module_name}.{function}); the avatar bundle folder always works") from None


def full_manifest(source: ExportSource) -> dict:
    """A complete bundle manifest for ``source`` (the .persona format needs one): its own if it came from
    a bundle, else the one ``save_bundle`` writes, made in a temporary folder."""
    if "format" in source.manifest:
        return source.manifest
    with tempfile.TemporaryDirectory(prefix="persona-manifest-") as folder:
        save_bundle(folder, source.avatar, source.body, source.manifest.get("subject", {}),
                    source.manifest.get("summary", {}))
        return read_manifest(folder)


def run_export(kind: str, source: ExportSource, output: str | Path, config: Config, progress: Progress,
               pose: PoseSpec = "apose", motion: Motion | None = None) -> Path:
    """Write ``source`` as ``kind`` to ``output``; returns the path written.

    ``pose``: the pose spec (``core.export.poses.pose_params``: a name or the pose's arrays) of turntables, .ply
    splats and meshes; ``motion``:
    the clip an animation, a .bvh and a rigged body play (a turntable plays it too when given).
    """
    output = Path(output)
    if kind == "bundle":
        progress(0.1)
        save_bundle(output, source.avatar, source.body, source.manifest.get("subject", {}),
                    {**source.manifest.get("summary", {}), "exported_from": "persona-studio app"})
        progress(1.0)
        return output
    export = engine_export(kind)
    if kind == "turntable":
        export(source.avatar, source.body, source.manifest, output, export=config.export, render=config.render,
               pose=pose, motion=motion, progress=progress)
    elif kind == "animation":
        if motion is None:
            raise UserError("choose a motion on the Pose tab first: the animation plays it")
        export(source.avatar, source.body, source.manifest, motion, output, export=config.export,
               render=config.render, progress=progress)
    elif kind == "persona":
        export(output, source.avatar, source.body, full_manifest(source), progress=progress)
    elif kind == "rigged":  # posed like the splats, or animated by the timeline's motion
        export(output, source.avatar, source.body, source.manifest, pose=pose, motion=motion, rig=True)
    elif kind == "motion":
        if motion is None:
            raise UserError("choose a motion on the Pose tab first: the .bvh holds it")
        export(output, source.avatar, source.body, source.manifest, motion=motion)
    else:  # .ply / .splat / .spz splats or the body mesh, in ``pose``
        export(output, source.avatar, source.body, source.manifest, pose=pose, progress=progress)
    progress(1.0)  # file exports report no progress of their own
    return output


@dataclass(frozen=True)
class ExportStatus:
    """state: "idle" | "running" | "done" | "failed"; ``message`` is one line for the status bar."""

    state: str = "idle"
    kind: str = ""
    fraction: float = 0.0
    message: str = ""
    path: Path | None = None


class ExportTask:
    """Runs one export in a daemon thread; ``status()`` is safe to read from the UI thread."""

    def __init__(self, kind: str, make_source: Callable[[], ExportSource], output: str | Path, config: Config,
                 pose: PoseSpec = "apose", motion: Motion | None = None):
        self.kind = kind
        self._make_source = make_source
        self.output = Path(output)
        self.config = copy.deepcopy(config)
        self.pose, self.motion = pose, motion
        self._lock = threading.Lock()
        self._status = ExportStatus("running", kind, 0.0, f"exporting {EXPORT_KINDS[kind][0].lower()}...")
        self._thread = threading.Thread(target=self._run, name=f"export-{kind}", daemon=True)

    def start(self) -> "ExportTask":
        self._thread.start()
        return self

    def status(self) -> ExportStatus:
        with self._lock:
            return self._status

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _progress(self, fraction: float) -> None:
        with self._lock:
            self._status = replace(self._status, fraction=float(np.clip(fraction, 0.0, 1.0)))

    def _run(self) -> None:
        label = EXPORT_KINDS[self.kind][0]
        try:
            path = run_export(self.kind, self._make_source(), self.output, self.config, self._progress,
                              self.pose, self.motion)
            done = ExportStatus("done", self.kind, 1.0, f"{label} written to {path}", path)
        except UserError as err:
            done = ExportStatus("failed", self.kind, 0.0, str(err))
        except Exception as err:  # noqa: BLE001  (a bug: the app stays up, the trace goes to the terminal)
            traceback.print_exc()
            done = ExportStatus("failed", self.kind, 0.0, f"internal error in {label} export: {type(err).__name__}: {err}")
        with self._lock:
            self._status = done
