"""One entry for file exports, chosen by the output's extension (what ``persona-studio export`` runs)."""
from __future__ import annotations

from pathlib import Path

import torch

from core.avatar.avatar import Avatar
from core.avatar.render import pose_avatar
from core.body import NUM_JOINTS, BodyModel
from core.errors import UserError
from core.export.frames import Progress
from core.export.mesh import MESH_SUFFIXES, write_body_mesh
from core.export.persona_file import PERSONA_SUFFIX, save_persona_file
from core.export.ply import PLY_FRAMES, write_splat_ply, write_splat_sequence
from core.export.poses import PoseSpec, motion_at_fps, pose_label, pose_params
from core.export.rigged import write_rigged_glb
from core.export.spz import SPZ_FRAMES, write_spz
from core.export.video import write_errors_as_user_errors
from core.export.web_splat import write_web_splat
from core.motion import Motion
from core.motion.bvh import save_bvh

FILE_EXPORTS = {
    ".ply": "standard 3D Gaussian splats in one pose",
    ".splat": "the same splats for web viewers (32 bytes each)",
    ".spz": "the same splats compressed (Niantic's SPZ, about a tenth of the .ply)",
    ".zip": "one splat .ply (or, with --frames-as spz, .spz) per frame of --motion",
    ".bvh": "--motion on the subject's skeleton, for Blender and other animation tools",
    ".glb": "body mesh with the avatar's colours; rigged (skeleton and skin weights) with --rig or --motion",
    ".obj": "body mesh with the avatar's colours",
    PERSONA_SUFFIX: "the whole avatar in one file",
}
_MOTION_EXPORTS = (".zip", ".bvh")  # need a motion
_RIGGED = ".glb"  # takes a motion (or rig=True) for the rigged body
_SPLAT_WRITERS = {".ply": write_splat_ply, ".splat": write_web_splat, ".spz": write_spz}  # posed splats
SEQUENCE_FRAMES = {"ply": PLY_FRAMES, "spz": SPZ_FRAMES}  # a .zip sequence's frame files


def export_file(output: str | Path, avatar: Avatar, body: BodyModel, manifest: dict, pose: PoseSpec = "apose",
                motion: Motion | None = None, fps: float | None = None, refined: bool = True,
                progress: Progress | None = None, rig: bool = False, frames_as: str | None = None) -> str:
    """Write ``output`` by its extension (``FILE_EXPORTS``); returns a one-line description of what was written.

    ``pose`` (a ``pose_params`` spec) poses ``.ply`` and meshes; ``motion`` (resampled to ``fps``) is
    needed for ``.zip`` sequences and ``.bvh`` files, and animates a rigged ``.glb`` (``rig``: rigged and posed;
    ``core.export.rigged``). ``frames_as`` ("ply" by default, or "spz") is the file format of a ``.zip``
    sequence's frames. Writes are atomic.
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in FILE_EXPORTS:
        known = ", ".join(f"{s} ({what})" for s, what in FILE_EXPORTS.items())
        raise UserError(f"unknown export extension {suffix or '(none)'!r}; use one of: {known}", output)
    if suffix in _MOTION_EXPORTS and motion is None:
        raise UserError(f"a {suffix} export needs --motion ({FILE_EXPORTS[suffix]})", output)
    if motion is not None and suffix not in (*_MOTION_EXPORTS, _RIGGED):
        raise UserError(f"--motion only applies to {', '.join((*_MOTION_EXPORTS, _RIGGED))} exports, not {suffix}",
                        output)
    if rig and suffix != _RIGGED:
        raise UserError(f"--rig only applies to {_RIGGED} exports, not {suffix}", output)
    if frames_as is not None and (suffix != ".zip" or frames_as not in SEQUENCE_FRAMES):
        raise UserError(f"--frames-as takes {' or '.join(SEQUENCE_FRAMES)} and applies to .zip sequences only "
                        f"(got {frames_as!r} for {suffix})", output)
    with write_errors_as_user_errors(output):
        if suffix == _RIGGED and (rig or motion is not None):
            params = pose_params(pose, manifest, body)
            frames = write_rigged_glb(output, avatar, body, manifest, params, motion_at_fps(motion, fps)
                                      if motion is not None else None)
            shown = f"{frames} frames of {motion.name!r}" if motion is not None else f"pose {pose_label(pose)!r}"
            return f"rigged body ({body.num_vertices} vertices, {NUM_JOINTS} joints) with {shown}"
        if suffix == ".bvh":
            motion = motion_at_fps(motion, fps)
            with torch.no_grad():
                rest = body(**pose_params("tpose", manifest, body)).rest_joints[0].double().numpy()
            save_bvh(motion, output, rest)
            return f"{motion.num_frames} frames of {motion.name!r} at {motion.fps:g} frames/s on the subject's skeleton"
        if suffix == ".zip":
            encoding = SEQUENCE_FRAMES[frames_as or "ply"]
            count = write_splat_sequence(output, avatar, body, manifest, motion, fps, refined, progress, encoding)
            return f"{count} posed {encoding.suffix} frames of {motion.name!r} ({avatar.num_gaussians} Gaussians each)"
        if suffix == PERSONA_SUFFIX:
            save_persona_file(output, avatar, manifest)
            return f"avatar ({avatar.num_gaussians} Gaussians) as one file"
        params = pose_params(pose, manifest, body)
        if suffix in MESH_SUFFIXES:
            write_body_mesh(output, avatar, body, params)
            return f"body mesh ({body.num_vertices} vertices) in pose {pose_label(pose)!r}"
        with torch.no_grad():
            posed = pose_avatar(avatar, body, params, refined)
        _SPLAT_WRITERS[suffix](output, posed)
        return f"{avatar.num_gaussians} Gaussians in pose {pose_label(pose)!r}"
