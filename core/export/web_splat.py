"""The ``.splat`` file of web Gaussian-splat viewers (antimatter15/splat and the viewers that read its files).

A headerless array of 32-byte records, one per Gaussian, little-endian:
``x y z`` float32 (metres), ``sx sy sz`` float32 (standard deviations, metres, not logs), ``r g b a`` uint8
(colour and opacity times 255), ``qw qx qy qz`` uint8 (the unit quaternion, q * 128 + 128, clipped to 0..255).
Records are ordered by size times opacity, largest first, as those viewers' converters order them (a viewer
that streams the file draws the Gaussians that matter first). No view-dependent colour, as our avatars have
none. Positions are in the same frame as our ``.ply`` (y up, facing +z): an eighth of its size per Gaussian.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.avatar.avatar import PosedGaussians
from core.io.atomic import write_bytes_atomic

SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])


def unit_bytes(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """``values * scale + offset`` rounded and clipped to bytes (the splat formats' quantisation). uint8"""
    return np.clip(np.rint(values * scale + offset), 0, 255).astype(np.uint8)


def splat_arrays(posed: PosedGaussians) -> tuple[np.ndarray, ...]:
    """``(means [N, 3], scales [N, 3], colors [N, 3], opacities [N], quats [N, 4])`` of ``posed`` as float64 numpy
    arrays: what the byte-packed splat formats (this one, ``.spz``) quantise."""
    return tuple(value.detach().double().cpu().numpy()
                 for value in (posed.means, posed.scales, posed.colors, posed.opacities, posed.quats))


def splat_file_records(posed: PosedGaussians) -> np.ndarray:
    """``posed`` as ``[N]`` records of ``SPLAT_DTYPE``, largest (product of scales times opacity) first."""
    means, scales, colors, opacities, quats = splat_arrays(posed)
    quats = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    records = np.zeros(len(means), SPLAT_DTYPE)
    records["position"] = means
    records["scale"] = scales
    records["rgba"][:, :3] = unit_bytes(np.clip(colors, 0.0, 1.0), 255.0, 0.0)
    records["rgba"][:, 3] = unit_bytes(np.clip(opacities, 0.0, 1.0), 255.0, 0.0)
    records["rotation"] = unit_bytes(quats, 128.0, 128.0)
    importance = np.prod(scales, axis=1) * opacities
    return records[np.argsort(-importance, kind="stable")]


def write_web_splat(path: str | Path, posed: PosedGaussians) -> None:
    """Write ``posed`` as a ``.splat`` file atomically."""
    write_bytes_atomic(path, splat_file_records(posed).tobytes())
