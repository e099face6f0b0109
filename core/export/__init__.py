"""Exports: turntable and animation videos, standard 3DGS .ply, the coloured body mesh, ``.persona`` files.

Public API (re-exported here):
    render_turntable, render_animation, VideoResult       videos (.mp4 / .gif / PNG sequence), streamed
    export_file, FILE_EXPORTS                              .ply / .zip of .ply / .glb / .obj / .persona by extension
    write_splat_ply, write_splat_sequence, ply_bytes       the standard 3DGS .ply layout
    write_body_mesh, vertex_colors                         the fitted body mesh with the avatar's colours
    save_persona_file, load_persona_file, load_avatar      single-file bundles; load a folder or a .persona
    pose_params, resolve_motion, a_pose, POSE_HELP         which pose / motion an export shows
    open_frame_writer, output_kind                         the streaming frame writers
"""
from core.export.animation import CAMERAS, render_animation
from core.export.frames import VideoResult
from core.export.mesh import vertex_colors, write_body_mesh
from core.export.outputs import FILE_EXPORTS, export_file
from core.export.persona_file import load_avatar, load_persona_file, save_persona_file
from core.export.ply import PLY_PROPERTIES, SH_C0, ply_bytes, write_splat_ply, write_splat_sequence
from core.export.poses import POSE_HELP, a_pose, pose_params, resolve_motion
from core.export.turntable import render_turntable
from core.export.video import open_frame_writer, output_kind

__all__ = [
    "render_turntable", "render_animation", "CAMERAS", "VideoResult", "export_file", "FILE_EXPORTS",
    "write_splat_ply", "write_splat_sequence", "ply_bytes", "PLY_PROPERTIES", "SH_C0", "write_body_mesh",
    "vertex_colors", "save_persona_file", "load_persona_file", "load_avatar", "pose_params", "resolve_motion",
    "a_pose", "POSE_HELP", "open_frame_writer", "output_kind",
]
