"""Skinning weights for points that are not mesh vertices (Gaussians off the surface).

Two ways, as in PERSONA / ExAvatar:
- ``nearest_vertex_weights``: copy the nearest vertex's weights (exact on the surface, but jumps
  between body parts, e.g. between the legs or under the arms);
- ``build_weight_volume`` / ``diffused_weights``: splat the vertex weights into a 64^3 grid over
  the canonical body, diffuse them into empty space by Laplacian smoothing with the surface cells
  held fixed, and sample the grid trilinearly -> weights that vary smoothly off the surface.
  Points on hands and face may keep the body model's own weights (``keep_mask``), because the
  volume blurs the fingers together.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial import cKDTree


def nearest_vertex_weights(points: np.ndarray, vertices: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``points [N, 3]``, ``vertices [V, 3]``, ``weights [V, J]`` -> each point's nearest vertex's weights ``[N, J]``."""
    _, nearest = cKDTree(np.asarray(vertices)).query(np.asarray(points))
    return np.asarray(weights)[nearest]


@dataclasses.dataclass
class WeightVolume:
    """Skinning weights on a regular grid over an axis-aligned box (metres).

    Attributes:
        grid: ``[J, R, R, R]`` float32, indexed ``[joint, z, y, x]``; node ``(i, j, k)`` lies at
            ``lower + (k, j, i) * (upper - lower) / (R - 1)``.
        lower, upper: ``[3]`` corners of the box.
    """

    grid: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor

    def sample(self, points: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Trilinearly interpolated weights at ``points [N, 3]`` -> ``[N, J]``, non-negative, rows
        summing to 1. Points outside the box take the value at the nearest face of the box.
        Differentiable with respect to ``points``."""
        points = torch.as_tensor(points, dtype=self.grid.dtype, device=self.grid.device)
        normalised = 2.0 * (points - self.lower) / (self.upper - self.lower) - 1.0  # [-1, 1], x y z order
        sampled = F.grid_sample(self.grid[None], normalised.reshape(1, -1, 1, 1, 3), mode="bilinear",
                                padding_mode="border", align_corners=True)  # [1, J, N, 1, 1]
        weights = sampled.reshape(self.grid.shape[0], -1).T.clamp_min(0.0)
        return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)


def build_weight_volume(vertices: np.ndarray, weights: np.ndarray, resolution: int = 64, padding: float = 0.1,
                        iterations: tuple[int, ...] = (64, 24, 8)) -> WeightVolume:
    """Diffuse per-vertex skinning weights into a ``resolution^3`` grid.

    ``vertices [V, 3]`` canonical body (metres), ``weights [V, J]``. The box is the vertices'
    bounding box grown by ``padding`` metres on every side. Nodes next to vertices take the
    trilinear-splat average of their weights and stay fixed; the others solve a discrete Laplace
    equation (each node the mean of its six neighbours) by Jacobi steps, coarse to fine: the
    coarsest grid starts from each empty node's nearest fixed node, each finer grid from the
    upsampled coarser solution. ``iterations`` are the Jacobi steps per grid, coarsest first
    (resolutions ``resolution / 2^k``).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float32)
    lower = vertices.min(axis=0) - padding
    upper = vertices.max(axis=0) + padding
    resolutions = [max(2, resolution >> k) for k in reversed(range(len(iterations)))]
    grid = None
    for res, steps in zip(resolutions, iterations):
        values, mass = _splat(vertices, weights, lower, (upper - lower) / (res - 1), res)
        fixed = mass > 1e-6
        values[:, fixed] /= mass[fixed]
        if grid is None:  # coarsest: empty nodes start from their nearest fixed node
            _, nearest = ndimage.distance_transform_edt(~fixed, sampling=((upper - lower) / (res - 1))[::-1],
                                                        return_indices=True)
            grid = torch.from_numpy(values[:, nearest[0], nearest[1], nearest[2]])
        else:
            grid = F.interpolate(grid[None], size=(res, res, res), mode="trilinear", align_corners=True)[0]
        grid = _relax(grid, torch.from_numpy(values), torch.from_numpy(fixed), steps)
    return WeightVolume(grid=grid.contiguous(), lower=torch.as_tensor(lower, dtype=torch.float32),
                        upper=torch.as_tensor(upper, dtype=torch.float32))


def _relax(grid: torch.Tensor, values: torch.Tensor, fixed: torch.Tensor, steps: int) -> torch.Tensor:
    """Jacobi steps of the 6-neighbour Laplace equation on ``grid [J, R, R, R]``; ``fixed`` nodes keep ``values``."""
    free = (~fixed).to(grid.dtype)
    anchored = values * fixed.to(grid.dtype)
    grid = grid * free + anchored
    for _ in range(steps):
        padded = F.pad(grid[None], (1, 1, 1, 1, 1, 1), mode="replicate")[0]  # zero flux at the box faces
        neighbours = padded[:, :-2, 1:-1, 1:-1] + padded[:, 2:, 1:-1, 1:-1]
        neighbours += padded[:, 1:-1, :-2, 1:-1]
        neighbours += padded[:, 1:-1, 2:, 1:-1]
        neighbours += padded[:, 1:-1, 1:-1, :-2]
        neighbours += padded[:, 1:-1, 1:-1, 2:]
        grid = neighbours.mul_(free / 6.0).add_(anchored)
    return grid


def _splat(vertices: np.ndarray, weights: np.ndarray, lower: np.ndarray, cell: np.ndarray,
           resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear splat -> (weighted sums ``[J, R, R, R]`` float32, total splat weight ``[R, R, R]``), [z, y, x]."""
    position = (vertices - lower) / cell  # continuous node coordinates, x y z
    base = np.clip(np.floor(position).astype(np.int64), 0, resolution - 2)
    frac = position - base
    rows, vals = [], []
    for corner in np.ndindex(2, 2, 2):
        offset = np.array(corner)
        x, y, z = (base + offset).T
        rows.append((z * resolution + y) * resolution + x)
        vals.append(np.prod(np.where(offset == 1, frac, 1.0 - frac), axis=1))
    cols = np.tile(np.arange(len(vertices)), 8)
    splat = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), cols)), shape=(resolution ** 3, len(vertices)))
    shape = (resolution, resolution, resolution)
    values = np.asarray(splat @ weights, dtype=np.float32).T.reshape(weights.shape[1], *shape)
    mass = np.asarray(splat.sum(axis=1)).reshape(shape)
    return values, mass


def diffused_weights(points: np.ndarray, vertices: np.ndarray, weights: np.ndarray, resolution: int = 64,
                     keep_mask: np.ndarray | None = None, keep_weights: np.ndarray | None = None,
                     volume: WeightVolume | None = None) -> np.ndarray:
    """Skinning weights of ``points [N, 3]`` from the diffused volume of ``vertices [V, 3]`` /
    ``weights [V, J]`` -> ``[N, J]`` float32, non-negative, rows summing to 1.

    ``keep_mask [N]`` bool: points that keep body-model weights instead (hands, face):
    ``keep_weights [N, J]`` if given (e.g. subdivided vertex weights ``upsample @ weights``), else
    their nearest vertex's. ``volume``: reuse a volume built by ``build_weight_volume``.
    """
    if volume is None:
        volume = build_weight_volume(vertices, weights, resolution)
    out = volume.sample(np.asarray(points, dtype=np.float32)).numpy()
    if keep_mask is not None and np.any(keep_mask):
        keep_mask = np.asarray(keep_mask, dtype=bool)
        kept = (np.asarray(keep_weights)[keep_mask] if keep_weights is not None
                else nearest_vertex_weights(np.asarray(points)[keep_mask], vertices, weights))
        out[keep_mask] = kept / kept.sum(axis=1, keepdims=True)
    return out
