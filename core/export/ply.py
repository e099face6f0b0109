"""The standard 3D Gaussian Splatting ``.ply`` (the layout of the original 3DGS code and common viewers).

One vertex per Gaussian, binary little-endian, 62 float32 properties (248 bytes):
``x y z nx ny nz f_dc_0..2 f_rest_0..44 opacity scale_0..2 rot_0..3`` with

- ``f_dc = (rgb - 0.5) / C0``: degree-0 spherical-harmonic coefficients (C0 = 1 / (2 sqrt(pi))); the
  avatar has no view-dependent colour, so the 45 ``f_rest`` (degrees 1-3) are zero;
- ``opacity`` as a logit; PERSONA's opacity is 1, which has no finite logit, so it is clamped to
  ``MAX_OPACITY`` = 0.9999 (logit 9.21) -- renders differ by < 1e-4 of a colour step;
- ``scale_i`` as natural logs of the standard deviations (metres); ``rot`` a unit quaternion w, x, y, z;
- ``nx ny nz`` the posed surface normals (3DGS writes zeros there; viewers ignore them).

Positions are in the body model's world frame: metres, y up, the avatar faces +z.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.avatar.avatar import Avatar, PosedGaussians
from core.avatar.render import pose_avatar
from core.body import BodyModel
from core.errors import UserError
from core.export.frames import Progress
from core.export.poses import motion_at_fps, motion_params
from core.io.atomic import atomic_path, write_bytes_atomic
from core.motion import Motion
from core.threads import single_torch_thread

SH_C0 = 0.28209479177387814  # the degree-0 real spherical harmonic, 1 / (2 sqrt(pi))
MAX_OPACITY = 0.9999
NUM_SH_REST = 45  # degrees 1..3, 15 coefficients x 3 colours
PLY_PROPERTIES: tuple[str, ...] = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
    *(f"f_rest_{i}" for i in range(NUM_SH_REST)),
    "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)
PLY_VERTEX_DTYPE = np.dtype([(name, "<f4") for name in PLY_PROPERTIES])  # 248 bytes
SEQUENCE_INFO = "sequence.json"


def splat_records(posed: PosedGaussians) -> np.ndarray:
    """Posed Gaussians as ``[N]`` structured records of ``PLY_VERTEX_DTYPE`` (encodings in the module doc)."""
    count = posed.means.shape[0]
    records = np.zeros(count, dtype=PLY_VERTEX_DTYPE)
    opacity = posed.opacities.detach().double().clamp(1.0 - MAX_OPACITY, MAX_OPACITY)
    quats = posed.quats.detach().double()
    columns = {
        ("x", "y", "z"): posed.means.detach().double(),
        ("nx", "ny", "nz"): posed.normals.detach().double(),
        ("f_dc_0", "f_dc_1", "f_dc_2"): (posed.colors.detach().double() - 0.5) / SH_C0,
        ("opacity",): torch.log(opacity / (1.0 - opacity))[:, None],
        ("scale_0", "scale_1", "scale_2"): posed.scales.detach().double().log(),
        ("rot_0", "rot_1", "rot_2", "rot_3"): quats / quats.norm(dim=1, keepdim=True),
    }
    for names, values in columns.items():
        values = values.cpu().numpy()
        for i, name in enumerate(names):
            records[name] = values[:, i]
    return records


def ply_bytes(posed: PosedGaussians) -> bytes:
    """The whole ``.ply`` file (ASCII header + binary little-endian records) for ``posed``."""
    records = splat_records(posed)
    header = ["ply", "format binary_little_endian 1.0", "comment persona-studio 3D Gaussian avatar",
              f"element vertex {len(records)}", *(f"property float {name}" for name in PLY_PROPERTIES), "end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + records.tobytes()


def write_splat_ply(path: str | Path, posed: PosedGaussians) -> None:
    """Write ``posed`` as a standard 3DGS ``.ply`` atomically."""
    write_bytes_atomic(path, ply_bytes(posed))


@dataclass(frozen=True)
class FrameEncoding:
    """How a posed-splat sequence stores each frame: the member suffix, the encoder, whether the zip deflates
    it (not for files that are compressed already), and what ``sequence.json`` says of the format."""

    suffix: str
    encode: Callable[[PosedGaussians], bytes]
    deflate: bool
    info: dict


# Level 1 deflate: ~3x smaller (the f_rest zeros), a fraction of the time of the default level.
PLY_FRAMES = FrameEncoding(".ply", ply_bytes, True, {"format": "persona-ply-sequence/1", "ply": "3dgs-binary-le"})


@single_torch_thread()
def write_splat_sequence(path: str | Path, avatar: Avatar, body: BodyModel, manifest: dict, motion: Motion,
                         fps: float | None = None, refined: bool = True, progress: Progress | None = None,
                         encoding: FrameEncoding = PLY_FRAMES) -> int:
    """A ``.zip`` of one splat file per motion frame (``frame_0000.ply`` ..., or another ``encoding``'s) plus
    ``sequence.json``.

    ``fps`` resamples the motion first (None keeps its rate). Frames are posed, encoded and added
    one at a time (memory holds one frame); the zip appears only when complete. Returns the frame count.
    """
    motion = motion_at_fps(motion, fps)
    if Path(path).suffix.lower() != ".zip":
        raise UserError("a posed splat sequence is written as a .zip", path)
    info = {**encoding.info, "motion": motion.name, "fps": motion.fps, "frames": motion.num_frames,
            "num_gaussians": avatar.num_gaussians, "up": "+y", "front": "+z", "units": "metres"}
    compression = {"compress_type": zipfile.ZIP_DEFLATED, "compresslevel": 1} if encoding.deflate else {}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr(SEQUENCE_INFO, json.dumps(info, indent=2))
        for index in range(motion.num_frames):
            with torch.no_grad():
                posed = pose_avatar(avatar, body, motion_params(motion, [index], manifest, body), refined)
            archive.writestr(f"frame_{index:04d}{encoding.suffix}", encoding.encode(posed), **compression)
            if progress is not None:
                progress((index + 1) / motion.num_frames)
    return motion.num_frames

