"""The fitted body mesh in any pose, coloured from the avatar, as ``.glb`` or ``.obj`` (trimesh).

Colours: the avatar's ``upsample`` matrix ``[N, V]`` says how much each body vertex contributes to
each Gaussian; a vertex takes the average colour of the Gaussians it contributes to, weighted by
that contribution. At subdivision level 0 the Gaussians are the vertices and the colours are
copied exactly. glTF stores vertex colours as linear light (its spec), so ``.glb`` gets the sRGB
colours converted; ``.obj`` keeps sRGB values, as OBJ readers expect.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.avatar.avatar import Avatar
from core.body import BodyModel
from core.errors import UserError
from core.io.atomic import write_bytes_atomic

MESH_SUFFIXES = (".glb", ".obj")


def vertex_colors(upsample: torch.Tensor, gaussian_colors: torch.Tensor) -> torch.Tensor:
    """Per-vertex colours ``[V, 3]`` from ``gaussian_colors [N, 3]`` through ``upsample`` (sparse ``[N, V]``).

    Vertex v gets ``sum_n U[n, v] c_n / sum_n U[n, v]``; a vertex no Gaussian uses (none in our
    topologies) is mid-grey.
    """
    transposed = upsample.coalesce().t()
    colors = torch.sparse.mm(transposed, gaussian_colors.detach().float())
    weight = torch.sparse.mm(transposed, torch.ones(gaussian_colors.shape[0], 1))
    return torch.where(weight > 0, colors / weight.clamp_min(1e-12), torch.full_like(colors, 0.5)).clamp(0, 1)


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB-encoded values (IEC 61966-2-1)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * np.power(values, 1 / 2.4) - 0.055)


def mesh_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, file_type: str) -> bytes:
    """``vertices [V, 3]`` metres, ``faces [F, 3]``, sRGB ``colors [V, 3]`` in [0, 1] -> a ``glb``/``obj`` file."""
    import trimesh

    encoded = srgb_to_linear(colors) if file_type == "glb" else np.asarray(colors, np.float64)
    rgba = np.concatenate([np.round(np.clip(encoded, 0, 1) * 255), np.full((len(vertices), 1), 255)], axis=1)
    mesh = trimesh.Trimesh(vertices=np.asarray(vertices, np.float64), faces=np.asarray(faces, np.int64),
                           vertex_colors=rgba.astype(np.uint8), process=False)
    data = mesh.export(file_type=file_type)
    return data.encode("utf-8") if isinstance(data, str) else data


def write_body_mesh(path: str | Path, avatar: Avatar, body: BodyModel, params: dict[str, torch.Tensor]) -> None:
    """Write the body mesh posed by ``params`` (``[1, k]`` body-model arguments, subject shape included)
    with the avatar's colours, as ``.glb`` or ``.obj`` by the extension, atomically."""
    suffix = Path(path).suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise UserError(f"a body mesh is written as {' or '.join(MESH_SUFFIXES)}, not {suffix or 'no extension'}", path)
    with torch.no_grad():
        vertices = body(**params).vertices[0].cpu().numpy()
    colors = avatar_vertex_colors(avatar, body, path)
    write_bytes_atomic(path, mesh_bytes(vertices, body.faces.cpu().numpy(), colors, suffix[1:]))


def avatar_vertex_colors(avatar: Avatar, body: BodyModel, path: str | Path) -> np.ndarray:
    """The avatar's colours on the body's vertices, sRGB ``[V, 3]`` (``vertex_colors``); a one-line UserError naming
    ``path`` (the export) when the avatar was made for a body with another vertex count."""
    colors = vertex_colors(avatar.upsample, avatar.colors).cpu().numpy()
    if colors.shape[0] != body.num_vertices:
        raise UserError(f"avatar was made for a {colors.shape[0]}-vertex body, the body model has {body.num_vertices}",
                        path)
    return colors
