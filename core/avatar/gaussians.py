"""Pure functions for posing Gaussians that live on the body surface.

Conventions: positions in metres; ``weights [N, J]`` skinning weights that sum to 1;
``transforms [J, 4, 4]`` the body model's relative joint transforms (x_posed = A_j @ [x_rest, 1]).
"""
from __future__ import annotations

import torch


def blend_transforms(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Per-point blended rigid transforms ``[N, 4, 4]`` = Σ_j w_nj A_j."""
    return torch.einsum("nj,jab->nab", weights, transforms)


def apply_transforms(transforms: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``transforms [N, 4, 4]`` to ``points [N, 3]`` -> ``[N, 3]``."""
    return torch.einsum("nab,nb->na", transforms[:, :3, :3], points) + transforms[:, :3, 3]


def rotate_vectors(transforms: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Rotate ``vectors [N, 3]`` by the linear part of ``transforms [N, 4, 4]`` and renormalise."""
    out = torch.einsum("nab,nb->na", transforms[:, :3, :3], vectors)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def mean_edge_length(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean length of the edges meeting at each vertex ``[V]`` (metres): the local Gaussian spacing.

    Body meshes are much denser on the face and hands than on the limbs, so one global initial
    scale would leave holes on the limbs or blur the face.
    """
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).long()
    lengths = (vertices[edges[:, 0]] - vertices[edges[:, 1]]).norm(dim=1)
    total = vertices.new_zeros(len(vertices)).index_add(0, edges[:, 0], lengths).index_add(0, edges[:, 1], lengths)
    count = vertices.new_zeros(len(vertices)).index_add(0, edges[:, 0], torch.ones_like(lengths))
    count = count.index_add(0, edges[:, 1], torch.ones_like(lengths))
    return total / count.clamp_min(1)
