"""Niantic's ``.spz`` (version 3): compressed Gaussian splats, about a tenth of a ``.ply``'s size.

Read by Scaniverse, SuperSplat, Spark / three.js, Babylon.js and glTF's ``KHR_spz_compression``. The file is
a gzip stream of a 16-byte little-endian header (``<IIIBBBB``: magic 0x5053474e, version 3, Gaussian count,
spherical-harmonic degree 0, fractional bits 12, flags, zero) and then, attribute by attribute, for every
Gaussian:

- positions: three 24-bit signed fixed-point numbers, ``round(x * 2**12)`` (a 0.24 mm grid, +-2048 m);
- alphas: ``round(opacity * 255)``;
- colours: the degree-0 spherical-harmonic coefficient ``(rgb - 0.5) / C0`` as ``round(c * 0.15 * 255 + 127.5)``
  (the format's 0.15 leaves room for colours a little outside 0..1);
- scales: natural logs of the standard deviations as ``round((log s + 10) * 16)``;
- rotations: "smallest three": the unit quaternion (x, y, z, w order) turned so its largest component is
  positive; that component's index in the top 2 bits of a little-endian uint32, then the three others in
  index order, 10 bits each (a sign bit and ``round(511 |q_i| / sqrt(1/2))``), the first one highest.

Every value is clipped to its byte range. No higher spherical harmonics: our avatars have no view-dependent
colour. The format's frame is right-up-back (OpenGL's), which is our ``.ply``'s frame (y up, the avatar faces
+z, its left hand on +x), so positions are written as they are. Flag 0x1 says the splats were trained with
Mip-Splatting's 2D filter, as every preset trains them (``render.rasterize_mode``).
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from core.avatar.avatar import PosedGaussians
from core.errors import UserError
from core.export.ply import SH_C0, FrameEncoding
from core.export.web_splat import splat_arrays, unit_bytes
from core.io.atomic import write_bytes_atomic

SPZ_MAGIC = 0x5053474E  # "NGSP" read as little-endian bytes
SPZ_VERSION = 3
SPZ_HEADER = struct.Struct("<IIIBBBB")  # magic, version, count, SH degree, fractional bits, flags, reserved
FRACTIONAL_BITS = 12
COLOR_SCALE = 0.15  # the format's scale of the degree-0 coefficient
FLAG_ANTIALIASED = 0x1
_ROTATION_BITS = 9  # magnitude bits of each of the three smaller quaternion components
_MAX_FIXED = (1 << 23) - 1


def fixed_point_positions(means: np.ndarray) -> np.ndarray:
    """Positions [N, 3] (metres) as 24-bit little-endian fixed point with FRACTIONAL_BITS. uint8 [N, 9]

    Raises UserError for a position beyond the format's +-2048 m."""
    fixed = np.rint(means * float(1 << FRACTIONAL_BITS)).astype(np.int64)
    if fixed.size and int(np.abs(fixed).max()) > _MAX_FIXED:
        raise UserError(f".spz holds positions within {(_MAX_FIXED >> FRACTIONAL_BITS) + 1} m of the origin; "
                        f"a splat is {float(np.abs(means).max()):.0f} m away")
    unsigned = (fixed & 0xFFFFFF).astype(np.uint32)
    return np.stack([(unsigned >> shift) & 0xFF for shift in (0, 8, 16)], axis=-1).astype(np.uint8).reshape(-1, 9)


def smallest_three_quaternions(quats_wxyz: np.ndarray) -> np.ndarray:
    """Quaternions [N, 4] (w, x, y, z; any length) in the format's "smallest three" packing. uint8 [N, 4]"""
    q = quats_wxyz[:, [1, 2, 3, 0]] / np.linalg.norm(quats_wxyz, axis=1, keepdims=True)  # x, y, z, w
    rows = np.arange(len(q))
    largest = np.argmax(np.abs(q), axis=1)
    negate = q[rows, largest] < 0
    packed = largest.astype(np.uint32)
    full = (1 << _ROTATION_BITS) - 1
    for index in range(4):
        other = largest != index
        value = q[:, index]
        sign = ((value < 0) ^ negate).astype(np.uint32)
        magnitude = np.minimum(np.rint(full * np.abs(value) / np.sqrt(0.5)), full).astype(np.uint32)
        packed = np.where(other, (packed << 10) | (sign << _ROTATION_BITS) | magnitude, packed)
    return packed.astype("<u4").view(np.uint8).reshape(-1, 4)


def spz_payload(posed: PosedGaussians, antialiased: bool = True) -> bytes:
    """The uncompressed ``.spz`` content (header and attributes, see the module doc) of ``posed``."""
    means, scales, colors, opacities, quats = splat_arrays(posed)
    header = SPZ_HEADER.pack(SPZ_MAGIC, SPZ_VERSION, len(means), 0, FRACTIONAL_BITS,
                             FLAG_ANTIALIASED if antialiased else 0, 0)
    parts = (
        fixed_point_positions(means),
        unit_bytes(opacities, 255.0, 0.0),
        unit_bytes((colors - 0.5) / SH_C0, COLOR_SCALE * 255.0, 127.5),
        unit_bytes(np.log(scales), 16.0, 160.0),  # (log s + 10) * 16
        smallest_three_quaternions(quats),
    )
    return header + b"".join(np.ascontiguousarray(part).tobytes() for part in parts)


def spz_bytes(posed: PosedGaussians, antialiased: bool = True) -> bytes:
    """The whole ``.spz`` file of ``posed`` (gzip without a timestamp: the same avatar, the same bytes)."""
    return gzip.compress(spz_payload(posed, antialiased), compresslevel=9, mtime=0)


def write_spz(path: str | Path, posed: PosedGaussians, antialiased: bool = True) -> None:
    """Write ``posed`` as a ``.spz`` file atomically."""
    write_bytes_atomic(path, spz_bytes(posed, antialiased))


SPZ_FRAMES = FrameEncoding(".spz", spz_bytes, False, {"format": "persona-spz-sequence/1", "spz": "niantic-v3"})
