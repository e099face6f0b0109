"""The Export panel's link to ``core.export``: one ``run_export(kind, ...)`` and a worker-thread task.

``core/export`` is being built at the same time as this panel. Each kind is looked up there when it
runs; a kind the engine does not offer yet fails with a one-line ``UserError`` saying so, instead of
the app guessing at an API. Wired today: the turntable video (``core.export.turntable``) and the
avatar bundle (``core.avatar.bundle``). To wire the others, add them to ``ENGINE_EXPORTS``.
"""
from __future__ import annotations

import copy
import importlib
import threading
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from core.avatar.avatar import Avatar
from core.avatar.bundle import save_bundle
from core.body import BodyModel
from core.config import Config
from core.errors import UserError
from core.motion import Motion

# kind -> (button label, file suffix of the default output; "" = a folder)
EXPORT_KINDS: dict[str, tuple[str, str]] = {
    "turntable": ("Turntable video", ".mp4"),
    "animation": ("Animation video", ".mp4"),
    "ply": ("Gaussians (.ply)", ".ply"),
    "mesh": ("Mesh (.obj)", ".obj"),
    "bundle": ("Avatar bundle", ""),
}
# kind -> (module, function) in the engine; looked up when an export runs.
ENGINE_EXPORTS: dict[str, tuple[str, str]] = {
    "turntable": ("core.export.turntable", "render_turntable"),
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


def default_output(kind: str, folder: str | Path, name: str) -> Path:
    """``<folder>/<name>-<kind><suffix>`` (a folder for the bundle)."""
    if kind not in EXPORT_KINDS:
        raise ValueError(f"unknown export {kind!r}")
    return Path(folder) / f"{name}-{kind}{EXPORT_KINDS[kind][1]}"


def engine_export(kind: str) -> Callable:
    """The engine's function for ``kind``; a UserError when this build has none yet."""
    module_name, function = ENGINE_EXPORTS.get(kind, ("", ""))
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError, ValueError):
        label = EXPORT_KINDS[kind][0]
        raise UserError(f"{label} export is not available in this build yet (core/export is still being built); "
                        f"the bundle and the turntable work") from None


def run_export(kind: str, source: ExportSource, output: str | Path, config: Config, progress: Progress,
               pose: str = "apose", motion: Motion | None = None) -> Path:
    """Write ``source`` as ``kind`` to ``output``; returns the path written.

    ``pose``: the pose spec of turntables (``core.export.poses``); ``motion``: the clip an animation
    plays (a turntable plays it too when given).
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
    else:  # pragma: no cover - reached only once ENGINE_EXPORTS lists a kind without a call here
        raise UserError(f"{EXPORT_KINDS[kind][0]} export: the app does not know how to call the engine's "
                        f"{ENGINE_EXPORTS[kind][1]} yet")
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
                 pose: str = "apose", motion: Motion | None = None):
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
